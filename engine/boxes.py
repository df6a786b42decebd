"""Box geometry shared by the SSD, the NMS and fusion filters, ``fld diff`` and ``fld eval``.

Boxes are ``(x0, y0, x1, y1)``, ``x0 < x1``, ``y0 < y1``.

NMS is torchvision's compiled kernel (``torch.ops.torchvision.nms``), loaded from the
installed torchvision's extension library *without importing the torchvision package*:
``import torchvision.ops`` imports ``torch._dynamo`` (through ``roi_align``), 1.5 s of
every worker's start on this machine for a kernel that loads in 3 ms (issue 27; ``python
-X importtime -c "import torch, torchvision.ops"``). Once torchvision is imported anyway
the kernel is already registered and is used as is. IoU is the few tensor operations
``torchvision.ops.box_iou`` does, written here for the same reason.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

Box = Sequence[float]


def iou_matrix(boxes: Sequence[Box], others: Sequence[Box]) -> np.ndarray:
    """IoU of every box in ``boxes`` (rows) with every box in ``others`` (columns), in
    float64 (``box_iou``); an empty side gives an empty matrix."""
    if not len(boxes) or not len(others):
        return np.zeros((len(boxes), len(others)))
    import torch

    return box_iou(
        torch.tensor(boxes, dtype=torch.float64), torch.tensor(others, dtype=torch.float64)
    ).numpy()


def box_iou(boxes, others):
    """IoU ``[N, M]`` of two tensors of boxes ``[N, 4]`` and ``[M, 4]`` (as
    ``torchvision.ops.box_iou``; see the module docstring for why it is not imported)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    other_area = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    top_left = boxes[:, None, :2].maximum(others[None, :, :2])
    bottom_right = boxes[:, None, 2:].minimum(others[None, :, 2:])
    sides = (bottom_right - top_left).clamp(min=0)
    inter = sides[..., 0] * sides[..., 1]
    return inter / (area[:, None] + other_area[None, :] - inter)


@functools.cache
def torchvision_kernels():
    """``torch.ops.torchvision``, its compiled kernels registered (see the module docstring)."""
    import torch

    if not _has_nms(torch):
        folder = Path(importlib.util.find_spec("torchvision").origin).parent
        libraries = sorted(folder.glob("_C*.so"), key=lambda path: "_stable" not in path.name)
        if not libraries:
            raise ImportError(f"torchvision's compiled kernels are not in {folder}")
        torch.ops.load_library(str(libraries[0]))
    return torch.ops.torchvision


def _has_nms(torch) -> bool:
    try:
        torch.ops.torchvision.nms  # noqa: B018 - looking it up is the question
    except (AttributeError, RuntimeError):
        return False
    return True


def nms(boxes, scores, iou_threshold: float):
    """Indices of the boxes NMS keeps at ``iou_threshold``, best score first
    (``torchvision.ops.nms``'s kernel)."""
    return torchvision_kernels().nms(boxes, scores, float(iou_threshold))


def batched_nms(boxes, scores, groups, iou_threshold: float):
    """NMS within each group (``groups``: an integer per box), as
    ``torchvision.ops.batched_nms``: the kept indices of all groups, best score first.
    One NMS per group, on the boxes as they are (no coordinate offsets between groups:
    their float rounding could move a pair across the threshold)."""
    import torch

    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.long, device=boxes.device)
    kept = []
    for group in torch.unique(groups):
        members = torch.nonzero(groups == group).flatten()
        kept.append(members[nms(boxes[members], scores[members], iou_threshold)])
    kept_all = torch.cat(kept)
    order = torch.sort(scores[kept_all], descending=True, stable=True).indices
    return kept_all[order]
