"""The built-in pretrained student (annotators/student_models.py): its backbone holds
torchvision's ImageNet MobileNetV2 tensors (parity with the source runtime), those
weights classify a real photo sensibly, and it trains and predicts through ultralytics."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotators.student_models import (
    MOBILENET_SHA256,
    MOBILENET_STUDENT,
    install_backbone_weights,
    student_model_path,
)
from engine.offline import prepare_ultralytics
from engine.records import file_sha256
from pipelines.config import ConfigError, load_config
from tests.fixtures.common import DEMO_IMAGES

VEHICLES = {"minibus", "police van", "school bus", "trolleybus", "passenger car", "moving van"}


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    prepare_ultralytics()
    from ultralytics import YOLO

    path = student_model_path(MOBILENET_STUDENT, tmp_path_factory.mktemp("student"))
    return YOLO(path, task="detect")


def test_backbone_is_torchvisions_imagenet_mobilenet_v2(student):
    import torch
    import torchvision

    assert file_sha256(install_backbone_weights()) == MOBILENET_SHA256
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    reference = torchvision.models.mobilenet_v2(weights=weights).eval()
    backbone = student.model.model[0].m  # ultralytics' TorchVision module, unwrapped
    expected = reference.features.state_dict()
    found = backbone.state_dict()
    assert len(found) == len(expected)
    for (name, tensor), (_, reference_tensor) in zip(found.items(), expected.items(), strict=True):
        assert torch.equal(tensor, reference_tensor), name


def test_the_backbone_weights_see_a_vehicle_in_the_bus_photo():
    import torch
    import torchvision
    from PIL import Image

    install_backbone_weights()
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    model = torchvision.models.mobilenet_v2(weights=weights).eval()
    image = Image.open(DEMO_IMAGES / "bus.jpg").convert("RGB")
    with torch.inference_mode():
        top = model(weights.transforms()(image)[None]).softmax(-1).topk(2).indices[0].tolist()
    names = {weights.meta["categories"][i] for i in top}
    assert names & VEHICLES, names


def test_student_predicts_in_ultralytics_format(student):
    results = student.predict(str(DEMO_IMAGES / "bus.jpg"), imgsz=128, conf=0.0, verbose=False)
    boxes = results[0].boxes
    assert boxes.xyxy.shape[1] == 4 and len(boxes) == len(boxes.conf)


def test_the_default_config_names_the_pretrained_student(tmp_path):
    assert load_config().refine.student.model == MOBILENET_STUDENT
    with pytest.raises(ConfigError, match="refine.student.model"):
        load_config(None, [f"refine.student.model={Path(tmp_path) / 'missing.pt'}"])
