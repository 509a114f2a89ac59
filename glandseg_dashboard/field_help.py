"""Words for the Train page's form: a human label, a unit and a help line for every RunConfig field, and the
poster's values (``/work/shared/poster.md``; the ``poster-maskrcnn`` preset copies them verbatim).

A field missing here still gets a readable label (its name without prefix), so a new config field never shows
as a bare identifier; ``tests/test_ui_forms.py`` checks that every field has an entry. No streamlit here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from glandseg_core.config import RunConfig


class FieldWords(NamedTuple):
    label: str
    unit: str  # "" when the value has no unit
    help: str


FIELDS: dict[str, FieldWords] = {
    "name": FieldWords("Recipe name", "", "Saved in config.json and shown in the Runs table and the model card."),
    "model": FieldWords("Model", "", "unet: semantic U-Net with a contour head; maskrcnn: Mask R-CNN instances."),
    "data_mpp": FieldWords("Pixel size of the training images", "µm/px",
                           "GlaS is 20x, 0.62 µm per pixel. Other images are rescaled to this size before segmenting."),
    "unet_base": FieldWords("U-Net first-layer channels", "channels",
                            "Width of the first block; each level down doubles it. Wider learns more, trains slower."),
    "unet_depth": FieldWords("U-Net depth", "levels", "Down-sampling levels; deeper sees larger glands at once."),
    "unet_instance": FieldWords("Separate touching glands", "",
                                "Also predict gland contours and split glands along them (off: a plain mask)."),
    "unet_scale": FieldWords("U-Net image scale", "× size",
                             "Images are resized by this factor before the U-Net (0.5 = half resolution)."),
    "unet_contour_width": FieldWords("Contour band width", "px",
                                     "Width of the gland-border band the contour head learns, at the U-Net's scale."),
    "unet_encoder": FieldWords("U-Net encoder", "",
                               "none: our own blocks; resnet18/34/50: a torchvision ResNet encoder (can start from ImageNet)."),
    "maskrcnn_backbone": FieldWords("Mask R-CNN backbone", "", "The feature network under the FPN; ResNet-50 is the poster's."),
    "maskrcnn_min_size": FieldWords("Shorter image side", "px",
                                    "Images are resized so that their shorter side is this long (GlaS: 522 at full size)."),
    "maskrcnn_max_size": FieldWords("Longest image side at most", "px", "Caps the resize above (GlaS: 775 at full size)."),
    "maskrcnn_anchor_sizes": FieldWords("Anchor sizes", "px, one per FPN level",
                                        "Five box sizes the detector proposes from, smallest to largest, comma-separated."),
    "maskrcnn_detections_per_img": FieldWords("Glands kept per image at most", "glands",
                                              "The most instances the model returns for one image."),
    "maskrcnn_rpn_post_nms_top_n_train": FieldWords("Proposals kept per image in training", "boxes",
                                                    "Region proposals passed on after non-maximum suppression while training (torchvision: 2000)."),
    "maskrcnn_box_batch_size_per_image": FieldWords("Sampled boxes per image", "boxes",
                                                    "Proposals sampled per image to train the box and mask heads (torchvision: 512)."),
    "maskrcnn_box_head_dim": FieldWords("Box head width", "units",
                                        "Width of the box head's two fully connected layers (torchvision: 1024)."),
    "train_epochs": FieldWords("Epochs", "epochs", "How many epochs to train; a run can be stopped and resumed."),
    "train_batch_size": FieldWords("Batch size", "images per step", "Images (or crops) per optimizer step."),
    "train_steps_per_epoch": FieldWords("Steps per epoch", "steps", "0 = one pass over the training images."),
    "train_crop_size": FieldWords("Training crop side", "px",
                                  "U-Net: random square crops of this side at the U-Net's scale; 0 = whole images."),
    "train_optimizer": FieldWords("Optimizer", "", "sgd: SGD with momentum (the poster's); adamw: AdamW."),
    "train_lr": FieldWords("Learning rate", "", "The initial learning rate (after warm-up)."),
    "train_momentum": FieldWords("Momentum", "", "SGD only."),
    "train_weight_decay": FieldWords("Weight decay", "", "L2 penalty on the weights."),
    "train_lr_schedule": FieldWords("Learning-rate schedule", "",
                                    "step: multiply by the decay factor every N epochs (staircase); cosine: smooth decay to 1 %."),
    "train_lr_step_epochs": FieldWords("Decay every", "epochs", "step schedule only: epochs between decays."),
    "train_lr_gamma": FieldWords("Decay factor", "×", "step schedule only: the rate is multiplied by this at each decay."),
    "train_warmup_steps": FieldWords("Warm-up", "steps", "The learning rate rises linearly from 0 over these steps."),
    "train_grad_clip": FieldWords("Gradient clipping", "norm", "Gradients are scaled down to at most this norm; 0 = off."),
    "train_augment": FieldWords("Augmentation", "",
                                "none; flip: random flips; strong: flips, rotations, colour and elastic changes."),
    "train_amp": FieldWords("Mixed precision", "", "bf16 on CPUs with AMX and on CUDA: faster, same accuracy."),
    "train_seed": FieldWords("Random seed", "", "Same seed, same data: the same run."),
    "train_val_every": FieldWords("Validate every", "epochs", "Score on val every N epochs (and after the last)."),
    "train_max_images": FieldWords("Training images used at most", "images", "0 = all; a small number for a quick test."),
    "train_init": FieldWords("Start from weights file", "path",
                             "A run's best.pt/last.pt or a model's weights.pt; empty = the pretrained start below."),
    "pretrained": FieldWords("Pretrained start", "",
                             "none: random weights; coco / coco-v2: Mask R-CNN R50-FPN trained on COCO; imagenet: an "
                             "ImageNet backbone; or a path to a local file. Read from the torch cache (TORCH_HOME)."),
}  # fmt: skip

# The poster's values (poster.md) and the words they come from; poster-maskrcnn copies them verbatim.
POSTER_MASKRCNN: dict[str, tuple[Any, str]] = {
    "maskrcnn_backbone": ("resnet50", "Mask R-CNN with a ResNet-50 backbone"),
    "train_optimizer": ("sgd", "Optimizer: SGD"),
    "train_lr": (0.005, "initial learning rate 0.005"),
    "train_momentum": (0.9, "momentum 0.9"),
    "train_weight_decay": (0.0005, "weight decay 0.0005"),
    "train_lr_schedule": ("step", "Learning-rate decay: staircase"),
    "train_lr_step_epochs": (3, "×0.1 every 3 epochs"),
    "train_lr_gamma": (0.1, "×0.1 every 3 epochs"),
    "train_batch_size": (2, "Batch size 2"),
    "train_epochs": (200, "200 epochs"),
}
POSTER_UNET: dict[str, tuple[Any, str]] = {"train_epochs": (15, "U-Net (15 epochs)")}


def words(name: str) -> FieldWords:
    """The words of field ``name`` (a readable fallback for a field not listed)."""
    if name in FIELDS:
        return FIELDS[name]
    bare = name.split("_", 1)[1] if name.split("_", 1)[0] in ("unet", "maskrcnn", "train") else name
    return FieldWords(bare.replace("_", " ").capitalize(), "", f"config field {name}")


def poster_value(name: str, model: str) -> tuple[Any, str] | None:
    """(the poster's value, its words) for field ``name`` of a ``model`` run, or None when the poster gives none."""
    return (POSTER_MASKRCNN if model == "maskrcnn" else POSTER_UNET).get(name)


def is_poster_value(name: str, value: Any, model: str) -> bool:
    """Whether ``value`` is the poster's own value for field ``name``."""
    poster = poster_value(name, model)
    if poster is None:
        return False
    if isinstance(poster[0], float) and isinstance(value, (int, float)):
        return abs(float(value) - poster[0]) <= 1e-12 * max(1.0, abs(poster[0]))
    return value == poster[0]


def label(name: str, value: Any, model: str) -> str:
    """The widget label: human words, the unit in brackets, and "· poster" when the value is the poster's."""
    w = words(name)
    text = f"{w.label} ({w.unit})" if w.unit else w.label
    return f"{text} · poster" if is_poster_value(name, value, model) else text


def help_text(name: str, value: Any, model: str) -> str:
    """The widget's help line: what the field does, and what the poster used (quoted) where it says."""
    w = words(name)
    text = f"{w.help}  \nConfig field `{name}`."
    poster = poster_value(name, model)
    if poster is not None:
        mark = (
            "this is the poster's value"
            if is_poster_value(name, value, model)
            else f"the poster used {poster[0]!r}"
        )
        text += f"  \nPoster: “{poster[1]}” ({mark})."
    return text


def missing_fields() -> list[str]:
    """RunConfig fields without words here (the tests keep this empty)."""
    return [f.name for f in dataclasses.fields(RunConfig) if f.name not in FIELDS]
