"""The fine-tuning presets (issue #20 item 3) and ``--preset`` with ``--init`` (``train/starts.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from glandseg_core.config import PRESETS, RunConfig, load_config, save_config
from glandseg_core.models.unet import UNetParams
from glandseg_core.train.starts import init_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {"finetune-unet": "unet", "finetune-maskrcnn": "maskrcnn"}


@pytest.mark.parametrize("preset", sorted(SHIPPED))
def test_finetune_presets_are_short_low_rate_and_validate_every_epoch(preset: str) -> None:
    cfg = PRESETS[preset]
    base = PRESETS[
        {"finetune-unet": "glandseg-unet", "finetune-maskrcnn": "glandseg-maskrcnn-cpu"}[preset]
    ]
    assert cfg.train_epochs * cfg.train_steps_per_epoch <= 120  # a few epochs of a few dozen steps
    assert cfg.train_lr < base.train_lr and cfg.train_warmup_steps <= 10
    assert cfg.train_val_every == 1 and cfg.train_augment == "strong"
    assert cfg.pretrained == "none" and cfg.train_init == ""  # the start comes from --init / train_init


@pytest.mark.parametrize("preset", sorted(SHIPPED))
def test_finetune_presets_carry_the_shipped_models_sections(preset: str) -> None:
    """A fine-tune loads the shipped weights, so the preset's section is the shipped model's."""
    shipped = ROOT / "trained_models" / SHIPPED[preset] / "config.json"
    if not shipped.is_file():
        pytest.skip("no shipped model")
    own = load_config(shipped)
    assert (PRESETS[preset].model, PRESETS[preset].params) == (own.model, own.params)
    assert PRESETS[preset].data_mpp == own.data_mpp


def _model_folder(path: Path, cfg: RunConfig) -> Path:
    path.mkdir()
    save_config(cfg, path / "config.json")
    (path / "weights.pt").write_bytes(b"")  # only its presence is checked here
    return path


def test_a_preset_with_init_keeps_the_folders_section_and_the_presets_training(tmp_path: Path) -> None:
    mine = RunConfig(
        name="mine", model="unet", data_mpp=0.5, params=UNetParams(base=8, depth=3), train_lr=1e-2
    )
    folder = _model_folder(tmp_path / "mine", mine)
    preset = PRESETS["finetune-unet"]
    cfg = init_config(folder, preset, own_section=True)
    assert cfg.params == mine.params and cfg.data_mpp == 0.5
    assert (cfg.name, cfg.train_lr, cfg.train_epochs) == (
        "finetune-unet",
        preset.train_lr,
        preset.train_epochs,
    )
    assert cfg.train_init == str(folder / "weights.pt")
    # a --config (own_section off) is trained as given
    assert init_config(folder, preset).params == preset.params


def test_a_preset_of_another_kind_keeps_its_own_section(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "m", RunConfig(name="m", model="unet", params=UNetParams(base=8)))
    cfg = init_config(folder, PRESETS["finetune-maskrcnn"], own_section=True)
    assert cfg.params == PRESETS["finetune-maskrcnn"].params


def test_init_without_a_preset_still_trains_the_folders_own_config(tmp_path: Path) -> None:
    mine = RunConfig(name="mine", model="unet", params=UNetParams(base=8), train_lr=1e-2)
    cfg = init_config(_model_folder(tmp_path / "mine", mine), own_section=True)
    assert (cfg.name, cfg.params, cfg.train_lr) == ("mine-finetuned", mine.params, 1e-2)
