"""Which parts of a network an engine runs, and how their calls map to flat tensors.

* A U-Net (any number of output channels): the whole network, input float32[1, 3, H, W] with H and W dynamic.
* A torchvision Mask R-CNN: the dense, shape-regular parts (``model.backbone``: body + FPN, the RPN's
  convolutional head, the box head, the mask head and the mask predictor), each with dynamic sizes; anchors,
  proposal decoding, NMS, RoI pooling (split in two halves at once: :class:`SplitRoIAlign`), the box
  predictor and the post-processing stay in torchvision, whose public module structure is kept
  (``model.backbone`` still returns the OrderedDict of FPN levels). Exporting the whole detector would trace
  data-dependent control flow (NMS, per-image loops), which both engines handle poorly.

Each :class:`Part` replaces its target module's ``forward`` on the instance (the class, the weights and the
state dict are untouched; :func:`restore` puts the original back).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN

from .runners import Graph, Runner

EXAMPLE_HW = (64, 96)  # traced input size (any size works at run time: H and W are dynamic)
N_EXAMPLE = 3  # traced number of boxes for the heads (dynamic too)


@dataclass(frozen=True)
class Part:
    """One module the engine runs in place of torch.

    Attributes:
        target: the module whose ``forward`` is replaced. graph: what is exported.
        flatten: the target's call arguments -> the graph's inputs.
        unflatten: the graph's outputs -> what the target returns.
    """

    target: nn.Module
    graph: Graph
    flatten: Callable[..., list[torch.Tensor]]
    unflatten: Callable[[list[torch.Tensor]], Any]


class EngineForward:
    """A target's ``forward`` run by an engine; empty inputs (no boxes) go to the original forward."""

    def __init__(self, part: Part, runner: Runner, engine: str) -> None:
        self.part, self.runner, self.engine = part, runner, engine
        self.original = type(part.target).forward.__get__(part.target)

    def __call__(self, *args: Any) -> Any:
        flat = self.part.flatten(*args)
        if any(t.numel() == 0 for t in flat):
            return self.original(*args)
        arrays = [t.detach().to("cpu", torch.float32).contiguous().numpy() for t in flat]
        return self.part.unflatten([torch.from_numpy(a) for a in self.runner(arrays)])


def install(part: Part, runner: Runner, engine: str) -> None:
    """Make ``part.target`` run through ``runner``."""
    part.target.forward = EngineForward(part, runner, engine)


def restore(module: nn.Module) -> None:
    """Put back the original ``forward`` of every submodule an engine runs (or whose RoIs are split)."""
    for m in module.modules():
        if isinstance(m.__dict__.get("forward"), (EngineForward, SplitRoIAlign)):
            del m.forward


class SplitRoIAlign:
    """A ``MultiScaleRoIAlign``'s forward with one image's boxes pooled in two halves at once: the second
    half in a helper thread (torchvision's CPU RoIAlign runs on one core; each box is pooled on its own, so
    the halves put together are the whole's result, bit for bit). Fewer than :attr:`MIN_SPLIT` boxes, or a
    batch of several images, go to the original forward."""

    MIN_SPLIT = 64
    _helper = ThreadPoolExecutor(1, thread_name_prefix="glandseg-roialign")

    def __init__(self, pool: nn.Module) -> None:
        self.original = type(pool).forward.__get__(pool)
        self.pool = pool

    def __call__(self, x: dict, boxes: list[torch.Tensor], image_shapes: list) -> torch.Tensor:
        n = len(boxes[0]) if len(boxes) == 1 else 0
        if n < self.MIN_SPLIT or cast(Any, self.pool).scales is None:  # the first call sets the scales
            return self.original(x, boxes, image_shapes)
        half = n // 2
        second = self._helper.submit(self.original, x, [boxes[0][half:]], image_shapes)
        return torch.cat([self.original(x, [boxes[0][:half]], image_shapes), second.result()])


def split_roi_pools(model: MaskRCNN) -> None:
    """Pool the box and mask RoIs of ``model`` in two halves at once (:class:`SplitRoIAlign`)."""
    roi = cast(Any, model.roi_heads)
    for pool in (roi.box_roi_pool, roi.mask_roi_pool):
        if pool is not None:
            pool.forward = SplitRoIAlign(pool)


class _Tupled(nn.Module):
    """A module whose output (a tensor, an OrderedDict, or lists of tensors) becomes a flat tuple."""

    def __init__(self, inner: nn.Module, call: Callable[..., tuple[torch.Tensor, ...]]) -> None:
        super().__init__()
        self.inner, self._call = inner, call
        self.training = False  # the wrapper only (``inner`` keeps its own mode: eval, for an export)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._call(self.inner, *xs)


def dense_parts(model: nn.Module) -> list[Part]:
    """The whole network as one part: float32[1, 3, H, W] -> float32[1, K, H, W] (K channels, any K)."""
    multiple = int(getattr(model, "multiple", 32))
    h, w = (max(multiple, (n // multiple) * multiple) for n in EXAMPLE_HW)
    graph = Graph("network", _Tupled(model, lambda m, x: (m(x),)), (torch.rand(1, 3, h, w),), ((2, 3),))
    return [Part(model, graph, lambda x: [x], lambda outs: outs[0])]


def _backbone_part(model: MaskRCNN) -> tuple[Part, list[torch.Tensor]]:
    bb = cast(nn.Module, model.backbone)

    def features(b: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        body, fpn = cast(nn.Module, b.body), cast(nn.Module, b.fpn)  # BackboneWithFPN's parts
        return tuple(fpn(body(x)).values())

    x = torch.rand(1, 3, *EXAMPLE_HW)
    with torch.no_grad():
        feats = cast(dict, bb(x))
    names = list(feats)
    graph = Graph("backbone", _Tupled(bb, features), (x,), ((2, 3),), arena=False)
    part = Part(bb, graph, lambda x: [x], lambda outs: OrderedDict(zip(names, outs, strict=True)))
    return part, [f.float() for f in feats.values()]


def _rpn_head_part(model: MaskRCNN, feats: list[torch.Tensor]) -> Part:
    head, n = cast(nn.Module, model.rpn.head), len(feats)

    def both(m: nn.Module, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, deltas = m(list(xs))
        return (*logits, *deltas)

    graph = Graph("rpn_head", _Tupled(head, both), tuple(feats), ((2, 3),) * n, arena=False)
    return Part(head, graph, lambda xs: list(xs), lambda outs: (outs[:n], outs[n:]))


def _head_part(name: str, head: nn.Module, shape: tuple[int, ...]) -> Part:
    example = (torch.rand(N_EXAMPLE, *shape),)
    graph = Graph(name, _Tupled(head, lambda m, x: (m(x),)), example, ((0,),), arena=False)
    return Part(head, graph, lambda x: [x], lambda outs: outs[0])


def maskrcnn_parts(model: MaskRCNN) -> list[Part]:
    """The backbone, the RPN head, the box head, the mask head and its predictor of a torchvision Mask R-CNN
    (the box predictor's two small linear layers stay in torch)."""
    backbone, feats = _backbone_part(model)
    channels = int(cast(Any, model.backbone).out_channels)
    roi = cast(Any, model.roi_heads)
    box_side = int(roi.box_roi_pool.output_size[0])
    parts = [backbone, _rpn_head_part(model, feats)]
    parts.append(_head_part("box_head", roi.box_head, (channels, box_side, box_side)))
    if roi.mask_head is not None:
        mask_side = int(roi.mask_roi_pool.output_size[0])
        parts.append(_head_part("mask_head", roi.mask_head, (channels, mask_side, mask_side)))
        with torch.no_grad():  # what the mask head gives its predictor
            features = roi.mask_head(torch.rand(1, channels, mask_side, mask_side)).shape[1:]
        parts.append(_head_part("mask_predictor", roi.mask_predictor, tuple(features)))
    return parts
