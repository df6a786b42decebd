"""OCR lines with quads: RapidOCR 3.x (PP-OCR detection + recognition, ONNX Runtime).

Output: ``ocr`` regions; ``label`` the recognised text of the line, ``score`` the
recogniser's confidence, ``quad`` the detected quadrilateral as 8 floats clockwise from
top-left (``[x_tl, y_tl, x_tr, y_tr, x_br, y_br, x_bl, y_bl]``), box its bounding box.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, Annotator
from engine.records import Region
from engine.steps import WorkerContext


def order_quad(points: np.ndarray) -> list[float]:
    """Four ``(x, y)`` points in any order -> 8 floats clockwise from top-left (y down)."""
    points = np.asarray(points, dtype=np.float64).reshape(4, 2)
    center = points.mean(axis=0)
    # Clockwise on screen (y down) is increasing atan2(dy, dx).
    angles = np.arctan2(points[:, 1] - center[1], points[:, 0] - center[0])
    clockwise = points[np.argsort(angles)]
    start = int(np.argmin(clockwise.sum(axis=1)))  # top-left: smallest x + y
    return [float(v) for v in np.roll(clockwise, -start, axis=0).reshape(-1)]


@dataclass(config=STRICT)
class RapidOCRReader(Annotator):
    """RapidOCR text lines.

    Args:
        min_score: lines whose recognition score is under this are not emitted.
        use_angle_classifier: run PP-OCR's 180-degree text-direction classifier.

    ONNX Runtime gets the worker's thread budget (``run.threads_per_worker``) at ``setup``.
    """

    name: ClassVar[str] = "rapidocr"
    version: ClassVar[str] = "1"

    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    use_angle_classifier: bool = True

    def preflight(self) -> str | None:
        import importlib.util

        missing = [
            name for name in ("rapidocr", "onnxruntime") if not importlib.util.find_spec(name)
        ]
        if missing:
            return f"rapidocr: {', '.join(missing)} not installed (`make install`)"
        return None

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        from rapidocr import RapidOCR

        self._engine = RapidOCR(
            params={
                "Global.log_level": "error",
                "Global.text_score": self.min_score,
                "Global.use_cls": self.use_angle_classifier,
                "EngineConfig.onnxruntime.intra_op_num_threads": worker.threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
        )

    def annotate(self, images: list[np.ndarray]) -> list[list[Region]]:
        # RapidOCR takes one image per call (its detector resizes each image differently).
        return [self._read(image) for image in images]

    def _read(self, image: np.ndarray) -> list[Region]:
        # RapidOCR's numpy input is BGR, as OpenCV reads it.
        result = self._engine(np.ascontiguousarray(image[:, :, ::-1]))
        if result.boxes is None or result.txts is None:
            return []
        height, width = image.shape[:2]
        regions = []
        for points, text, score in zip(result.boxes, result.txts, result.scores, strict=True):
            if not text.strip() or score < self.min_score:
                continue
            quad = order_quad(points)
            xs, ys = quad[0::2], quad[1::2]
            regions.append(
                Region(
                    kind="ocr",
                    x0=max(0.0, min(xs)),
                    y0=max(0.0, min(ys)),
                    x1=min(float(width), max(xs)),
                    y1=min(float(height), max(ys)),
                    label=text.strip(),
                    score=float(score),
                    source=self.source,
                    quad=quad,
                )
            )
        return regions
