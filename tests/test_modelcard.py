"""The model card's ground-truth quirk section: single-id annotations flagged, official figures untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from glandseg_core.datasets.glas import find_items, single_id_annotations
from glandseg_core.metrics import HEADLINE_FIGURES
from glandseg_core.modelcard import _pooled_f1, _single_id_section


def _make_single_id(glas: Path, name: str) -> None:
    """Rewrite ``name``'s annotation so that all its (separate) glands share id 1."""
    path = glas / f"{name}_anno.bmp"
    labels = np.asarray(Image.open(path))
    Image.fromarray((labels > 0).astype(np.uint8)).save(path)


def test_single_id_annotations_are_found(fake_glas_dir: Path) -> None:
    _make_single_id(fake_glas_dir, "testB_1")
    items = find_items(fake_glas_dir, ("train", "testA", "testB"))

    assert single_id_annotations(items) == ["testB_1"]


def test_one_gland_with_one_id_is_not_a_quirk(fake_glas_dir: Path) -> None:
    path = fake_glas_dir / "testA_1_anno.bmp"
    one = np.zeros((64, 96), np.uint8)
    one[10:30, 20:50] = 7
    Image.fromarray(one).save(path)

    assert single_id_annotations(find_items(fake_glas_dir, ("testA",))) == []


def test_section_reports_official_and_diagnostic_f1(fake_glas_dir: Path) -> None:
    _make_single_id(fake_glas_dir, "testB_1")
    per_image = pd.DataFrame(
        {
            "image": ["testA_1", "testB_1", "testB_2"],
            "split": ["testA", "testB", "testB"],
            "tp": [3, 0, 4],
            "fp": [1, 5, 0],
            "fn": [0, 1, 1],
        }
    )
    lines = _single_id_section(per_image, str(fake_glas_dir))
    text = "\n".join(lines)

    assert "testB_1" in text
    row = next(ln for ln in lines if ln.startswith("| testB"))
    # official: TP 4, FP 5, FN 2 -> 8/15; without testB_1: TP 4, FP 0, FN 1 -> 8/9
    assert row == f"| testB | 1 of 2 | {8 / 15:.3f} | {8 / 9:.3f} |"
    assert not any(ln.startswith("| testA") for ln in lines)  # nothing to drop there


def test_section_is_empty_without_quirks_or_data(fake_glas_dir: Path, tmp_path: Path) -> None:
    per_image = pd.DataFrame({"image": ["testA_1"], "split": ["testA"], "tp": [1], "fp": [0], "fn": [0]})

    assert _single_id_section(per_image, str(fake_glas_dir)) == []
    assert _single_id_section(per_image, str(tmp_path / "missing")) == []


def test_pooled_f1_of_nothing_is_one() -> None:
    assert _pooled_f1(pd.DataFrame({"tp": [], "fp": [], "fn": []})) == 1.0


def test_the_real_release_has_four_single_id_test_b_images(glas_dir: Path) -> None:
    items = find_items(glas_dir, ("testA", "testB"))

    # testB_9 is not one of them: one of its nine ids covers two pieces, an ordinary GlaS quirk
    assert single_id_annotations(items) == ["testB_3", "testB_11", "testB_18", "testB_19"]


def _summary(f1: float) -> dict:
    return {
        **dict.fromkeys(HEADLINE_FIGURES, f1),
        "n_images": 3,
        "mean_pixel_iou": 0.5,
        "mean_count_score": 0.5,
    }


def test_card_of_a_scores_only_folder(tmp_path: Path) -> None:
    """The poster's recipe ships scores without weights: the card says so, reads val from the tuning, names the
    hardware it was given, and offers no re-evaluation command."""
    import json

    from glandseg_core.config import get_preset, save_config
    from glandseg_core.modelcard import render

    model, run = tmp_path / "poster-maskrcnn", tmp_path / "run"
    model.mkdir()
    run.mkdir()
    save_config(get_preset("poster-maskrcnn"), model / "config.json")
    (model / "metrics.json").write_text(json.dumps({"testA": _summary(0.2), "testB": _summary(0.25)}))
    (run / "tuning.json").write_text(
        json.dumps(
            {
                "val_f1": 0.283,
                "val_object_dice": 0.322,
                "val_object_hausdorff": 284.9,
                "best_epoch": 6,
                "grid_size": 24,
            }
        )
    )
    (run / "log.jsonl").write_text(json.dumps({"epoch": 1, "seconds": 36.0}) + "\n")
    card = render(model, run, "the command", notes="## Notes\nwhy", hardware="one H100")
    assert "- Weights: not shipped" in card
    assert "- Hardware: one H100; wall time of the logged epochs 0.01 h over 1 logged epochs." in card
    assert (
        "`val` (from the tuning, pooled only): F1 0.283, object Dice 0.322, object Hausdorff 284.9."
        in card
    )
    assert "| testA | 3 | 0.200 |" in card and "Best epoch on `val`: 6" in card
    assert "Reproduce the figures" not in card and card.rstrip().endswith("why")


def test_card_says_how_often_the_tests_were_scored_and_why(tmp_path: Path) -> None:
    """The data paragraph counts the recorded test scorings (never "scored once" by assumption), the history
    section lists each with its reason, and refresh_card rewrites both in an existing card."""
    import json

    from glandseg_core.config import get_preset, save_config
    from glandseg_core.evaluation import record_test_scoring
    from glandseg_core.modelcard import data_and_splits, refresh_card, render

    model, run = tmp_path / "m", tmp_path / "run"
    model.mkdir()
    run.mkdir()
    save_config(get_preset("glandseg-unet"), model / "config.json")
    (model / "metrics.json").write_text(json.dumps({"testA": _summary(0.8), "testB": _summary(0.6)}))
    assert "scored once" not in data_and_splits(
        model
    ) and "recorded in `test_history.jsonl`" in data_and_splits(model)
    card = render(model, run, "cmd")
    assert "## Test-set history" not in card
    (model / "MODEL_CARD.md").write_text(card)

    record_test_scoring(
        model, {"testA": _summary(0.8), "testB": _summary(0.6)}, reason="shipped after val chose it"
    )
    record_test_scoring(model, {"testA": _summary(0.82)}, tta=True, reason="TTA comparison")
    card = render(model, run, "cmd")
    assert "Test A was scored 2 times and Test B once for this folder" in card
    assert "| testA | yes | 0.820 |" in card and "TTA comparison |" in card
    assert card.index("## Test-set history") < card.index("## Beside the poster")

    refresh_card(model)
    refresh_card(model)  # idempotent: one section, up to date
    text = (model / "MODEL_CARD.md").read_text()
    assert text.count("## Test-set history") == 1 and "Test A was scored 2 times" in text
    assert text.index("## Test-set history") < text.index("## Beside the poster")


def test_card_reports_both_conventions_when_the_components_diagnostic_is_there(tmp_path: Path) -> None:
    """#21 item 7: the card shows the official figures and, labelled, the ground-truth-split-into-components
    ones (pooled and per-image mean), naming the splits where they differ."""
    import json

    from glandseg_core.config import get_preset, save_config
    from glandseg_core.modelcard import render

    model, run = tmp_path / "m", tmp_path / "run"
    model.mkdir()
    run.mkdir()
    save_config(get_preset("poster-maskrcnn"), model / "config.json")
    official = {"testA": _summary(0.8), "testB": _summary(0.6)}
    (model / "metrics.json").write_text(json.dumps(official))
    assert "split into components" not in render(model, run, "cmd", hardware="cpu")
    comp = {"testA": _summary(0.8), "testB": {**_summary(0.6), "pooled_f1": 0.75, "mean_f1": 0.7}}
    (model / "summary_relabel_gt.json").write_text(json.dumps(comp))
    card = render(model, run, "cmd", hardware="cpu")
    section = card[card.index("split into components") :]
    assert "differ from the official ones on testB." in section
    assert "| testB | 3 | 0.750 |" in section and "| 0.700 |" in section
    assert "| testB | 3 | 0.600 |" in card[: card.index("split into components")]
