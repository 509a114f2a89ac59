"""The Compare page's pieces: both models run under one progress area, each model's panel, and the words that
explain the scores (the GlaS 50 % matching rule, single-id annotations, merges and splits).

Label maps are int32[H, W]: 0=background, 1..N glands. ``scale`` = original / working size (see :mod:`glandseg_dashboard.pickers`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
from scipy import ndimage

from glandseg_core.engines.runners import title as engine_title
from glandseg_core.errors import ImageError, ModelError
from glandseg_core.outputs import overlays
from glandseg_core.slides.reader import SAME_MPP

from . import inference, loaders, panels, settings

GLAS_MPP = 0.62  # µm per pixel of the GlaS images (20x)
MATCHING_RULE = (
    "**How a gland is scored** (GlaS rules): a predicted gland is *found* (TP) when it covers **more than half** "
    "of the true gland it overlaps most. A prediction that swallows several true glands (a merge) finds at most "
    "one of them; a true gland cut into pieces is found only if one piece covers more than half of it. "
    "Every other prediction is *false* (FP) and every true gland not found is *missed* (FN): "
    "F1 = 2·TP / (2·TP + FP + FN)."
)


@dataclass(frozen=True)
class Result:
    role: str
    name: str  # model folder
    title: str  # e.g. "U-Net" or "U-Net (other-folder)"
    labels: np.ndarray
    seconds: float
    engine: str = ""  # what ran the network (torch, onnx, openvino); "" for a result kept from before


def model_mpp(model_dir: Path) -> float:
    """The pixel size (µm) a model folder's config says it learnt at (GlaS's 0.62 when it does not say)."""
    try:
        value = json.loads((model_dir / "config.json").read_text()).get("data_mpp", GLAS_MPP)
        return float(value) if isinstance(value, (int, float)) and value > 0 else GLAS_MPP
    except (OSError, ValueError, AttributeError):
        return GLAS_MPP


def run_models(picked, chosen: dict[str, str | None], tta: bool, mpp: float) -> tuple[dict, bool]:
    """Segment the picked image with each chosen model folder (role -> folder name), drawing a progress bar
    with a Cancel button while one runs. Returns ({role: Result}, whether the user cancelled)."""
    root, results, stopped = settings.models_root(), {}, False
    wanted = [(r, n) for r, n in chosen.items() if n is not None]
    persist = picked.source in ("sample", "glas")
    for i, (role, name) in enumerate(wanted, 1):
        folder = root / name
        own = model_mpp(folder)
        job_mpp = None if abs(mpp / own - 1) <= SAME_MPP else mpp
        title = settings.ROLES[role] if name == role else f"{settings.ROLES[role]} ({name})"
        what = f"{picked.stem} with {title} (model {i} of {len(wanted)})"
        try:
            seg = inference.segment(
                folder, picked.image, tta=tta, mpp=job_mpp, what=what, persist=persist
            )
        except inference.Cancelled:
            stopped = True
            continue
        except (ModelError, ImageError, inference.InferenceFailed, OSError) as e:
            st.error(f"{name}: {e}")
            continue
        results[role] = Result(role, name, title, seg.labels, seg.seconds, seg.engine)
    return results, stopped


def single_id(gt: np.ndarray, stem: str) -> int:
    """How many separate glands an annotation gives one single id (0 when it gives each its own). GlaS's own
    list comes from ``glandseg_core.datasets.glas.single_id_annotations`` (``loaders.single_id_images``)."""
    ids = np.unique(gt[gt > 0])
    pieces = int(ndimage.label(gt > 0)[1]) if len(ids) == 1 else 0
    return pieces if pieces > 1 or stem in loaders.single_id_images() else 0


def explain_single_id(pieces: int) -> None:
    if pieces:
        st.warning(
            f"**This annotation gives all its {pieces} separate glands one id**, so the official GlaS metrics "
            "count one true gland here: a model that outlines the glands one by one finds none of it more "
            "than half covered by a single prediction, and scores F1 0.000 whatever it draws. GlaS ships four "
            "such Test B images; the scores are kept as the challenge computes them.",
            icon=":material/info:",
        )


@st.cache_data(show_spinner=False, max_entries=32)
def drawn(
    image: np.ndarray,
    labels: np.ndarray,
    gt: np.ndarray | None,
    alpha: float,
    outlines: bool,
    ids: bool,
    by_outcome: bool,
) -> tuple[overlays.GlandOutcomes | None, np.ndarray]:
    """(outcomes against ``gt`` or None, the overlay) of a label map; kept, so a revisit draws at once."""
    klass = overlays.gland_outcomes(labels, gt) if gt is not None else None
    if by_outcome and klass is not None:
        return klass, overlays.outcome_overlay(
            image, labels, gt, klass, alpha=alpha, outlines=outlines, ids=ids
        )
    return klass, overlays.overlay(image, labels, alpha=alpha, outlines=outlines, ids=ids)


@st.cache_data(show_spinner=False, max_entries=16)
def ground_truth_view(
    image: np.ndarray, gt: np.ndarray, alpha: float, outlines: bool, ids: bool
) -> np.ndarray:
    return overlays.overlay(image, gt, alpha=alpha, outlines=outlines, ids=ids)


@st.cache_data(show_spinner=False, max_entries=16)
def _disagreement(image: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    return overlays.disagreement_map(image, a, b), float(((a > 0) == (b > 0)).mean())


def panel(
    r: Result, picked, gt, *, alpha: float, outlines: bool, ids: bool, by_outcome: bool, mpp: float
) -> None:
    """One model's column: overlay, counts, areas in µm², scores with their rule, merges, downloads."""
    image, scale = picked.image, picked.scale
    klass, view = drawn(image, r.labels, gt, alpha, outlines, ids, by_outcome)
    st.image(view, caption=f"{r.name}: {r.title} overlay", width="stretch", output_format="JPEG")
    n, n_truth = panels.count(r.labels), None if gt is None else panels.count(gt)
    m = st.columns(3)
    delta = None if n_truth is None else f"{n - n_truth:+d} vs ground truth"
    m[0].metric("Glands", n, delta=delta, delta_color="off", delta_arrow="off")
    um2 = (mpp * scale) ** 2
    area = float(np.count_nonzero(r.labels)) * um2 / n if n else 0.0
    m[1].metric(
        "Mean area µm²", f"{area:,.0f}", help=f"Mean gland area, at {mpp:g} µm per pixel (set above)"
    )
    ran = f", run by {engine_title(r.engine)}" if r.engine else ""
    m[2].metric(
        "Inference", f"{r.seconds:.2f} s", help=f"Model time on this machine{ran}; kept for reruns"
    )
    if gt is not None:
        panels.scores(r.labels, gt, scale)
        if klass is not None and klass.merges:
            merges = "; ".join(
                f"gland {p} covers true glands {', '.join(map(str, g))}" for p, g in klass.merges.items()
            )
            st.caption(f"**Merges** (one prediction over several true glands, each costs F1): {merges}.")
        if klass is not None and klass.splits:
            splits = "; ".join(f"true gland {g} cut into {len(p)}" for g, p in klass.splits.items())
            st.caption(f"**Splits**: {splits}.")
    panels.downloads(r.labels, view, f"{picked.stem}_{r.name}", key=r.role, scale=scale, mpp=mpp)


def disagreement(image: np.ndarray, a: Result, b: Result) -> None:
    view, agree = _disagreement(image, a.labels, b.labels)
    st.image(view, width="stretch", output_format="JPEG")
    colours = overlays.DISAGREEMENT_COLOURS
    panels.legend(
        {
            f"only {a.title}": colours["A only"],
            f"only {b.title}": colours["B only"],
            "both (lightened)": (244, 208, 226),
        }
    )
    st.caption(f"The models agree on {agree:.1%} of the pixels (gland vs background).")
