"""Model kinds as plugins (issue #19 item 1): the registry, and a toy third kind that trains, saves, loads and
predicts through the CLI without any module of glandseg knowing it (tests/toykind.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from glandseg_core.config import PRESETS, RunConfig, config_from_dict, load_config
from glandseg_core.errors import ConfigError
from glandseg_core.registry import ModelKind, get_kind, kind_names, register_kind
from tests import cliproc

REPO = Path(__file__).resolve().parents[1]
KIND_MODULES = {
    "glandseg_core/kinds/unet.py",
    "glandseg_core/kinds/maskrcnn.py",
    "glandseg_core/registry.py",
}


def test_built_in_kinds_are_registered_in_order() -> None:
    assert kind_names()[:2] == ("unet", "maskrcnn")
    assert get_kind("unet").title == "U-Net" and get_kind("maskrcnn").title == "Mask R-CNN"


def test_unknown_kind_lists_the_registered_ones() -> None:
    with pytest.raises(KeyError, match="unet"):
        get_kind("vit")
    with pytest.raises(ConfigError, match=r"model must be one of .*unet.*got 'vit'"):
        config_from_dict({"model": "vit"})


def test_a_second_kind_of_the_same_name_is_refused() -> None:
    class Impostor(ModelKind):
        name = "unet"

    with pytest.raises(ValueError, match="already registered"):
        register_kind(Impostor())


def test_every_preset_belongs_to_its_kind() -> None:
    for name, cfg in PRESETS.items():
        assert name in cfg.kind.presets() and isinstance(cfg.params, cfg.kind.params_type)


def test_no_module_outside_the_kinds_compares_a_kind_name() -> None:
    """grep: ``== "unet"``, ``cfg.model != "maskrcnn"``, ``kind in ("unet", ...)`` only in a kind's own module and
    the registry."""
    pattern = re.compile(
        r"""(==|!=|\bin)\s*\(?\s*["'](unet|maskrcnn)["']|["'](unet|maskrcnn)["']\s*(==|!=)"""
    )
    offenders = []
    for folder in ("glandseg_core", "glandseg_dashboard", "pages"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in KIND_MODULES:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_every_shipped_model_folder_loads_its_config() -> None:
    folders = sorted(p for p in (REPO / "trained_models").iterdir() if (p / "config.json").is_file())
    assert len(folders) >= 3
    for folder in folders:
        cfg = load_config(folder / "config.json")
        assert isinstance(cfg, RunConfig) and isinstance(cfg.params, cfg.kind.params_type)


@pytest.mark.slow
def test_a_toy_third_kind_trains_saves_loads_and_predicts_through_the_cli(
    tmp_path: Path, shared_fake_glas: Path
) -> None:
    """On the small GlaS-like folder (train, the 15 val images, 64×96): the kind's plumbing, not GlaS reading
    (tests/test_datasets_glas*.py), is what is tested; the prediction is of a full-size sample."""
    glas = str(shared_fake_glas)
    env = {
        **os.environ,
        "GLANDSEG_PLUGINS": "tests.toykind",
        "GLANDSEG_LOCK_DIR": str(tmp_path / "locks"),
        "PYTHONPATH": str(REPO),
        "CUDA_VISIBLE_DEVICES": "",
    }

    def cli(*args: str, plugins: bool = True) -> subprocess.CompletedProcess[str]:
        """``python -m glandseg_core *args`` in a process of its own (forked: tests/cliproc.py)."""
        run_env = env if plugins else {k: v for k, v in env.items() if k != "GLANDSEG_PLUGINS"}
        return cliproc.run(args, run_env, timeout=600)

    run, model, out = tmp_path / "run", tmp_path / "toy-model", tmp_path / "pred"
    done = cli("train", "--preset", "toy-tiny", "--data", glas, "--out", str(run), "--device", "cpu",
               "--no-bar", "--set", "toy_width=3")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "toy" and cfg["toy_width"] == 3 and "unet_base" not in cfg
    assert json.loads((run / "postprocess.json").read_text())["thresh"] in (0.4, 0.6)  # tuned on val

    done = cli("export", str(run), str(model))
    assert done.returncode == 0, done.stderr[-2000:]
    done = cli(
        "predict",
        "--model",
        str(model),
        "--out",
        str(out),
        "--no-bar",
        str(REPO / "samples" / "testA_1.png"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    from glandseg_core.imaging.io import read_label_map

    labels = read_label_map(out / "testA_1.png")
    assert labels.shape == (522, 775) and labels.dtype == np.int32

    # Without the plugin, the folder is refused in one line naming the kind.
    done = cli("predict", "--model", str(model), "--out", str(tmp_path / "p2"), "--no-bar",
               str(REPO / "samples" / "testA_1.png"), plugins=False)  # fmt: skip
    assert done.returncode != 0
    assert "toy" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
