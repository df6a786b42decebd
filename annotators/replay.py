"""Replays the raw rows of earlier annotators from a committed iteration, instead of
running them again (the specialists are deterministic; the refinement loop reuses
iteration k-1's rows in iteration k).

For each image of a batch, the ``regions`` rows of ``iteration`` whose ``source`` is in
``sources`` are added back as fresh, kept regions (kind, box, quad, label, score and
source as written), so that this iteration's filters decide about them again together
with the new annotators' rows. Runs at stage ``regions``, like the annotators it stands in for.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field
from pydantic.dataclasses import dataclass

from annotators.base import STRICT, SampleAnnotator
from engine.records import Region, Sample
from engine.steps import WorkerContext


@dataclass(config=STRICT)
class CorpusReplay(SampleAnnotator):
    """Args:
    corpus: the corpus folder.
    iteration: the committed iteration whose rows are replayed.
    sources: which sources (``name@version``) to replay.
    """

    name: ClassVar[str] = "replay"
    version: ClassVar[str] = "1"
    stage: ClassVar[str] = "regions"

    corpus: str
    iteration: Annotated[int, Field(ge=0)]
    sources: list[str]

    def setup(self, worker: WorkerContext = WorkerContext()) -> None:  # noqa: B008
        from engine.corpus import Corpus

        corpus = Corpus(self.corpus)
        if not corpus.is_committed(self.iteration):
            raise RuntimeError(
                f"replay: iteration {self.iteration} of {self.corpus} is not committed"
            )
        self._files = [str(path) for path in corpus.table_files("regions", [self.iteration])]

    def annotate_samples(self, samples: list[Sample]) -> None:
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        if not samples or not self._files:
            return
        dataset = ds.dataset(self._files, format="parquet")
        wanted = pc.field("image_id").isin([s.image_id for s in samples]) & pc.field("source").isin(
            self.sources
        )
        rows = dataset.to_table(filter=wanted).sort_by("region_id").to_pylist()
        by_image: dict[str, list[dict]] = {}
        for row in sorted(rows, key=lambda r: int(r["region_id"].rsplit(":r", 1)[1])):
            by_image.setdefault(row["image_id"], []).append(row)
        for sample in samples:
            for row in by_image.get(sample.image_id, []):
                sample.regions.append(
                    Region(
                        kind=row["kind"],
                        x0=row["x0"],
                        y0=row["y0"],
                        x1=row["x1"],
                        y1=row["y1"],
                        label=row["label"],
                        score=row["score"],
                        source=row["source"],
                        quad=row["quad"],
                    )
                )
