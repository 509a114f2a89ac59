"""A slide's outputs, written gland by gland while the slide is segmented, all renamed into place at the end.

Per slide ``<name>``: ``<name>.geojson`` (QuPath FeatureCollection, level-0 pixel coordinates), ``<name>_glands.csv``
(one row per gland), ``<name>_summary.json`` and ``<name>_summary.csv`` (one row). Every file is first written
under a hidden temporary name in the output folder; :meth:`SlideWriter.commit` renames them all, and
:meth:`SlideWriter.discard` (on an error or Ctrl-C) deletes them, so a run leaves all outputs or none.

Measurements: each gland's mask is measured at the model's pixel size (where it was segmented) and converted
to micrometres with that pixel size; areas are pixel counts (a polygon traced along pixel edges has exactly that
area), perimeters ``skimage.measure.regionprops``' (a smoothed pixel-edge length).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from skimage.measure import regionprops

from ..outputs.export import GLAND_CLASS_COLOUR, to_geojson
from ..segmenters import Instances

GLAND_CSV_COLUMNS = [
    *("id", "centroid_x", "centroid_y", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"),
    *("area_um2", "perimeter_um", "circularity", "eccentricity", "solidity", "score"),
]
SUMMARY_COLUMNS = [
    *("slide", "model", "glands", "gland_area_mm2", "tissue_area_mm2", "glands_per_mm2", "slide_mpp"),
    *("model_mpp", "level", "resample", "width", "height", "windows", "windows_skipped", "seconds"),
]
OBJECT_TYPE = "detection"  # QuPath: thousands of glands per slide draw and measure fast as detections


def output_paths(out_dir: Path, name: str) -> dict[str, Path]:
    """The four output files of slide ``name``."""
    return {
        "geojson": out_dir / f"{name}.geojson",
        "glands": out_dir / f"{name}_glands.csv",
        "summary_json": out_dir / f"{name}_summary.json",
        "summary_csv": out_dir / f"{name}_summary.csv",
    }


class SlideWriter:
    """Streams glands into temporary GeoJSON and CSV files (see the module docstring).

    Args:
        out_dir: the output folder (created). name: the slide's output name.
        scale: (x, y) level-0 pixels per model pixel. mpp: (x, y) micrometres per model pixel.
    """

    def __init__(
        self, out_dir: Path, name: str, scale: tuple[float, float], mpp: tuple[float, float]
    ) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.paths = output_paths(out_dir, name)
        self.scale, self.mpp = scale, mpp
        self.count, self.area_um2 = 0, 0.0
        self._tmp: dict[str, Path] = {}
        self._files: dict[str, TextIO] = {}
        for key in ("geojson", "glands"):
            self._files[key] = self._open(key)
        self._files["geojson"].write('{"type": "FeatureCollection", "features": [\n')
        self._csv = csv.writer(self._files["glands"], lineterminator="\n")
        self._csv.writerow(GLAND_CSV_COLUMNS)

    def _open(self, key: str) -> TextIO:
        path = self.paths[key]
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self._tmp[key] = Path(tmp)
        return os.fdopen(fd, "w", encoding="utf-8", newline="")

    def add(self, glands: Instances) -> None:
        """Write final glands (model-space boxes and masks): one feature and one CSV row each."""
        for score, box, mask in zip(glands.scores, glands.boxes, glands.masks, strict=True):
            self.count += 1
            feature, row = self._describe(self.count, float(score), box, mask)
            self._files["geojson"].write(("" if self.count == 1 else ",\n") + json.dumps(feature))
            self._csv.writerow(row)

    def _describe(self, gid: int, score: float, box: np.ndarray, mask: np.ndarray) -> tuple[dict, list]:
        """The GeoJSON feature and the CSV row of one gland."""
        (sx, sy), (ux, uy) = self.scale, self.mpp
        y0, x0 = int(box[0]), int(box[1])
        geometry = to_geojson(mask.astype(np.uint8))["features"][0]["geometry"]
        geometry["coordinates"] = _map_coords(geometry["coordinates"], x0, y0, sx, sy)
        props = regionprops(mask.astype(np.uint8))[0]
        area_um2 = int(props.area) * ux * uy
        perimeter_um = float(props.perimeter) * math.sqrt(ux * uy)
        circularity = 4 * math.pi * area_um2 / perimeter_um**2 if perimeter_um > 0 else 0.0
        cy, cx = props.centroid
        self.area_um2 += area_um2
        measurements = {
            "Area µm^2": round(area_um2, 2),
            "Perimeter µm": round(perimeter_um, 2),
            "Circularity": round(min(1.0, circularity), 4),
            "Eccentricity": round(float(props.eccentricity), 4),
            "Solidity": round(float(props.solidity), 4),
            "Score": round(score, 4),
        }
        feature = {
            "type": "Feature",
            "id": f"gland-{gid}",
            "geometry": geometry,
            "properties": {
                "objectType": OBJECT_TYPE,
                "name": f"gland {gid}",
                "classification": {"name": "Gland", "color": list(GLAND_CLASS_COLOUR)},
                "measurements": measurements,
            },
        }
        bx = [round(v, 2) for v in (x0 * sx, y0 * sy, int(box[3]) * sx, int(box[2]) * sy)]
        row = [
            gid,
            round((x0 + cx + 0.5) * sx, 2),
            round((y0 + cy + 0.5) * sy, 2),
            *bx,
            *measurements.values(),
        ]
        return feature, row

    def commit(self, summary: dict[str, Any]) -> None:
        """Close the streams, write the summary, and rename every temporary file into place."""
        self._files["geojson"].write("\n]}\n")
        for key in ("summary_json", "summary_csv"):
            self._files[key] = self._open(key)
        json.dump(summary, self._files["summary_json"], indent=2)
        self._files["summary_json"].write("\n")
        w = csv.writer(self._files["summary_csv"], lineterminator="\n")
        w.writerow(SUMMARY_COLUMNS)
        w.writerow([summary[c] for c in SUMMARY_COLUMNS])
        for fh in self._files.values():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        for key, tmp in self._tmp.items():
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.paths[key])
        self._tmp.clear()

    def discard(self) -> None:
        """Close and delete every temporary file (nothing of this slide is left)."""
        for fh in self._files.values():
            with contextlib.suppress(OSError):
                fh.close()
        for tmp in self._tmp.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._tmp.clear()


def _map_coords(coords: list, x0: int, y0: int, sx: float, sy: float) -> list:
    """Pixel-corner coordinates of a box-cropped mask -> level-0 pixels (nested rings, any depth)."""
    if coords and isinstance(coords[0], (int, float)):
        return [round((coords[0] + x0) * sx, 3), round((coords[1] + y0) * sy, 3)]
    return [_map_coords(c, x0, y0, sx, sy) for c in coords]
