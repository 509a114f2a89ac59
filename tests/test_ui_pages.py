"""AppTest regression tests of the dashboard's hardening (issue #15): typed paths stay inside their roots and
nothing is replaced without a confirmation naming it (item 1), read-only mode (item 1), the Train page's data
check (item 9), and the pixel budget with downsampling on consent (item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.test_app import (
    ANNOTATE,
    COMPARE,
    REPO,
    TIMEOUT,
    env,
    metric_labels,
    own_models,
    texts,
    tiny_models,
    write_fake_run,
)

__all__ = ["env", "tiny_models"]  # fixtures, imported for the tests below
TRAIN = str(REPO / "pages" / "train.py")
APP = str(REPO / "app.py")
START = "FormSubmitter:train_form_poster-maskrcnn-Start training"


@pytest.fixture
def with_run(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A private models root (unet, maskrcnn) and a finished fake run ``tiny-run`` with a best.pt."""
    own_models(env, monkeypatch)
    write_fake_run(env["runs"] / "tiny-run", env["models"] / "unet" / "weights.pt")
    return env


def promote_button(at: AppTest):
    return next(b for b in at.button if b.label == "Promote")


@pytest.mark.parametrize("name", ["../escaped", "/tmp/glandseg-escaped", "a/b", ".."])
def test_promote_refuses_names_outside_the_models_root(with_run: dict[str, Path], name: str) -> None:
    at = AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run()
    at.text_input(key="promote_tiny-run").set_value(name).run()
    assert not at.exception
    assert "Model folder name" in texts(at, "error") and promote_button(at).disabled
    assert (
        not Path("/tmp/glandseg-escaped").exists()
        and not (with_run["models"].parent / "escaped").exists()
    )
    assert "Promoted" not in texts(at, "success")


def test_promote_names_every_file_it_would_replace(with_run: dict[str, Path]) -> None:
    """#15 item 1: a folder without weights.pt still asks before config.json and MODEL_CARD.md are replaced."""
    mine = with_run["models"] / "mine"
    mine.mkdir()
    (mine / "config.json").write_text(json.dumps({"model": "unet", "note": "mine"}))
    (mine / "MODEL_CARD.md").write_text("my card")
    at = AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run()
    at.text_input(key="promote_tiny-run").set_value("mine").run()
    box = at.checkbox(key="promote_ok_tiny-run_mine")
    assert "config.json" in box.label and "MODEL_CARD.md" in box.label and "weights.pt" not in box.label
    assert promote_button(at).disabled
    assert (mine / "MODEL_CARD.md").read_text() == "my card"
    box.check().run()
    promote_button(at).click().run()
    assert not at.exception and "Promoted tiny-run" in texts(at, "success")
    assert (mine / "weights.pt").is_file() and (mine / "MODEL_CARD.md").read_text() != "my card"


def test_run_names_and_data_folders_are_checked_before_anything_is_written(
    env: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#15 items 1 and 9: a run name leading out of the runs root, a data folder outside the data root, and a
    folder that is not GlaS (``/etc``) are refused with the reason; no run folder is left behind."""
    data_root = tmp_path / "data"
    (data_root / "etc").mkdir(parents=True)
    (data_root / "etc" / "passwd").write_text("root:x:0:0\n")
    monkeypatch.setenv("GLANDSEG_DATA_ROOT", str(data_root))
    at = AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run()
    at.text_input(key="run_poster-maskrcnn").set_value("../../escaped").run()
    assert "Run folder name '../../escaped'" in texts(at, "error")
    at.button(key=START).click().run()
    assert "choose a valid run folder name" in texts(at, "error")
    at.text_input(key="run_poster-maskrcnn").set_value("ok-run").run()
    for folder, why in (
        ("/etc", "lies outside"),
        ("../../..", "lies outside"),
        ("etc", "no train_N images"),
    ):
        at.text_input(key="train_data").set_value(folder).run()
        at.button(key=START).click().run()
        assert why in texts(at, "error"), (folder, texts(at, "error"))
    assert not at.exception
    assert not env["runs"].exists() or not any(env["runs"].iterdir())
    assert not (tmp_path.parent / "escaped").exists()


def test_read_only_mode_hides_everything_that_writes(
    with_run: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """#15 item 1: GLANDSEG_READONLY=1 hides Train (with Promote) and Annotate's Save."""
    monkeypatch.setenv("GLANDSEG_READONLY", "1")
    train = AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run()
    assert not train.exception and "read-only" in texts(train, "info")
    assert not [
        b for b in train.button if b.label in ("Promote", "Resume", "Evaluate on Test A + Test B")
    ]
    assert not [w for w in train.text_input if w.key in ("train_data", "promote_tiny-run")]
    ann = AppTest.from_file(ANNOTATE, default_timeout=TIMEOUT).run()
    assert not ann.exception and "read-only" in texts(ann, "caption")
    assert "Save to set" not in [b.label for b in ann.button] and not [
        w for w in ann.text_input if w.label == "Annotation set"
    ]
    assert "Download" in [b.label for b in ann.get("download_button")]
    assert navigation(monkeypatch) == ["Compare", "Metrics", "Image drill-down", "Annotate"]
    monkeypatch.delenv("GLANDSEG_READONLY")
    assert "Train" in navigation(monkeypatch)


def navigation(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The titles of the pages app.py hands to ``st.navigation`` (the pages themselves are not run)."""
    import streamlit as st

    seen: list[list[str]] = []

    class Nav:
        def run(self) -> None:
            pass

    monkeypatch.setattr(
        st, "navigation", lambda pages, **kw: seen.append([p.title for p in pages]) or Nav()
    )
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not app.exception
    return seen[-1]


@pytest.mark.slow
def test_an_image_above_the_pixel_budget_waits_for_consent_then_is_downsampled(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """#15 item 4: with a budget that fits ~300,000 px, the 775×522 sample is not segmented until the user
    agrees to a downsampled copy; the caption then says so and both models run on the copy."""
    monkeypatch.setenv("GLANDSEG_MEMORY_BUDGET_MB", "1168")
    at = AppTest.from_file(COMPARE, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "more memory than this machine allows" in texts(at, "warning")
    assert "Glands" not in metric_labels(at)  # nothing was segmented
    [box] = [c for c in at.checkbox if str(c.key).startswith("downsample_ok_")]
    assert box.label.startswith("Downsample to ")
    box.check().run()
    assert not at.exception and not at.error
    assert "downsampled to" in texts(at, "caption") and metric_labels(at).count("Glands") == 2
    assert metric_labels(at).count("F1") == 2  # the ground truth follows the image
