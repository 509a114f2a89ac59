"""The Annotate page's editing state: a label map per image and start, changed by one canvas action at a time
(add a drawn gland, erase, split along a cut line, merge), with an undo history.

The label map (int32[H, W]: 0=background, 1..N glands) lives in ``st.session_state``; the canvas shows it
filled, one colour per gland, under an empty drawing layer. Each action is applied as soon as the canvas sends
it (merge: when the button is pressed), then the canvas is mounted afresh (its key carries a version number).
The label-map operations are ``glandseg_dashboard.label_edits``' pure functions.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from glandseg_dashboard import annotations, label_edits

TOOLS = {
    "polygon": "Add: polygon",
    "freedraw": "Add: freehand",
    "erase": "Erase",
    "split": "Split: draw a cut",
    "merge": "Merge",
}
CANVAS_MODE = {
    "polygon": "polygon",
    "freedraw": "freedraw",
    "erase": "point",
    "split": "freedraw",
    "merge": "point",
}
HELP = {
    "polygon": "Click each vertex of a new gland; click the first vertex again to close it. It is filled.",
    "freedraw": "Trace a new gland's outline in one stroke; the enclosed area is filled and becomes the gland.",
    "erase": "Click a gland to delete it (a false detection).",
    "split": "Draw a line across a gland to cut it in two (merged glands): each side becomes its own gland.",
    "merge": "Click the glands that are one gland (a gland cut in pieces), then press Merge.",
}
HISTORY = 20


class Editor:
    """The label map being edited for one image and start (``name``), in the session state."""

    def __init__(self, name: str, start: np.ndarray | None, shape: tuple[int, int]) -> None:
        self.name = name
        if name not in st.session_state:
            first = np.zeros(shape, np.int32) if start is None else start.astype(np.int32, copy=True)
            st.session_state[name] = {"labels": first, "undo": [], "version": 0, "picked": []}
        self.state = st.session_state[name]
        self.state.setdefault("picked", [])

    @property
    def labels(self) -> np.ndarray:
        return self.state["labels"]

    @property
    def canvas_key(self) -> str:
        return f"{self.name}_canvas{self.state['version']}"

    def set(self, labels: np.ndarray) -> None:
        """Replace the label map (the previous one goes on the undo history) and clear the canvas."""
        self.state["undo"] = [*self.state["undo"], self.state["labels"]][-HISTORY:]
        self.state["labels"] = labels
        self.state["version"] += 1
        self.state["picked"] = []

    def undo(self) -> None:
        if self.state["undo"]:
            self.state["labels"] = self.state["undo"].pop()
            self.state["version"] += 1
            self.state["picked"] = []

    @property
    def picked(self) -> list[int]:
        """The glands clicked for a merge so far, in click order."""
        return list(self.state["picked"])

    def pick(self, ids: list[int]) -> None:
        """Add clicked glands to the merge selection. The selection lives here, not in the canvas: the canvas
        may be mounted afresh between two clicks (a rerun), which would forget the first one."""
        self.state["picked"] = list(dict.fromkeys([*self.state["picked"], *ids]))

    def clear_picked(self) -> None:
        self.state["picked"] = []

    def can_undo(self) -> bool:
        return bool(self.state["undo"])

    def changed(self, start: np.ndarray | None) -> bool:
        """Whether the label map differs from ``start`` (None: an empty map)."""
        labels = self.state["labels"]
        return bool(labels.any()) if start is None else not np.array_equal(labels, start)

    def reset(self, start: np.ndarray | None) -> None:
        """Back to ``start`` (None: an empty map), as one more change that Undo takes back."""
        labels = self.state["labels"]
        self.set(np.zeros_like(labels) if start is None else start.astype(np.int32, copy=True))


#: Hides streamlit-drawable-canvas's own toolbar (its undo, redo and "Reset canvas & history" act on the drawing
#: layer, which the page empties after every action, so they never touched the label map). The canvas renders in
#: an open shadow root (components v2, isolated styles) and 0.13 has no argument to hide the toolbar, so a style
#: is added to each canvas's shadow root, now and whenever the canvas is mounted afresh.
_HIDE_TOOLBAR = """<script>
(() => {
  const doc = document;
  const patch = () => {
    doc.__glandsegPatchQueued = false;
    doc.querySelectorAll("*").forEach((el) => {
      const sr = el.shadowRoot;
      if (sr && !sr.querySelector("style[data-glandseg]")) {
        const s = doc.createElement("style");
        s.dataset.glandseg = "hide-canvas-toolbar";
        s.textContent = ".dc-toolbar{display:none !important}";
        sr.appendChild(s);
      }
    });
  };
  const queue = () => {
    if (!doc.__glandsegPatchQueued) { doc.__glandsegPatchQueued = true; requestAnimationFrame(patch); }
  };
  if (!doc.__glandsegToolbarObserver) {
    doc.__glandsegToolbarObserver = new MutationObserver(queue);
    doc.__glandsegToolbarObserver.observe(doc.body, {childList: true, subtree: true});
  }
  queue();
})();
</script>"""


def hide_canvas_toolbar() -> None:
    """Hide the drawing canvas's own toolbar on this page (see ``_HIDE_TOOLBAR``); the page's Undo stays."""
    st.html(_HIDE_TOOLBAR, unsafe_allow_javascript=True)


def clicked_ids(drawing: dict | None, labels: np.ndarray, size: tuple[int, int]) -> list[int]:
    """Gland ids under the point tool's clicks, in click order."""
    centres = []
    for obj in (drawing or {}).get("objects", []) or []:
        pts = annotations.canvas_points(obj, labels.shape, size)
        if pts is not None:
            centres.append(pts.mean(0))
    return label_edits.ids_at(labels, np.asarray(centres).reshape(-1, 2))


def apply(
    tool: str, drawing: dict | None, labels: np.ndarray, size: tuple[int, int]
) -> np.ndarray | None:
    """The label map after the canvas's action with ``tool``, or None when there is nothing to apply yet."""
    objects = (drawing or {}).get("objects", []) or []
    if not objects or tool == "merge":
        return None
    if tool in ("polygon", "freedraw"):
        drawn = annotations.drawing_to_labels(drawing, labels.shape, size)
        return label_edits.add_labels(labels, drawn) if drawn.any() else None
    if tool == "erase":
        ids = clicked_ids(drawing, labels, size)
        return label_edits.erase_ids(labels, ids) if ids else None
    out = labels
    for obj in objects:  # split: every stroke is a cut
        pts = annotations.canvas_points(obj, labels.shape, size)
        if pts is not None and len(pts) >= 2:
            out = label_edits.split_along(out, pts)
    return out if not np.array_equal(out, labels) else None
