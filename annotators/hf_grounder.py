"""Phrase grounding with a transformers zero-shot detector: OWLv2 or OWL-ViT
(``AutoProcessor`` + ``AutoModelForZeroShotObjectDetection``), from a hub id or a local
folder.

For each image, the pending phrases (``kept`` and no box yet) are the text queries of
ONE detector call (distinct wordings only: a phrase repeated by several captions is
asked once). OWL scores every predicted box against every query (``sigmoid`` of the
class logit). Each phrase is grounded on its own, as a phrase grounder should: its
query's scores over all boxes, boxes under ``box_threshold`` or smaller than
``min_box_side`` pixels removed, greedy NMS at ``nms_iou``, then the best box for a
singular phrase, up to ``count`` (or ``max_boxes``) boxes for a plural or counted one
("two people", "buses"). (The processors' ``post_process_grounded_object_detection``
gives each box to its single best query only, so two phrases naming the same thing,
"a man" and "a player", could not both get it; the same conversion is done here per
query instead.)

Output, as ``embedding_grounder``'s: each box becomes one ``Phrase`` row (a
``copy.copy`` of the phrase, same ``group`` and so the same ``phrase_id``) with ``box``
= ``(x0, y0, x1, y1)`` in pixels of the image, clipped to it, and ``score`` = the
detector's score in [0, 1]; a phrase with no box over the threshold stays one row with
no box, dropped with ``no_match``, ``score`` = its best box's score. Every row this
grounder writes or drops has ``source = hf_grounder@1`` (or ``<source_name>@1``).

Boxes: OWL predicts ``(cx, cy, w, h)`` relative to its square input. OWLv2's processor
pads the image to a square (bottom and right) before resizing, so its boxes are
relative to the padded side ``max(width, height)``; OWL-ViT's resizes without padding,
so its boxes are relative to width and height.
"""

from __future__ import annotations

import copy
from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, SampleAnnotator, hub_id_or_folder
from engine.records import Phrase, Sample
from engine.steps import WorkerContext, resolve_device

SUPPORTED = ("owlv2", "owlvit")


@dataclass(config=STRICT)
class HFGrounder(SampleAnnotator):
    """Args:
    model: a hub id (``google/owlv2-base-patch16-ensemble``,
        ``google/owlvit-base-patch32``), read from the local hub cache (set
        ``HF_HUB_OFFLINE=1`` where there is no hub), or a local folder holding the model
        and its processor. A path (starting with ``/``, ``.`` or ``~``, or existing) must
        be an existing folder when the config is read.
    revision: hub revision to pin a hub id to.
    box_threshold: a box scoring under this for a phrase is not a match.
    nms_iou: boxes of one phrase overlapping a better one by more than this are dropped.
    max_boxes: most boxes a plural phrase may take.
    min_box_side: boxes (clipped to the image) with a side under this many pixels are
        ignored.
    device: ``auto`` (default: the GPU Ray assigned this worker, else CPU; in-process,
            CUDA if torch sees it), or ``cpu``, ``cuda:0``...
    source_name: overrides ``name`` in ``source``.
    """

    name: ClassVar[str] = "hf_grounder"
    version: ClassVar[str] = "1"
    stage: ClassVar[str] = "phrases"

    model: str
    revision: str | None = None
    box_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1
    nms_iou: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    max_boxes: Annotated[int, Field(ge=1, le=100)] = 10
    min_box_side: Annotated[float, Field(ge=0.0)] = 1.0
    device: str = "auto"
    source_name: str | None = None

    @field_validator("model")
    @classmethod
    def _model_found(cls, model: str) -> str:
        return hub_id_or_folder(model)

    # ------------------------------------------------------------------ model

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        self._device = resolve_device(self.device, worker)
        from engine.offline import apply_offline_env

        apply_offline_env()
        from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor

        options = {"revision": self.revision} if self.revision else {}
        config = AutoConfig.from_pretrained(self.model, **options)
        if config.model_type not in SUPPORTED:
            raise ValueError(
                f"hf_grounder supports {list(SUPPORTED)} models; {self.model} is "
                f"{config.model_type!r}"
            )
        self._padded_square = config.model_type == "owlv2"
        self._max_tokens = int(config.text_config.max_position_embeddings)
        self._processor = AutoProcessor.from_pretrained(self.model, **options)
        self._model = AutoModelForZeroShotObjectDetection.from_pretrained(self.model, **options)
        self._model.to(self._device).eval()

    # ------------------------------------------------------------------ annotate

    def annotate_samples(self, samples: list[Sample]) -> None:
        # Detect on every image before changing any sample: if one image fails, the
        # batch is left as it was (the pipeline then retries image by image).
        detections = [self.detect_pending(sample) for sample in samples]
        for sample, detection in zip(samples, detections, strict=True):
            if detection is not None:
                self.ground(sample, *detection)

    def detect_pending(self, sample: Sample):
        """``(pending, query index per wording, scores, boxes)``, or None if nothing is pending."""
        pending = [p for p in sample.phrases if p.kept and p.box is None]
        if not pending:
            return None
        queries: dict[str, int] = {}
        for phrase in pending:
            queries.setdefault(query_text(phrase), len(queries))
        return (pending, queries, *self.detect(sample.pixels, list(queries)))

    def ground(self, sample: Sample, pending, queries, scores, boxes) -> None:
        """Replace each pending phrase of ``sample`` by its rows."""
        rows_for = {
            id(phrase): self.choose(phrase, scores[:, queries[query_text(phrase)]], boxes)
            for phrase in pending
        }
        sample.phrases[:] = [
            row for phrase in sample.phrases for row in rows_for.get(id(phrase), [phrase])
        ]

    def detect(self, pixels: np.ndarray, queries: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """One detector call: ``scores`` (boxes x queries, in [0, 1]) and ``boxes``
        (boxes x 4, ``x0 y0 x1 y1`` in pixels clipped to the image; boxes smaller than
        ``min_box_side`` get score -1)."""
        import torch
        from PIL import Image

        height, width = pixels.shape[:2]
        inputs = self._processor(
            text=[queries],
            images=[Image.fromarray(pixels).convert("RGB")],
            return_tensors="pt",
            truncation=True,
            max_length=self._max_tokens,
        ).to(self._device)
        with torch.inference_mode():
            outputs = self._model(**inputs)
        logits = outputs.logits[0, :, : len(queries)].float()  # (boxes, queries)
        scores = torch.sigmoid(logits).cpu().numpy().astype(np.float64)
        cx, cy, w, h = outputs.pred_boxes[0].float().cpu().numpy().astype(np.float64).T
        scale_x, scale_y = (max(width, height),) * 2 if self._padded_square else (width, height)
        boxes = np.stack(
            [
                ((cx - w / 2) * scale_x).clip(0, width),
                ((cy - h / 2) * scale_y).clip(0, height),
                ((cx + w / 2) * scale_x).clip(0, width),
                ((cy + h / 2) * scale_y).clip(0, height),
            ],
            axis=1,
        )
        small = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) < max(
            self.min_box_side, 1e-6
        )
        scores[small] = -1.0
        return scores, boxes

    def choose(self, phrase: Phrase, scores: np.ndarray, boxes: np.ndarray) -> list[Phrase]:
        phrase.source = self.source
        limit = min(phrase.count or self.max_boxes, self.max_boxes) if phrase.plural else 1
        chosen = nms(boxes, scores, self.box_threshold, self.nms_iou, limit)
        if not chosen:
            phrase.score = float(min(max(scores.max(initial=0.0), 0.0), 1.0))
            phrase.drop("no_match")
            return [phrase]
        rows = []
        for index in chosen:
            row = copy.copy(phrase)
            row.box = tuple(round(float(v), 2) for v in boxes[index])
            row.polygon = []
            row.score = float(min(max(scores[index], 0.0), 1.0))
            rows.append(row)
        return rows


def query_text(phrase: Phrase) -> str:
    return " ".join(phrase.phrase.split()).lower()


def nms(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, iou: float, limit: int
) -> list[int]:
    """Indices of up to ``limit`` boxes scoring ``>= threshold``, best first, none
    overlapping a better chosen one by more than ``iou`` (``torchvision.ops.nms``)."""
    import torch
    from torchvision.ops import nms as torchvision_nms

    candidates = np.flatnonzero(scores >= threshold)
    if not len(candidates):
        return []
    kept = torchvision_nms(
        torch.from_numpy(boxes[candidates]).double(),
        torch.from_numpy(scores[candidates]).double(),
        iou,
    )
    return [int(candidates[i]) for i in kept[:limit].tolist()]
