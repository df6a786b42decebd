"""People's labels (``fld import-reviews``) added to an iteration as the source
``human@1``, for the refinement loop (``pipelines.refine``): on every reviewed image that
is not hold-out, the boxes reviewers accepted, corrected or added become fresh, kept
regions of score 1 (an OCR line's quad is its box's corners), and the sample records
which kinds were reviewed (``Sample.reviewed_kinds``), so that the ``human_review`` filter
treats them as the truth there, also on an image where a reviewer rejected every box.

Images are matched by ``image_id`` (the SHA-256 of their bytes): a copy under another URI
is the same image and gets the same labels. Hold-out images get nothing: their labels
judge the iteration (``pipelines.review``), and would judge nothing if they were in it.
Runs at stage ``regions``, like the annotators it overrules.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic.dataclasses import dataclass

from annotators.base import STRICT, SampleAnnotator
from engine.records import Region, Sample
from engine.steps import WorkerContext


@dataclass(config=STRICT)
class HumanLabels(SampleAnnotator):
    """Args:
    reviews: the reviews table this iteration started with (its snapshot,
        ``models/iteration=K/reviews.parquet``: ``engine.reviews``).
    sha256: that file's SHA-256, recorded when the iteration was configured; a file that
        changed since is refused (the iteration would mix two sets of reviews).
    """

    name: ClassVar[str] = "human_labels"
    version: ClassVar[str] = "1"
    source_name: ClassVar[str] = "human"
    stage: ClassVar[str] = "regions"

    reviews: str
    sha256: str

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        import hashlib

        from engine.reviews import HumanLabels as Labels
        from engine.reviews import read_reviews
        from engine.storage import location

        path = location(self.reviews, "reviews")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != self.sha256:
            raise RuntimeError(
                f"human_labels: {self.reviews} changed since the iteration was configured "
                f"(SHA-256 {actual[:16]}..., expected {self.sha256[:16]}...)"
            )
        labels = Labels.from_table(read_reviews(path))
        self._labels = {i: labels.boxes[i] for i in labels.trained}

    def annotate_samples(self, samples: list[Sample]) -> None:
        for sample in samples:
            boxes = self._labels.get(sample.image_id)
            if boxes is None:
                continue
            sample.reviewed_kinds = ("object", "ocr")
            for kind, label, (x0, y0, x1, y1) in boxes:
                if not (x1 > x0 and y1 > y0):
                    continue  # a degenerate box a reviewer left: not a region
                quad = [x0, y0, x1, y0, x1, y1, x0, y1] if kind == "ocr" else None
                sample.regions.append(
                    Region(
                        kind=kind,
                        x0=x0,
                        y0=y0,
                        x1=x1,
                        y1=y1,
                        label=label,
                        score=1.0,
                        source=self.source,
                        quad=quad,
                    )  # fmt: skip
                )
