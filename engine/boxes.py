"""Box geometry shared by the fusion filter, ``fld diff`` and ``fld eval``.

Boxes are ``(x0, y0, x1, y1)`` in pixels, ``x0 < x1``, ``y0 < y1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = Sequence[float]


def iou_matrix(boxes: Sequence[Box], others: Sequence[Box]) -> np.ndarray:
    """IoU of every box in ``boxes`` (rows) with every box in ``others`` (columns), by
    ``torchvision.ops.box_iou`` in float64; an empty side gives an empty matrix."""
    if not len(boxes) or not len(others):
        return np.zeros((len(boxes), len(others)))
    import torch
    from torchvision.ops import box_iou

    return box_iou(
        torch.tensor(boxes, dtype=torch.float64), torch.tensor(others, dtype=torch.float64)
    ).numpy()
