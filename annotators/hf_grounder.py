"""Phrase grounding with a transformers detector that takes text: OWLv2 or OWL-ViT
(``AutoModelForZeroShotObjectDetection``), Grounding DINO
(``GroundingDinoForObjectDetection``) or Florence-2 (``<CAPTION_TO_PHRASE_GROUNDING>``),
from a hub id or a local folder; the backend is chosen from the model's ``model_type``.

For each image, the pending phrases (``kept`` and no box yet) are its text queries
(distinct wordings only: a phrase repeated by several captions is asked once); the
images of a batch go to the detector together, ``batch_size`` images per forward pass.
Each backend gives a score for every (box, query) pair in [0, 1]:

- OWL: ``sigmoid`` of the class logit of each predicted box for each query; all queries of
  all images of the chunk in one call (the processor pads each image's queries to the
  longest list).
- Grounding DINO: the queries of an image joined as ``"a bus. two people."``; a box's
  score for a query is the highest ``sigmoid`` of its logits over the query's own tokens
  (located with the tokenizer's character offsets), as Grounding DINO reads a phrase off
  its token logits.
- Florence-2: one ``<CAPTION_TO_PHRASE_GROUNDING>`` prompt per query, every image encoded
  once (``annotators.florence2_model``); the boxes it writes for a query score the
  geometric mean of their location tokens' probabilities for that query and 0 for the
  others.

Each phrase is then grounded on its own, as a phrase grounder should: its query's
scores over all boxes, boxes under ``box_threshold`` or smaller than ``min_box_side``
pixels removed, NMS at ``nms_iou`` (``torchvision.ops.nms``), then the best box for a
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

Boxes: OWL and Grounding DINO predict ``(cx, cy, w, h)`` relative to their input. OWLv2's
processor pads the image to a square (bottom and right) before resizing, so its boxes are
relative to the padded side ``max(width, height)``; OWL-ViT's resizes without padding and
Grounding DINO's boxes are relative to the image itself (its padding is masked), so
theirs are relative to width and height. Florence-2 writes pixel boxes (bin centres).
"""

from __future__ import annotations

import copy
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, SampleAnnotator, model_folder_of_type
from engine.records import Phrase, Sample
from engine.steps import WorkerContext, resolve_device

SUPPORTED = ("owlv2", "owlvit", "grounding-dino", "florence2")


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
    batch_size: images per forward pass (their queries go together).
    max_new_tokens: Florence-2 only: longest output per query, in tokens.
    text_sources: ground only the phrases of texts from these sources (``name@version``);
        ``None``: every pending phrase (the refinement loop's Florence-2 student grounds
        the phrases of its own captions, before the configured grounder takes the rest).
    dtype: ``float32``, or ``float16``/``bfloat16`` on a GPU.
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
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    max_new_tokens: Annotated[int, Field(ge=8, le=4096)] = 64
    text_sources: list[str] | None = None
    device: str = "auto"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    source_name: str | None = None

    @field_validator("model")
    @classmethod
    def _model_found(cls, model: str) -> str:
        return model_folder_of_type(model, SUPPORTED)

    # ------------------------------------------------------------------ model

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        self._device = resolve_device(self.device, worker)
        from engine.offline import apply_offline_env

        apply_offline_env()
        from transformers import AutoConfig

        options = {"revision": self.revision} if self.revision else {}
        config = AutoConfig.from_pretrained(self.model, **options)
        if config.model_type not in SUPPORTED:
            raise ValueError(
                f"hf_grounder supports {list(SUPPORTED)} models; {self.model} is "
                f"{config.model_type!r}"
            )
        backend = {
            "owlv2": OwlBackend,
            "owlvit": OwlBackend,
            "grounding-dino": GroundingDinoBackend,
            "florence2": Florence2Backend,
        }[config.model_type]
        self._backend = backend(self, config)
        self._model = self._backend.model

    def models(self) -> list:
        return [self._model]

    # ------------------------------------------------------------------ annotate

    def annotate_samples(self, samples: list[Sample]) -> None:
        # Detect on every image before changing any sample: if one image fails, the
        # batch is left as it was (the pipeline then retries image by image).
        work = [(sample, pending_queries(sample, self.text_sources)) for sample in samples]
        work = [(sample, pending) for sample, pending in work if pending is not None]
        detections = []
        for start in range(0, len(work), self.batch_size):
            chunk = work[start : start + self.batch_size]
            detections += self.detect(
                [sample.pixels for sample, _ in chunk], [list(queries) for _, (_, queries) in chunk]
            )
        for (sample, (pending, queries)), (scores, boxes) in zip(work, detections, strict=True):
            self.ground(sample, pending, queries, scores, boxes)

    def ground(self, sample: Sample, pending, queries, scores, boxes) -> None:
        """Replace each pending phrase of ``sample`` by its rows."""
        rows_for = {
            id(phrase): self.choose(phrase, scores[:, queries[query_text(phrase)]], boxes)
            for phrase in pending
        }
        sample.phrases[:] = [
            row for phrase in sample.phrases for row in rows_for.get(id(phrase), [phrase])
        ]

    def detect(self, images: list[np.ndarray], queries: list[list[str]]) -> list[tuple]:
        """One detector pass over ``images`` with each image's ``queries``: per image,
        ``scores`` (boxes x its queries, in [0, 1]) and ``boxes`` (boxes x 4, ``x0 y0 x1
        y1`` in pixels clipped to the image); boxes smaller than ``min_box_side`` get
        score -1."""
        results = []
        for pixels, (scores, boxes) in zip(
            images, self._backend.detect(images, queries), strict=True
        ):
            height, width = pixels.shape[:2]
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
            scores = np.asarray(scores, dtype=np.float64).reshape(len(boxes), -1)
            small = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) < max(
                self.min_box_side, 1e-6
            )
            scores[small] = -1.0
            results.append((scores, boxes))
        return results

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


def pending_queries(sample: Sample, text_sources: list[str] | None = None):
    """``(pending phrases, query index per wording)``, or None if nothing is pending
    (phrases of texts from ``text_sources`` only, when given)."""
    pending = [
        p for p in sample.phrases
        if p.kept and p.box is None and (text_sources is None or p.text.source in text_sources)
    ]  # fmt: skip
    if not pending:
        return None
    queries: dict[str, int] = {}
    for phrase in pending:
        queries.setdefault(query_text(phrase), len(queries))
    return pending, queries


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


def corners(cxcywh: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    """``(cx, cy, w, h)`` relative boxes to ``x0 y0 x1 y1`` in pixels."""
    cx, cy, w, h = np.asarray(cxcywh, dtype=np.float64).reshape(-1, 4).T
    return np.stack(
        [
            (cx - w / 2) * scale_x,
            (cy - h / 2) * scale_y,
            (cx + w / 2) * scale_x,
            (cy + h / 2) * scale_y,
        ],
        axis=1,
    )


class DetectorBackend:
    """A transformers detector with its processor, on the grounder's device and dtype;
    ``forward`` runs it and returns box-token probabilities and ``(cx, cy, w, h)`` boxes."""

    def __init__(self, grounder: HFGrounder, model_class) -> None:
        import torch
        from transformers import AutoProcessor

        options = {"revision": grounder.revision} if grounder.revision else {}
        self.device, self.dtype = grounder._device, getattr(torch, grounder.dtype)
        self.processor = AutoProcessor.from_pretrained(grounder.model, **options)
        self.model = model_class.from_pretrained(grounder.model, dtype=self.dtype, **options)
        self.model.to(self.device).eval()

    def forward(self, images: list[np.ndarray], **text) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, boxes)``: sigmoid of the logits (images x boxes x columns) and
        the predicted boxes (images x boxes x 4), as float64 arrays on the CPU."""
        import torch
        from PIL import Image

        inputs = self.processor(
            images=[Image.fromarray(pixels).convert("RGB") for pixels in images],
            return_tensors="pt",
            truncation=True,
            max_length=self.max_tokens,
            **text,
        ).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            outputs = self.model(**inputs)
            probabilities = torch.sigmoid(outputs.logits.float()).cpu().numpy()
            predicted = outputs.pred_boxes.float().cpu().numpy()
        return probabilities, predicted


class OwlBackend(DetectorBackend):
    """OWLv2 / OWL-ViT: every query of every image of the chunk in one forward pass."""

    def __init__(self, grounder: HFGrounder, config) -> None:
        from transformers import AutoModelForZeroShotObjectDetection

        super().__init__(grounder, AutoModelForZeroShotObjectDetection)
        self.padded_square = config.model_type == "owlv2"
        self.max_tokens = int(config.text_config.max_position_embeddings)

    def detect(self, images: list[np.ndarray], queries: list[list[str]]) -> list[tuple]:
        probabilities, predicted = self.forward(images, text=queries)
        results = []
        for index, (pixels, image_queries) in enumerate(zip(images, queries, strict=True)):
            height, width = pixels.shape[:2]
            scale = (max(width, height),) * 2 if self.padded_square else (width, height)
            scores = probabilities[index, :, : len(image_queries)]  # (boxes, queries)
            results.append((scores, corners(predicted[index], *scale)))
        return results


class GroundingDinoBackend(DetectorBackend):
    """Grounding DINO: an image's queries joined into one text ``"q1. q2."``; a box scores
    a query by its highest token probability over that query's tokens."""

    def __init__(self, grounder: HFGrounder, config) -> None:
        from transformers import GroundingDinoForObjectDetection

        super().__init__(grounder, GroundingDinoForObjectDetection)
        self.max_tokens = int(config.max_text_len)

    def prompt(self, queries: list[str]) -> tuple[str, list[tuple[int, int]]]:
        """The joined text and each query's character span in it."""
        text, spans = "", []
        for query in queries:
            spans.append((len(text), len(text) + len(query)))
            text += query + ". "
        return text.strip(), spans

    def detect(self, images: list[np.ndarray], queries: list[list[str]]) -> list[tuple]:

        prompts = [self.prompt(image_queries) for image_queries in queries]
        tokenizer = self.processor.tokenizer
        offsets = tokenizer(
            [text for text, _ in prompts],
            return_offsets_mapping=True,
            truncation=True,
            max_length=self.max_tokens,
        )["offset_mapping"]
        probabilities, predicted = self.forward(
            images, text=[text for text, _ in prompts], padding=True
        )
        results = []
        for index, pixels in enumerate(images):
            height, width = pixels.shape[:2]
            token_spans = offsets[index]
            columns = []
            for start, end in prompts[index][1]:
                tokens = [
                    t for t, (a, b) in enumerate(token_spans) if b > a and a < end and b > start
                ]
                token_probabilities = probabilities[index][:, tokens]  # (boxes, its tokens)
                columns.append(
                    token_probabilities.max(axis=1)
                    if tokens
                    else np.zeros(probabilities.shape[1])  # truncated away: no evidence
                )
            results.append((np.stack(columns, axis=1), corners(predicted[index], width, height)))
        return results


class Florence2Backend:
    """Florence-2: one ``<CAPTION_TO_PHRASE_GROUNDING>`` prompt per query, images encoded
    once per chunk."""

    TASK = "<CAPTION_TO_PHRASE_GROUNDING>"

    def __init__(self, grounder: HFGrounder, config) -> None:
        from annotators.florence2_model import Florence2, ModelSource
        from annotators.hf_generation import Decoding

        self.florence2 = Florence2(
            ModelSource(grounder.model, grounder.revision, grounder._device, grounder.dtype)
        )
        self.model = self.florence2.model
        self.decoding = Decoding(max_new_tokens=grounder.max_new_tokens)

    def detect(self, images: list[np.ndarray], queries: list[list[str]]) -> list[tuple]:
        from PIL import Image

        features = self.florence2.encode([Image.fromarray(p).convert("RGB") for p in images])
        rows = [index for index, image_queries in enumerate(queries) for _ in image_queries]
        prompts = [self.TASK + query for image_queries in queries for query in image_queries]
        outputs = iter(self.florence2.generate(features, prompts, self.decoding, rows))
        results = []
        for pixels, image_queries in zip(images, queries, strict=True):
            height, width = pixels.shape[:2]
            boxes, columns = [], []
            for column in range(len(image_queries)):
                output = next(outputs)
                parsed = self.florence2.parse(output, self.TASK, (width, height))
                found = (parsed or {}).get("bboxes", [])
                scores = self.florence2.location_scores(output, 4)
                if len(scores) != len(found):
                    scores = [output.score] * len(found)
                for box, score in zip(found, scores, strict=True):
                    x0, y0, x1, y1 = box
                    boxes.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
                    columns.append((column, score))
            matrix = np.zeros((len(boxes), len(image_queries)))
            for row, (column, score) in enumerate(columns):
                matrix[row, column] = score
            results.append((matrix, np.asarray(boxes, dtype=np.float64).reshape(-1, 4)))
        return results
