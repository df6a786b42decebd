"""``engine.boxes``' NMS and IoU give torchvision's answers, without importing the
torchvision package (its import costs every worker 1.5 s: see the module docstring)."""

from __future__ import annotations

import subprocess
import sys

import torch
import torchvision.ops

from engine.boxes import batched_nms, box_iou, nms


def random_boxes(generator, n: int):
    corner = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 100 - 20
    sides = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 50 + 0.1
    return torch.cat([corner, corner + sides], dim=1)


def test_nms_batched_nms_and_iou_equal_torchvision():
    generator = torch.Generator().manual_seed(0)
    suppressed = 0
    for _ in range(200):
        n = int(torch.randint(0, 120, (1,), generator=generator))
        boxes = random_boxes(generator, n)
        scores = torch.rand(n, generator=generator, dtype=torch.float64)
        groups = torch.randint(0, 5, (n,), generator=generator)
        assert torch.equal(nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))
        ours = batched_nms(boxes, scores, groups, 0.6)
        assert torch.equal(ours, torchvision.ops.batched_nms(boxes, scores, groups, 0.6))
        suppressed += len(boxes) - len(ours)
        assert torch.allclose(box_iou(boxes, boxes[:7]), torchvision.ops.box_iou(boxes, boxes[:7]))  # fmt: skip
    assert suppressed > 50  # the comparison is not of cases where NMS keeps everything


def test_the_kernels_load_without_importing_torchvision():
    code = (
        "import sys, torch\n"
        "from engine.boxes import batched_nms\n"
        "boxes = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])\n"
        "kept = batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 0]), 0.5)\n"
        "print(kept.tolist(), 'torchvision' in sys.modules, 'torch._dynamo' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split("]")[0] == "[0, 2"
    assert result.stdout.strip().endswith("False False"), result.stdout
