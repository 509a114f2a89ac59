"""A deterministic H&E stain change for the fine-tuning benchmark (``bench_finetune.py``).

The image is unmixed into haematoxylin, eosin and DAB optical densities, each stain's density is scaled and
offset, and the result is mixed back: ``glandseg_core.transforms.shift_stains``, the same function that the
training augmentation draws its random stain jitter with. A weaker haematoxylin and a stronger eosin is what a faded, over-eosinated slide or another
lab's staining protocol looks like: the nuclei turn pale and purple-pink, the stroma and the cytoplasm deep
pink, while the gland outlines stay visible to a person.

It lives here and not in ``glandseg_core/transforms.py`` because it is not an augmentation: it is one fixed
domain shift that the benchmark applies to every image of a set, the same way each time, to build a "new lab"
that the shipped models have not seen. Training still uses the package's own (random) augmentation; only
the factors here are the benchmark's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glandseg_core.transforms import shift_stains


@dataclass(frozen=True)
class StainShift:
    """Per-stain factor and offset applied to the optical densities (1.0 and 0.0 change nothing)."""

    h_scale: float = 1.0
    e_scale: float = 1.0
    d_scale: float = 1.0
    h_shift: float = 0.0
    e_shift: float = 0.0
    d_shift: float = 0.0

    def describe(self) -> str:
        """One line: the factors and offsets."""
        return (
            f"HED: haematoxylin x{self.h_scale:g} {self.h_shift:+g}, eosin x{self.e_scale:g} "
            f"{self.e_shift:+g}, DAB x{self.d_scale:g} {self.d_shift:+g}"
        )


# The benchmark's shift (chosen in benchmarks/README.md: it lowers the shipped U-Net's F1 on the 15 GlaS val
# images clearly while a person still sees every gland; benchmarks/stain_shift.jpg shows it).
NEW_LAB = StainShift(h_scale=0.5, e_scale=1.6)


def apply_shift(image: np.ndarray, shift: StainShift = NEW_LAB) -> np.ndarray:
    """The image with its stains changed: the same image gives the same pixels on every call.

    Args:
        image: uint8[H, W, 3] RGB H&E image.
        shift: factors and offsets of each stain's optical density.

    Returns:
        uint8[H, W, 3] RGB.

    Raises:
        ValueError: not an (H, W, 3) uint8 image.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    if (
        shift == StainShift()
    ):  # the round trip through HED is not exact on colours outside the stains' span
        return image.copy()
    scale = np.array([shift.h_scale, shift.e_scale, shift.d_scale])
    offset = np.array([shift.h_shift, shift.e_shift, shift.d_shift])
    rgb = shift_stains(image, scale, offset)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
