"""Object detector: any ultralytics YOLO model, from a weights file (``*.pt``) or a
model YAML (``yolov8n.yaml``: built with random weights, useful for tests and as a
student to train).

Output: ``object`` regions, ``label`` the model's class name, ``score`` its confidence,
box in pixels of the input image.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, Annotator
from engine.records import Region, file_sha256
from engine.steps import WorkerContext, resolve_device
from engine.storage import is_remote, location


def ultralytics_model_yaml(name: str) -> Path | None:
    """The path of a model YAML that ultralytics ships (``yolov8n.yaml``), found without
    importing ultralytics; ultralytics maps scale letters to a base file (yolov8.yaml)."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return None
    models = Path(list(spec.submodule_search_locations)[0]) / "cfg" / "models"
    stem = Path(name).stem
    candidates = {name, f"{stem}.yaml", f"{stem[:-1]}.yaml" if stem[-1:] in "nslmx" else name}
    for found in models.rglob("*.yaml"):
        if found.name in candidates:
            return found
    return None


def cached_copy(uri: str) -> str:
    """A local copy of a stored file, downloaded once per machine (the cache is keyed by the
    URI and the object's size and modification time)."""
    import hashlib
    import os

    from engine.offline import CACHE_DIR

    place = location(uri, "weights")
    info = place.info()
    key = hashlib.sha256(f"{uri}\t{info.size}\t{info.mtime_ns}".encode()).hexdigest()[:16]
    target = CACHE_DIR / "store-copies" / f"{key}-{place.name}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # workers race
        temporary.write_bytes(place.read_bytes())
        os.replace(temporary, target)
    return str(target)


@dataclass(config=STRICT)
class YoloDetector(Annotator):
    """Ultralytics YOLO.

    Args:
        weights: a ``.pt`` weights file (a local path, or a store URI such as
            ``s3://bucket/corpus/models/iteration=1/student.pt``, which each worker
            downloads once into its cache), or a model YAML (a path, or a name ultralytics
            ships such as ``yolov8n.yaml``). Must exist when the config is read.
        sha256: if set, the weights file's SHA-256 must be this before it is loaded
            (ultralytics unpickles it); the refinement loop sets it for its students.
        min_score: detections under this score are not emitted.
        image_size: inference size (pixels, multiple of 32).
        device: ``auto`` (default: the GPU Ray assigned this worker, else CPU; in-process,
            CUDA if torch sees it), or ``cpu``, ``0``, ``cuda:0``...
        half: float16 inference (ultralytics' ``half``; CUDA only: ignored on the CPU,
            where ultralytics runs float32).
        source_name: overrides ``name`` in ``source`` (the refinement loop names its
            students ``student_i<k>``).
    """

    name: ClassVar[str] = "yolo"
    version: ClassVar[str] = "1"

    weights: str
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    image_size: Annotated[int, Field(ge=32, le=4096, multiple_of=32)] = 640
    device: str = "auto"
    half: bool = False
    source_name: str | None = None
    sha256: str | None = None

    @field_validator("weights")
    @classmethod
    def _weights_exist(cls, weights: str) -> str:
        if is_remote(weights):
            if location(weights, "weights").is_file():
                return weights
            raise ValueError(f"weights file not found: {weights}")
        if Path(weights).is_file():
            return str(Path(weights).resolve())
        if weights.endswith((".yaml", ".yml")) and ultralytics_model_yaml(weights):
            return weights
        raise ValueError(f"weights file not found: {weights}")

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        self._device = resolve_device(self.device, worker)
        from engine.offline import prepare_ultralytics

        prepare_ultralytics()
        from ultralytics import YOLO

        weights = cached_copy(self.weights) if is_remote(self.weights) else self.weights
        if self.sha256 is not None and file_sha256(weights) != self.sha256:
            raise ValueError(f"{self.weights}: its SHA-256 is not {self.sha256}; not loaded")
        self._model = YOLO(weights, task="detect")
        self._model.to(self._device)  # now, not at the first batch (placement reads it)

    def models(self) -> list:
        return [self._model.model]  # ultralytics' YOLO wraps the torch module

    def annotate(self, images: list[np.ndarray]) -> list[list[Region]]:
        # ultralytics treats numpy arrays as BGR (OpenCV's order).
        bgr = [np.ascontiguousarray(image[:, :, ::-1]) for image in images]
        predictions = self._model.predict(
            bgr,
            conf=self.min_score,
            imgsz=self.image_size,
            device=self._device,
            half=self.half and self._device.startswith("cuda"),
            verbose=False,
        )
        results = []
        for prediction in predictions:
            names = prediction.names
            boxes = prediction.boxes
            xyxy = boxes.xyxy.cpu().numpy().tolist()
            scores = boxes.conf.cpu().numpy().tolist()
            classes = boxes.cls.cpu().numpy().astype(int).tolist()
            results.append(
                [
                    Region(
                        kind="object",
                        x0=x0,
                        y0=y0,
                        x1=x1,
                        y1=y1,
                        label=str(names[class_id]),
                        score=score,
                        source=self.source,
                    )
                    for (x0, y0, x1, y1), score, class_id in zip(xyxy, scores, classes, strict=True)
                ]
            )
        return results
