"""In-memory records that flow through a pipeline, one ``Sample`` per usable image.

Annotators append ``Region`` objects to ``Sample.regions``; filters flip ``kept`` and
set ``drop_reason``; the pipeline turns samples into rows of the tables in
``engine.schemas`` (``Sample.image_row``, ``region_rows``, ``text_rows``, ``phrase_rows``).  Coordinates follow the schema module:
pixels of the decoded, EXIF-upright image.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

REGION_KINDS = ("object", "ocr", "dense", "proposal")
GRANULARITIES = ("brief", "detailed", "more_detailed")


def content_id(data: bytes) -> str:
    """``image_id``: the first 32 hex digits of the SHA-256 of the encoded bytes."""
    return hashlib.sha256(data).hexdigest()[:32]


def file_sha256(path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks (weights files are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def stable_id(*parts: object) -> str:
    """A short deterministic id from its parts (for row ids of errors)."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]


@dataclass
class Region:
    """One region-text pair. ``x0 < x1``, ``y0 < y1`` in pixels; ``quad`` for OCR only."""

    kind: str
    x0: float
    y0: float
    x1: float
    y1: float
    label: str
    score: float
    source: str
    quad: list[float] | None = None
    polygon: list[float] = field(default_factory=list)
    sources: list[str] | None = None
    kept: bool = True
    drop_reason: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in REGION_KINDS:
            raise ValueError(f"region kind {self.kind!r} is not one of {REGION_KINDS}")
        if self.sources is None:
            self.sources = [self.source]

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    def drop(self, reason: str) -> None:
        self.kept = False
        self.drop_reason = reason


@dataclass
class Text:
    """One description of a whole image. ``score`` in [0, 1] (a captioner's mean token
    probability, or 1.0 for texts composed from kept regions). The ``n_*`` and
    ``*_complexity`` fields are filled by the spaCy complexity filter."""

    granularity: str
    text: str
    source: str
    score: float = 1.0
    n_objects: int | None = None
    n_attributes: int | None = None
    n_actions: int | None = None
    object_complexity: float | None = None
    action_complexity: float | None = None
    object_complexity_diht: float | None = None
    action_complexity_diht: float | None = None
    kept: bool = True
    drop_reason: str | None = None

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity {self.granularity!r} is not one of {GRANULARITIES}")

    def drop(self, reason: str) -> None:
        self.kept = False
        self.drop_reason = reason


@dataclass
class Phrase:
    """One (phrase, box) pair of a kept text: a text-phrase-region triplet.

    ``group`` numbers the distinct phrases of a sample (all boxes of one phrase share it,
    and so share ``phrase_id``); ``char_start``/``char_end`` index ``text.text``.
    ``box`` is ``(x0, y0, x1, y1)`` in pixels, or None while ungrounded (a phrase that
    grounds to nothing stays one row with no box, dropped with its reason).
    ``score``: the grounding score of this box (or the phrase's best, with no box)."""

    text: Text
    group: int
    phrase: str
    char_start: int
    char_end: int
    source: str
    box: tuple[float, float, float, float] | None = None
    polygon: list[float] = field(default_factory=list)
    score: float = 0.0
    kept: bool = True
    drop_reason: str | None = None
    plural: bool = False  # the phrase names several things ("three people", "buses")
    count: int | None = None  # the number it gives, if any
    head: str = ""  # modifiers + singular head noun, for matching region labels ("person")

    def drop(self, reason: str) -> None:
        self.kept = False
        self.drop_reason = reason


@dataclass
class ErrorRecord:
    """One input (or one image at one stage) that could not be used, and why."""

    uri: str
    stage: str
    error_type: str
    message: str
    image_id: str | None = None


@dataclass
class Sample:
    """A decoded image and everything annotated on it so far.

    ``pixels`` is an ``HxWx3`` uint8 RGB array of the EXIF-upright image.
    """

    image_id: str
    uri: str
    pixels: np.ndarray
    format: str | None
    n_bytes: int
    regions: list[Region] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)
    phrases: list[Phrase] = field(default_factory=list)
    hashes: dict = field(default_factory=dict)  # pixel_sha256, phash (engine.dedup)
    # The region kinds a person reviewed on this image (annotators.human_labels): the
    # human_review filter takes the human rows of these kinds as the truth.
    reviewed_kinds: tuple[str, ...] = ()
    # run.dedup: before_annotation: the image whose rows this one's copy (its same pixels
    # were annotated before in the iteration); the models skip this image.
    labels_from: str | None = None

    @property
    def kept_regions(self) -> list[Region]:
        return [region for region in self.regions if region.kept]

    def snapshot(self) -> tuple[list, list, list]:
        """The row lists as they are now, for ``restore`` after a failed step."""
        return self.regions[:], self.texts[:], self.phrases[:]

    def restore(self, state: tuple[list, list, list]) -> None:
        self.regions[:], self.texts[:], self.phrases[:] = state

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def image_row(self, iteration: int) -> dict:
        return {
            "image_id": self.image_id,
            "iteration": iteration,
            "uri": self.uri,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "bytes": self.n_bytes,
            "pixel_sha256": self.hashes.get("pixel_sha256"),
            "phash": self.hashes.get("phash"),
            "phash_crops": self.hashes.get("phash_crops"),
            "labels_from": self.labels_from,
        }

    def region_rows(self, iteration: int) -> list[dict]:
        rows = []
        for index, region in enumerate(self.regions):
            rows.append(
                {
                    "region_id": f"{self.image_id[:16]}:{iteration}:r{index}",
                    "image_id": self.image_id,
                    "iteration": iteration,
                    "kind": region.kind,
                    "x0": region.x0,
                    "y0": region.y0,
                    "x1": region.x1,
                    "y1": region.y1,
                    "quad": region.quad,
                    "polygon": region.polygon,
                    "label": region.label,
                    "score": min(max(float(region.score), 0.0), 1.0),
                    "source": region.source,
                    "sources": region.sources,
                    "n_sources": len(region.sources),
                    "kept": region.kept,
                    "drop_reason": region.drop_reason,
                }
            )
        return rows

    def text_rows(self, iteration: int) -> list[dict]:
        return [
            {
                "text_id": f"{self.image_id[:16]}:{iteration}:t{index}",
                "image_id": self.image_id,
                "iteration": iteration,
                "granularity": text.granularity,
                "text": text.text,
                "source": text.source,
                "score": min(max(float(text.score), 0.0), 1.0),
                "n_objects": text.n_objects,
                "n_attributes": text.n_attributes,
                "n_actions": text.n_actions,
                "object_complexity": text.object_complexity,
                "action_complexity": text.action_complexity,
                "object_complexity_diht": text.object_complexity_diht,
                "action_complexity_diht": text.action_complexity_diht,
                "kept": text.kept,
                "drop_reason": text.drop_reason,
            }
            for index, text in enumerate(self.texts)
        ]

    def phrase_rows(self, iteration: int) -> list[dict]:
        text_ids = {
            id(text): f"{self.image_id[:16]}:{iteration}:t{i}" for i, text in enumerate(self.texts)
        }
        rows = []
        for index, phrase in enumerate(self.phrases):
            box = phrase.box
            rows.append(
                {
                    "triplet_id": f"{self.image_id[:16]}:{iteration}:g{index}",
                    "phrase_id": f"{self.image_id[:16]}:{iteration}:p{phrase.group}",
                    "image_id": self.image_id,
                    "iteration": iteration,
                    "text_id": text_ids[id(phrase.text)],
                    "phrase": phrase.phrase,
                    "char_start": phrase.char_start,
                    "char_end": phrase.char_end,
                    "box": None
                    if box is None
                    else dict(zip(("x0", "y0", "x1", "y1"), box, strict=True)),
                    "polygon": phrase.polygon,
                    "score": min(max(float(phrase.score), 0.0), 1.0),
                    "source": phrase.source,
                    "kept": phrase.kept,
                    "drop_reason": phrase.drop_reason,
                }
            )
        return rows


def error_row(error: ErrorRecord, iteration: int) -> dict:
    return {
        "error_id": stable_id(error.uri, error.stage, iteration),
        "image_id": error.image_id,
        "iteration": iteration,
        "uri": error.uri,
        "stage": error.stage,
        "error_type": error.error_type,
        "message": error.message,
    }
