"""Replays the raw rows of earlier annotators from a committed iteration, instead of
running them again (the specialists are deterministic; the refinement loop reuses
iteration k-1's rows in iteration k).

For each image of a batch, the ``regions`` rows of ``iteration`` whose ``source`` is in
``sources`` and that were written *for the same URI* are added back as fresh, kept
regions (kind, box, quad, label, score and source as written), so that this iteration's
filters decide about them again together with the new annotators' rows. Runs at stage
``regions``, like the annotators it stands in for.

Rows are found by shard and URI, not by ``image_id`` alone: the same bytes under two URIs
in two shards have one ``image_id`` and two sets of rows, and replaying by id would give
each copy both sets (doubling every iteration). At ``setup`` each worker indexes the
iteration once: the URI range of every shard, from the shard markers (``first_uri``,
``last_uri``; shards are runs of sorted URIs). A batch then reads only the shard files (or
the slice of a compacted part) its URIs fall in, one shard held in memory at a time.
"""

from __future__ import annotations

import bisect
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
        from engine.corpus import Corpus, IterationWriter

        corpus = Corpus(self.corpus)
        if not corpus.is_committed(self.iteration):
            raise RuntimeError(
                f"replay: iteration {self.iteration} of {self.corpus} is not committed"
            )
        self._group_of = {
            shard: group for group in corpus.file_groups(self.iteration) for shard in group.shards
        }
        ranges = sorted(
            (marker["first_uri"], marker["last_uri"], f"{index:05d}")
            for index, marker in IterationWriter(corpus, self.iteration).done_shards().items()
            if marker.get("first_uri") is not None
        )
        self._first_uris = [first for first, _, _ in ranges]
        self._ranges = ranges
        self._loaded: tuple[str, dict[str, list[dict]]] | None = None

    def shard_of(self, uri: str) -> str | None:
        """The shard of iteration ``iteration`` whose URI range holds ``uri``."""
        position = bisect.bisect_right(self._first_uris, uri) - 1
        if position < 0:
            return None
        _, last, shard = self._ranges[position]
        return shard if uri <= last else None

    def rows_by_uri(self, shard: str) -> dict[str, list[dict]]:
        """The replayed sources' region rows of one shard, by URI, in written order."""
        if self._loaded is not None and self._loaded[0] == shard:
            return self._loaded[1]
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        group = self._group_of[shard]
        tables = {name: pq.read_table(group.files[name]) for name in ("images", "regions")}
        if group.shard_rows is not None:  # a compacted part: this shard's slice of it
            position = group.shards.index(shard)
            for name in tables:
                counts = group.shard_rows[name]
                tables[name] = tables[name].slice(sum(counts[:position]), counts[position])
        uri_of = dict(
            zip(
                tables["images"].column("image_id").to_pylist(),
                tables["images"].column("uri").to_pylist(),
                strict=True,
            )
        )
        regions = tables["regions"]
        wanted = regions.filter(
            pc.is_in(regions.column("source"), value_set=pa_strings(self.sources))
        )
        by_uri: dict[str, list[dict]] = {}
        for row in sorted(wanted.to_pylist(), key=lambda r: int(r["region_id"].rsplit(":r", 1)[1])):
            by_uri.setdefault(uri_of[row["image_id"]], []).append(row)
        self._loaded = (shard, by_uri)
        return by_uri

    def annotate_samples(self, samples: list[Sample]) -> None:
        for sample in samples:
            shard = self.shard_of(sample.uri)
            if shard is None:
                continue
            for row in self.rows_by_uri(shard).get(sample.uri, []):
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


def pa_strings(values: list[str]):
    import pyarrow as pa

    return pa.array(values, type=pa.string())
