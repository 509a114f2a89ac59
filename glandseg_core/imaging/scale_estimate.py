"""Estimate an H&E image's pixel size from its content: the size of its nuclei.

Nuclei vary far less in size than glands, so the scale at which the haematoxylin stain forms blobs tells how many
micrometres one pixel spans. ``check_mpp`` compares that estimate with the pixel size a user gave and returns a
one-line warning when they differ by more than a factor (1.5 by default); the CLI and the dashboard show it
before segmenting. Measured on GlaS in docs/SCALE.md (``python -m benchmarks.bench_scale_estimate``).

How it works:
    1. Colour deconvolution (``skimage.color.rgb2hed``) gives the haematoxylin optical density ``H``.
    2. For scales ``sigma`` from 0.6 to 32 px (four per octave) the scale-normalised Laplacian of Gaussian
       ``-sigma**2 * LoG(H)`` is computed; larger scales on a 2x-reduced copy per octave (a Gaussian pyramid,
       with the reduction's own blur subtracted), so the cost stays close to one full-size filter.
    3. The 99th percentile of that response, as a function of ``sigma``, peaks at the size of the dark blobs
       that dominate the stain: the nuclei (for a disc of radius r the peak is at ``r / sqrt(2)``). The peak is
       interpolated in ``log sigma`` (a parabola through three samples).
    4. ``mpp = reference_mpp * NUCLEUS_SIGMA_PX / sigma_peak``, where ``NUCLEUS_SIGMA_PX`` is the median peak on
       the GlaS training images at their 0.62 µm/px. The peak is taken over the whole image; the same
       peak per quadrant gives ``spread``, the ratio of the largest to the smallest quadrant's estimate. Large
       images are measured on a reduced copy (or a centred crop when their nuclei are small) of bounded size.

No I/O here: images are uint8 (H, W, 3) RGB arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2hed
from skimage.transform import downscale_local_mean

GLAS_MPP = 0.62  # µm/px of the GlaS images the estimator is calibrated on
#: Median peak scale (px) on the 85 GlaS training images at 0.62 µm/px (benchmarks/bench_scale_estimate.py
#: --calibrate); 2.56 px is the peak of a disc of 7.2 px = 4.5 µm diameter.
NUCLEUS_SIGMA_PX = 2.56
SIGMAS = tuple(float(2.0**e) for e in np.arange(-0.75, 5.01, 0.25))  # 0.59 .. 32 px, four per octave
WORK_PIXELS = (
    600_000  # larger images are measured on a reduced copy or a centred crop of this many pixels
)
MIN_REDUCED_SIGMA = 2.0  # nuclei smaller than this (px) on the reduced copy: measure a full-size crop
MIN_NUCLEI = 30  # fewer blobs at the peak scale than this: unreliable
MIN_RESPONSE = 0.006  # 99th-percentile response below this (H optical density): no stain, unreliable
MAX_SPREAD = 2.5  # quadrants disagreeing by more than this factor: unreliable
DEFAULT_FACTOR = 1.5


@dataclass(frozen=True)
class MppEstimate:
    """A pixel size estimated from nuclear size.

    Attributes:
        mpp: Estimated micrometres per pixel; NaN when nothing could be measured.
        spread: Largest over smallest estimate among the tiles measured (1.0: they agree; NaN: no tile).
        n_nuclei: Blobs counted at the peak scale over the tiles used.
        reason: Why the estimate may be unreliable (too few nuclei, no stain, ...), or None when it is reliable.
    """

    mpp: float
    spread: float
    n_nuclei: int
    reason: str | None = None

    @property
    def reliable(self) -> bool:
        """True when the estimate can be trusted enough to warn on."""
        return self.reason is None


@dataclass(frozen=True)
class _Scale:
    sigma: float  # peak scale (px of the measured copy); NaN when there is none
    reason: str | None


def estimate_mpp(
    image: np.ndarray, *, reference_mpp: float = GLAS_MPP, reference_sigma: float = NUCLEUS_SIGMA_PX
) -> MppEstimate:
    """Estimate the pixel size of an H&E image from the size of its nuclei.

    Images over ``WORK_PIXELS`` are measured on a block-mean reduced copy; when their nuclei come out too small
    (or unmeasurable) there, on a centred full-resolution crop of that many pixels instead.

    Args:
        image (uint8[H, W, 3]): RGB pixels.
        reference_mpp: µm/px of the images ``reference_sigma`` was measured on (GlaS: 0.62).
        reference_sigma: Peak nuclear scale (px) on those images.

    Returns:
        The estimate, its spread over the image's quadrants, the number of nuclei it rests on, and why it may
        be unreliable.

    Raises:
        ValueError: ``image`` is not (H, W, 3).
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"estimate_mpp: expected an (H, W, 3) RGB image, got {image.shape}")
    factor = math.ceil(math.sqrt(image.shape[0] * image.shape[1] / WORK_PIXELS))
    if factor > 1:
        reduced = _measure(_haematoxylin(_block_mean(image, factor)), factor)
        if reduced.reason is None and reduced.sigma_px >= MIN_REDUCED_SIGMA * factor:
            return reduced.estimate(reference_mpp * reference_sigma)
        image = _centre_crop(image, round(math.sqrt(WORK_PIXELS)))
    return _measure(_haematoxylin(image), 1).estimate(reference_mpp * reference_sigma)


@dataclass(frozen=True)
class _Measure:
    sigma_px: float  # peak scale in pixels of the input image
    spread: float
    n_nuclei: int
    reason: str | None

    def estimate(self, um: float) -> MppEstimate:
        return MppEstimate(um / self.sigma_px, self.spread, self.n_nuclei, self.reason)


def _measure(h: np.ndarray, factor: int) -> _Measure:
    """Peak nuclear scale of the whole image (``factor``: its reduction), spread over quadrants, blob count."""
    resp = _responses(h)
    whole = _peak([s for s, _, _, _ in resp], [np.percentile(r, 99) for _, _, _, r in resp])
    if whole.reason is not None:
        return _Measure(math.nan, math.nan, 0, whole.reason)
    quads = []
    for ys, xs in _quadrants(h.shape):
        sl = [r[ys.start >> k : ys.stop >> k, xs.start >> k : xs.stop >> k] for _, _, k, r in resp]
        q = _peak([s for s, _, _, _ in resp], [np.percentile(r, 99) if r.size else 0.0 for r in sl])
        if q.reason is None:
            quads.append(q.sigma)
    spread = max(quads) / min(quads) if quads else math.nan
    i = int(np.argmin([abs(math.log(s / whole.sigma)) for s, _, _, _ in resp]))
    _, s_level, _, r = resp[i]
    n = _count_blobs(r, s_level, 0.5 * float(np.percentile(r, 99)))
    reason = None
    if n < MIN_NUCLEI:
        reason = f"too few nuclei ({n} < {MIN_NUCLEI})"
    elif not spread <= MAX_SPREAD:
        reason = f"parts of the image disagree ({spread:.1f}x)"
    return _Measure(whole.sigma * factor, spread, n, reason)


def check_mpp(
    image: np.ndarray,
    given_mpp: float,
    *,
    factor: float = DEFAULT_FACTOR,
    estimate: MppEstimate | None = None,
) -> str | None:
    """A one-line warning when the given pixel size and the one estimated from nuclear size disagree.

    Args:
        image (uint8[H, W, 3]): RGB pixels.
        given_mpp: The µm/px the user gave (or a file recorded, or the default).
        factor: Warn when one is more than this many times the other.
        estimate: A ready estimate of ``image`` (saves measuring it again).

    Returns:
        The warning, or None when they agree or the estimate is unreliable.
    """
    est = estimate_mpp(image) if estimate is None else estimate
    if not est.reliable or not given_mpp > 0:
        return None
    ratio = est.mpp / given_mpp
    if max(ratio, 1.0 / ratio) <= factor:
        return None
    off = max(ratio, 1.0 / ratio)
    finer = "finer" if ratio < 1 else "coarser"
    return (
        f"pixel size {given_mpp:g} µm/px looks wrong: the nuclei ({est.n_nuclei}) suggest about "
        f"{est.mpp:.2f} µm/px, {off:.1f}x {finer}; at the wrong pixel size glands are split or merged"
    )


def _haematoxylin(image: np.ndarray) -> np.ndarray:
    """Haematoxylin optical density (float32[H, W]) by colour deconvolution."""
    return rgb2hed(image)[..., 0].astype(np.float32)


def _block_mean(image: np.ndarray, f: int) -> np.ndarray:
    """``image`` reduced ``f`` times by averaging f x f blocks (uint8[H // f, W // f, 3])."""
    h, w = image.shape[0] // f, image.shape[1] // f
    blocks = image[: h * f, : w * f].reshape(h, f, w, f, 3)
    return blocks.mean(axis=(1, 3), dtype=np.float32).round().astype(np.uint8)


def _centre_crop(image: np.ndarray, side: int) -> np.ndarray:
    """The centred crop of at most ``side`` x ``side`` pixels."""
    y0, x0 = max(0, (image.shape[0] - side) // 2), max(0, (image.shape[1] - side) // 2)
    return image[y0 : y0 + side, x0 : x0 + side]


def _quadrants(shape: tuple[int, ...]) -> list[tuple[slice, slice]]:
    """The four quadrants of an image (two halves, or the whole, along a side under 128 px)."""
    cuts = [[slice(0, n)] if n < 128 else [slice(0, n // 2), slice(n // 2, n)] for n in shape[:2]]
    return [(ys, xs) for ys in cuts[0] for xs in cuts[1]]


def _responses(h: np.ndarray) -> list[tuple[float, float, int, np.ndarray]]:
    """``(sigma, its size on the reduced copy, octave k, -sigma**2 LoG(H) on the 2**k reduced copy)``.

    Scales from SIGMAS up to a sixth of the short side; octave k covers sigma in [2**(k+1), 2**(k+2)) so the
    reduced copies stay oversampled (their peaks are not lost between samples).
    """
    out = []
    level, k = h, 0
    for sigma in SIGMAS:
        if sigma * 6 > min(h.shape):
            break
        while sigma >= 2.0 ** (k + 2) and min(level.shape) >= 32:
            even = level[: level.shape[0] // 2 * 2, : level.shape[1] // 2 * 2]
            level, k = downscale_local_mean(even, (2, 2)), k + 1
        # the 2**k box reduction already blurred by a variance of (4**k - 1) / 12 full-size pixels
        s = math.sqrt(max(sigma**2 - (4**k - 1) / 12.0, 0.25)) / 2**k
        out.append((sigma, s, k, -ndi.gaussian_laplace(level, s) * s * s))
    return out


def _peak(sigmas: list[float], p99: list[float]) -> _Scale:
    """The scale where the 99th-percentile response peaks, interpolated in log sigma (a parabola).

    The first local maximum inside the range counts: the smallest scales respond to pixel noise and JPEG
    blocks, which can top the curve at its first sample without being a blob size, and crowded nuclei form
    dark areas that can make a second, higher peak at several times the nuclear scale.
    """
    if len(p99) < 3:
        return _Scale(math.nan, "image too small")
    inner = [j for j in range(1, len(p99) - 1) if p99[j - 1] < p99[j] >= p99[j + 1]]  # local maxima
    if max(p99) < MIN_RESPONSE:
        return _Scale(math.nan, "no haematoxylin stain")
    if not inner:  # a curve that only falls (pixel noise) or only rises
        return _Scale(math.nan, "nuclear size outside the measurable range")
    i = inner[0]
    y0, y1, y2 = np.log(p99[i - 1 : i + 2])
    d = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) if y0 - 2 * y1 + y2 < 0 else 0.0
    step = math.log(sigmas[i + 1] / sigmas[i])
    return _Scale(sigmas[i] * math.exp(d * step), None)


def _count_blobs(resp: np.ndarray, sigma: float, floor: float) -> int:
    """Local maxima above ``floor`` of a response map (``sigma`` in its own pixels), about a radius apart."""
    size = max(3, round(2 * sigma) | 1)
    peaks = (resp == ndi.maximum_filter(resp, size=size)) & (resp >= floor)
    return int(peaks.sum())
