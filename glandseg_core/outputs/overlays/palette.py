"""The colours of every picture and plot, chosen to stay legible on H&E and for colour-blind readers.

Haematoxylin (nuclei, purple-blue), eosin (cytoplasm and stroma, pink) and white lumen cover an H&E image, so
no gland, outcome or model colour is red, pink, magenta or purple. Every colour here is checked by
:func:`check`: its CIEDE2000 difference (``skimage.color.deltaE_ciede2000`` on CIELAB) to the typical stain
colours in ``STAINS``, and the difference between every two colours of a set, both as seen with normal colour
vision and as simulated for deuteranopia and protanopia (Machado, Oliveira and Fernandes 2009, severity 1,
applied in linear RGB). ``tests/test_overlays.py`` holds the thresholds; ``docs/PALETTE.md`` the figures
(``python -c "from glandseg_core.outputs.overlays import palette; print(palette.report())"`` prints them).
"""

from __future__ import annotations

import itertools

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab

RGB = tuple[int, int, int]

# Three roles, three disjoint sets (no shared RGB; ``tests/test_overlays.py`` holds the smallest ΔE00 between
# sets): a colour means one thing. Outcomes are saturated and bright; gland identity colours are muted earth
# and teal tones; model colours are greens. Without red, pink and purple (the stains' hues) and with every
# colour legible for deuteranopes and protanopes, 14 colours cannot all be far apart: between sets they are
# at least 17 apart with normal vision but only 6.5 to 9 as simulated for colour blindness (docs/PALETTE.md).

#: Gland identity colours (:func:`glandseg_core.outputs.overlays.identity.gland_colours` colours the glands'
#: adjacency, so neighbours differ): slate teal, dark olive, olive, khaki, mint, dark teal.
GLAND_PALETTE: tuple[RGB, ...] = (
    (60, 120, 135),
    (75, 60, 0),
    (135, 120, 0),
    (150, 150, 105),
    (45, 240, 165),
    (30, 90, 75),
)
#: Detection outcomes (see :mod:`glandseg_core.outputs.overlays.outcomes`); "FN" is a missed ground-truth gland:
#: found bluish green, merge orange, split yellow, false rust, missed azure.
OUTCOME_COLOURS: dict[str, RGB] = {
    "TP": (0, 150, 120),
    "merge": (240, 120, 30),
    "split": (240, 225, 0),
    "FP": (165, 60, 30),
    "FN": (75, 135, 255),
}
#: What each outcome colour means, for legends (same keys and order as ``OUTCOME_COLOURS``).
OUTCOME_NAMES: dict[str, str] = {
    "TP": "found (TP)",
    "merge": "merge: one prediction over several glands",
    "split": "split: one gland cut into several predictions",
    "FP": "false (FP)",
    "FN": "missed (FN)",
}
#: One colour per model across every page and plot, by model folder name (a model kind falls back here too):
#: U-Net green, Mask R-CNN dark green, the poster's recipe lime.
MODEL_COLOURS: dict[str, RGB] = {
    "unet": (0, 180, 60),
    "maskrcnn": (0, 105, 15),
    "poster-maskrcnn": (195, 255, 120),
}
#: Pixels only one of two label maps calls gland (the Compare page passes U-Net as A, Mask R-CNN as B).
DISAGREEMENT_COLOURS: dict[str, RGB] = {
    "A only": MODEL_COLOURS["unet"],
    "B only": MODEL_COLOURS["maskrcnn"],
}
OUTLINE_DARK: RGB = (20, 20, 20)  # the outer ring of every outline: separates touching glands
TRUE_OUTLINE: RGB = (255, 255, 255)  # ground-truth glands inside merges and around splits; highlight

#: Typical stain colours of GlaS H&E images (haematoxylin, eosin, white lumen and background).
STAINS: dict[str, RGB] = {
    "haematoxylin": (80, 50, 140),
    "eosin": (230, 150, 190),
    "white": (255, 255, 255),
}
#: Machado et al. 2009 simulation matrices at severity 1.0, on linear RGB.
CVD: dict[str, np.ndarray] = {
    "deuteranopia": np.array(
        [
            [0.367322, 0.860646, -0.227968],
            [0.280085, 0.672501, 0.047413],
            [-0.011820, 0.042940, 0.968881],
        ]
    ),
    "protanopia": np.array(
        [
            [0.152286, 1.052583, -0.204868],
            [0.114503, 0.786281, 0.099216],
            [-0.003882, -0.048116, 1.051998],
        ]
    ),
}
VISIONS = ("normal", *CVD)


def hex_colour(rgb: RGB) -> str:
    """``#rrggbb`` of an (r, g, b) colour, for plotly and HTML."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def simulate(rgb: RGB, vision: str = "normal") -> np.ndarray:
    """The colour as seen with ``vision`` ("normal", "deuteranopia", "protanopia"): sRGB floats in 0..1."""
    c = np.asarray(rgb, np.float64) / 255.0
    if vision == "normal":
        return c
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    out = np.clip(linear @ CVD[vision].T, 0.0, 1.0)
    return np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)


def delta_e(a: RGB, b: RGB, vision: str = "normal") -> float:
    """CIEDE2000 difference of two colours as seen with ``vision``."""
    lab_a, lab_b = (rgb2lab(simulate(c, vision).reshape(1, 1, 3))[0, 0] for c in (a, b))
    return float(deltaE_ciede2000(lab_a, lab_b))


def check(colours: dict[str, RGB]) -> dict[str, float]:
    """The smallest differences of a colour set, per vision.

    Returns:
        ``{"stain <vision>": min over colours and STAINS, "pair <vision>": min over pairs of colours}``
        (a set of one colour has no "pair" entries).
    """
    out: dict[str, float] = {}
    for vision in VISIONS:
        out[f"stain {vision}"] = min(
            delta_e(c, s, vision) for c in colours.values() for s in STAINS.values()
        )
        pairs = [delta_e(a, b, vision) for a, b in itertools.combinations(colours.values(), 2)]
        if pairs:
            out[f"pair {vision}"] = min(pairs)
    return out


def cross_check(a: dict[str, RGB], b: dict[str, RGB]) -> dict[str, float]:
    """The smallest difference between a colour of ``a`` and a colour of ``b``, per vision
    (``{"cross <vision>": ΔE00}``)."""
    return {f"cross {v}": min(delta_e(x, y, v) for x in a.values() for y in b.values()) for v in VISIONS}


def colour_sets() -> dict[str, dict[str, RGB]]:
    """The three roles by name: gland identity, outcome and model colours."""
    return {
        "gland": {f"gland {k + 1}": c for k, c in enumerate(GLAND_PALETTE)},
        "outcome": dict(OUTCOME_COLOURS),
        "model": dict(MODEL_COLOURS),
    }


def report() -> str:
    """A markdown table: each colour's difference to each stain (normal / deuteranopia / protanopia)."""
    sets = colour_sets()
    lines = [
        "| set | colour | RGB | " + " | ".join(STAINS) + " |",
        "|---|---|---|" + "---|" * len(STAINS),
    ]
    for set_name, colours in sets.items():
        for name, c in colours.items():
            cells = [" / ".join(f"{delta_e(c, s, v):.0f}" for v in VISIONS) for s in STAINS.values()]
            lines.append(f"| {set_name} | {name} | {c} | " + " | ".join(cells) + " |")
    lines.append("")
    for set_name, colours in sets.items():
        worst = ", ".join(f"{k} {v:.1f}" for k, v in check(colours).items())
        lines.append(f"- {set_name}: smallest ΔE00: {worst}")
    for a, b in itertools.combinations(sets, 2):
        worst = ", ".join(f"{k} {v:.1f}" for k, v in cross_check(sets[a], sets[b]).items())
        lines.append(f"- {a} vs {b}: smallest ΔE00: {worst}")
    return "\n".join(lines)
