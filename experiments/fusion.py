"""Fusion of the two models: the U-Net's label map, split where Mask R-CNN and the U-Net's contours agree.

An experiment, kept outside the installed package: `val` did not clearly prefer it to the U-Net alone and no
fusion model is shipped (docs/EXPERIMENTS.md, row 14). Run it from the repository root (``experiments`` is
importable there); :func:`load_fusion` loads a fusion folder.

The errors of the two shipped models are complementary: the U-Net merges touching glands, the Mask R-CNN
misses or splits them. The fusion keeps the U-Net's label map (its outlines score better) and changes it in two
ways, each needing both models to agree:

* **Split**: a U-Net gland holding two or more confident Mask R-CNN instances (score >= ``split_score``, more
  than ``split_inside`` of each inside the gland, each piece at least ``split_min_area`` pixels and
  ``piece_frac`` of the gland) is cut by a marker-controlled watershed on the U-Net's gland probability, with the
  instances as markers; the cut is kept only when the U-Net's mean contour probability along it is at least
  ``boundary`` (the U-Net saw a faint boundary there).
* **Add** (``add``): a confident Mask R-CNN instance (score >= ``add_score``) lying mostly outside every U-Net
  gland (more than ``add_outside`` of it) becomes a gland of its own.

A fusion model folder holds ``fusion.json`` (``{"unet": "../unet", "maskrcnn": "../maskrcnn", "post": {...}}``,
member paths relative to the folder; optional ``"unet_post"`` overrides the U-Net member's thresholds) and no
weights: :func:`load_fusion` loads both members with :func:`glandseg_core.segmenters.load_segmenter`. ``raw`` gives a :class:`FusionRaw` (both members' raw
outputs); ``labels`` gives an int32[H, W] label map, 0=background, 1..N glands.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage.segmentation import watershed

from glandseg_core.config import RunConfig
from glandseg_core.errors import ModelError
from glandseg_core.progress import ProgressFn
from glandseg_core.segmenters import load_segmenter
from glandseg_core.segmenters.base import Plan
from glandseg_core.segmenters.instances import Instances, _paint
from glandseg_core.segmenters.maskrcnn import MaskRCNNSegmenter
from glandseg_core.segmenters.scale import at_model_scale
from glandseg_core.segmenters.tiling import Tiling
from glandseg_core.segmenters.unet import UNetSegmenter, _sequential, probs_to_labels, remove_small
from glandseg_core.thresholds import MaskRCNNPost, UNetPost, post_from_dict

FUSION_FILE = "fusion.json"
_PAINT_MIN_AREA = 50  # pixels: Mask R-CNN instances smaller than this never split or add a gland


@dataclass(frozen=True)
class FusionPost:
    """Fusion thresholds (tuned on ``val``; areas in pixels of the input image). See the module docstring."""

    split_score: float = 0.5
    split_inside: float = 0.6
    split_min_area: int = 300
    piece_frac: float = 0.0
    boundary: float = 0.3
    add: bool = False
    add_score: float = 0.8
    add_outside: float = 0.8
    min_visible: float = 0.6  # Mask R-CNN instances are painted first, as its own segmenter paints them


def fusion_post_from_dict(d: dict[str, Any]) -> FusionPost:
    """Checked :class:`FusionPost` from JSON.

    Raises:
        ModelError: an unknown key, or a value of the wrong type or out of range (one line).
    """
    if not isinstance(d, dict):
        raise ModelError(f"fusion post-processing must be a JSON object, got {type(d).__name__}")
    defaults = {f.name: f.default for f in fields(FusionPost)}
    unknown = sorted(set(d) - set(defaults))
    if unknown:
        raise ModelError(f"unknown fusion post-processing keys: {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for k, v in d.items():
        default = defaults[k]
        if isinstance(default, bool):
            ok = isinstance(v, bool)
        elif isinstance(default, int):
            ok = (
                not isinstance(v, bool)
                and isinstance(v, (int, float))
                and v == int(v)
                and 0 <= v <= 10**9
            )
            v = int(v) if ok else v
        else:
            ok = (
                not isinstance(v, bool)
                and isinstance(v, (int, float))
                and math.isfinite(v)
                and 0 <= v <= 1
            )
        if not ok:
            raise ModelError(f"fusion post-processing field {k!r} has a bad value {v!r}")
        out[k] = v
    return FusionPost(**out)


@dataclass
class FusionRaw:
    """Both members' raw outputs for one image: U-Net probabilities float32[2, H, W] and Mask R-CNN instances."""

    prob: np.ndarray
    inst: Instances


def _cut_support(pieces: np.ndarray, contour: np.ndarray) -> float:
    """Mean contour probability on the pixels where two different pieces (ids > 0) touch; 0 when none touch."""
    a, b = pieces[:-1], pieces[1:]
    rows = (a != b) & (a > 0) & (b > 0)
    a, b = pieces[:, :-1], pieces[:, 1:]
    cols = (a != b) & (a > 0) & (b > 0)
    vals = np.concatenate([contour[:-1][rows], contour[:, :-1][cols]])
    return float(vals.mean()) if vals.size else 0.0


def _split_candidates(joint: np.ndarray, scores: np.ndarray, g: int, post: FusionPost) -> list[int]:
    """Mask R-CNN ids (rows of ``joint``) that may split U-Net gland ``g`` (a column of ``joint``)."""
    area, inside = joint.sum(axis=1), joint[:, g]
    need = max(
        post.split_min_area, post.piece_frac * inside.sum()
    )  # inside.sum(): the U-Net gland's area
    return [
        m
        for m in range(1, joint.shape[0])
        if scores[m] >= post.split_score
        and inside[m] >= need
        and inside[m] > post.split_inside * area[m]
    ]


def fuse(prob: np.ndarray, inst: Instances, unet_post: UNetPost, post: FusionPost) -> np.ndarray:
    """Fuse U-Net probabilities and Mask R-CNN instances of one image into a label map.

    Args:
        prob: float32[2, H, W] gland and contour probabilities. inst: Mask R-CNN instances of the same image.
        unet_post: the U-Net's thresholds (its label map is the base). post: the fusion thresholds.

    Returns:
        int32[H, W] label map, 0=background, 1..N glands.
    """
    fg, contour = prob[0], prob[1]
    base = probs_to_labels(prob, unet_post)
    low = min(post.split_score, post.add_score if post.add else 1.0)
    mr, painted = _paint(inst, MaskRCNNPost(low, 0.5, _PAINT_MIN_AREA, post.min_visible), fg.shape)
    if not painted.size:
        return base
    scores = np.concatenate([[0.0], inst.scores[painted]])
    joint = np.zeros((len(painted) + 1, int(base.max()) + 1), np.int64)
    np.add.at(joint, (mr.ravel(), base.ravel()), 1)
    out, nxt = base.copy(), int(base.max()) + 1
    for g in range(1, joint.shape[1]):
        cand = _split_candidates(joint, scores, g, post)
        if len(cand) < 2:
            continue
        gland = base == g
        markers = np.zeros(fg.shape, np.int32)
        for k, m in enumerate(cand):
            markers[(mr == m) & gland] = k + 1
        pieces = watershed(-fg, markers, mask=gland)
        if _cut_support(pieces, contour) < post.boundary:
            continue
        for k in range(2, len(cand) + 1):
            out[pieces == k] = nxt
            nxt += 1
    if post.add:
        area = joint.sum(axis=1)
        for m in range(1, joint.shape[0]):
            if scores[m] >= post.add_score and joint[m, 0] > post.add_outside * area[m]:
                out[(mr == m) & (out == 0)] = nxt
                nxt += 1
    return _sequential(remove_small(out, unet_post.min_area))


@dataclass
class FusionSegmenter:
    """A U-Net and a Mask R-CNN segmenter fused (see :class:`segmenters.base.Segmenter` and the module docstring).

    ``model`` holds both networks, ``cfg`` is the U-Net's (named ``fusion``), ``post`` the fusion thresholds.
    """

    unet: UNetSegmenter
    maskrcnn: MaskRCNNSegmenter
    post: FusionPost
    unet_post: UNetPost
    path: Path | None = None
    kind: str = "fusion"
    model: torch.nn.Module = field(init=False)
    cfg: RunConfig = field(init=False)
    device: torch.device = field(init=False)

    def __post_init__(self) -> None:
        self.model = torch.nn.ModuleDict({"unet": self.unet.model, "maskrcnn": self.maskrcnn.model})
        self.cfg = replace(self.unet.cfg, name="fusion")
        self.device = self.unet.device
        low = min(self.post.split_score, self.post.add_score if self.post.add else 1.0)
        if self.maskrcnn.post.score_thresh > low:  # keep the detections the fusion may use
            self.maskrcnn.post = replace(self.maskrcnn.post, score_thresh=low)
            roi = self.maskrcnn.model.roi_heads
            roi.score_thresh = min(roi.score_thresh, float(np.nextafter(np.float32(low), np.float32(0))))

    @property
    def tta(self) -> bool:
        """Whether both members average flipped and rotated views."""
        return self.unet.tta and self.maskrcnn.tta

    @tta.setter
    def tta(self, on: bool) -> None:
        self.unet.tta = self.maskrcnn.tta = on

    @property
    def tiling(self) -> Tiling:
        """The U-Net member's window settings (each member windows large images its own way)."""
        return self.unet.tiling

    def plan(self, shape: tuple[int, ...], mpp: float | None = None) -> Plan:
        """The U-Net member's plan (the Mask R-CNN member's own passes are not counted)."""
        return self.unet.plan(shape, mpp)

    def raw(self, image: np.ndarray, progress: ProgressFn | None = None) -> FusionRaw:
        """Both members' raw outputs for uint8[H, W, 3] RGB (``progress``: the U-Net member's passes)."""
        return FusionRaw(self.unet.raw(image, progress), self.maskrcnn.raw(image))

    def labels(self, raw: FusionRaw, post: FusionPost | None = None) -> np.ndarray:
        """int32[H, W] label map (0=background, 1..N glands) of :meth:`raw`'s outputs."""
        return fuse(raw.prob, raw.inst, self.unet_post, self.post if post is None else post)

    def __call__(
        self, image: np.ndarray, mpp: float | None = None, progress: ProgressFn | None = None
    ) -> np.ndarray:
        """int32[H, W] label map of uint8[H, W, 3] RGB of pixel size ``mpp`` µm (0=background, 1..N glands),
        segmented at the U-Net member's pixel size."""
        return at_model_scale(
            lambda im: self.labels(self.raw(im, progress)), image, mpp, self.unet.cfg.data_mpp
        )


@dataclass(frozen=True)
class FusionSpec:
    """What ``fusion.json`` says: the member folders (resolved), the fusion thresholds, a U-Net override."""

    unet: Path
    maskrcnn: Path
    post: FusionPost
    unet_post: UNetPost | None


def read_fusion(model_dir: Path) -> FusionSpec:
    """Read ``model_dir/fusion.json``.

    Raises:
        ModelError: an unreadable file, a missing member, a member that is a fusion folder (this one or
            another: a fusion of fusions is not one), or a bad threshold (one line naming it).
    """
    path = model_dir / FUSION_FILE
    try:
        d = json.loads(path.read_text())
        members = {k: (model_dir / d[k]).resolve() for k in ("unet", "maskrcnn")}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelError(f"{path}: not a fusion config ({type(e).__name__}: {e})") from None
    for k, p in members.items():
        if not p.is_dir():
            raise ModelError(f"{path}: the {k} member folder {p} does not exist")
        if p == model_dir.resolve() or (p / FUSION_FILE).exists():
            which = (
                "this fusion folder itself"
                if p == model_dir.resolve()
                else f"another fusion folder ({p})"
            )
            raise ModelError(
                f"{path}: the {k} member is {which}; point it at a model folder (weights.pt, config.json)"
            )
    try:
        unet_post = post_from_dict("unet", d["unet_post"]) if "unet_post" in d else None
    except ValueError as e:
        raise ModelError(f"{path}: {e}") from None
    return FusionSpec(
        members["unet"], members["maskrcnn"], fusion_post_from_dict(d.get("post", {})), unet_post
    )


def write_fusion(
    model_dir: Path, unet: str, maskrcnn: str, post: FusionPost, unet_post: UNetPost | None
) -> Path:
    """Write ``model_dir/fusion.json`` (member paths as given, relative to ``model_dir``)."""
    d: dict[str, Any] = {"kind": "fusion", "unet": unet, "maskrcnn": maskrcnn, "post": asdict(post)}
    if unet_post is not None:
        d["unet_post"] = asdict(unet_post)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / FUSION_FILE).write_text(json.dumps(d, indent=2) + "\n")
    return model_dir / FUSION_FILE


def make_fusion(
    unet: UNetSegmenter,
    maskrcnn: MaskRCNNSegmenter,
    post: FusionPost,
    unet_post: UNetPost | None = None,
    path: Path | None = None,
) -> FusionSegmenter:
    """A fusion of two loaded segmenters (``unet_post`` defaults to the U-Net member's thresholds).

    Raises:
        ModelError: when the members are not a U-Net and a Mask R-CNN.
    """
    if unet.kind != "unet" or maskrcnn.kind != "maskrcnn":
        raise ModelError(f"a fusion needs a U-Net and a Mask R-CNN, got {unet.kind} and {maskrcnn.kind}")
    return FusionSegmenter(unet, maskrcnn, post, unet.post if unet_post is None else unet_post, path)


def load_fusion(
    model_dir: str | Path, *, device: str | None = None, tta: bool = False, tiling: Tiling | None = None
) -> FusionSegmenter:
    """Load a fusion folder (``fusion.json`` naming a U-Net and a Mask R-CNN model folder).

    Args:
        model_dir: the folder. device, tta, tiling: as :func:`glandseg_core.segmenters.load_segmenter`, for both.

    Raises:
        ModelError: a missing or broken ``fusion.json``, a missing member, members of the wrong kinds.
    """
    model_dir = Path(model_dir)
    if not (model_dir / FUSION_FILE).is_file():
        raise ModelError(f"{model_dir} holds no {FUSION_FILE}")
    spec = read_fusion(model_dir)
    unet = load_segmenter(spec.unet, device=device, tta=tta, tiling=tiling)
    mrcnn = load_segmenter(spec.maskrcnn, device=device, tta=tta, tiling=tiling)
    if not isinstance(unet, UNetSegmenter) or not isinstance(mrcnn, MaskRCNNSegmenter):
        raise ModelError(f"a fusion needs a U-Net and a Mask R-CNN, got {unet.kind} and {mrcnn.kind}")
    return make_fusion(unet, mrcnn, spec.post, spec.unet_post, path=model_dir)
