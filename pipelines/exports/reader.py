"""Streaming a committed iteration image by image, for the exporters.

The corpus is read one shard at a time (a shard's tables are as large as the writer once
held in memory, whatever the size of the corpus). Within a shard, DuckDB reads each
table's Parquet file ordered by ``image_id`` on its own cursor, rows are fetched in
batches of ``batch_rows`` (``fetchmany``), and the four streams are merged on
``image_id``: an exporter holds one image's rows at a time. Output order is shard order,
then ``image_id`` within a shard: deterministic for a given corpus.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from engine.corpus import Corpus, CorpusError
from engine.query import connect, sql_literal

REGION_COLUMNS = (
    "region_id, image_id, kind, x0, y0, x1, y1, quad, polygon, label, score, source, "
    "kept, drop_reason"
)
TEXT_COLUMNS = "text_id, image_id, granularity, text, source, score, kept, drop_reason"
PHRASE_COLUMNS = (
    "triplet_id, phrase_id, image_id, text_id, phrase, char_start, char_end, "
    "box.x0 AS x0, box.y0 AS y0, box.x1 AS x1, box.y1 AS y1, polygon, score, source, "
    "kept, drop_reason"
)


@dataclass
class ImageAnnotations:
    """One image and its rows (the rows an export takes: kept ones unless asked otherwise)."""

    image: dict  # image_id, uri, width, height, format
    texts: list[dict] = field(default_factory=list)
    regions: list[dict] = field(default_factory=list)
    phrases: list[dict] = field(default_factory=list)  # rows with a box only


def resolve_iteration(corpus: Corpus, iteration: int | None) -> int:
    committed = corpus.iterations()
    if not corpus.root.is_dir():
        raise FileNotFoundError(f"{corpus.root} is not a corpus folder")
    if not committed:
        raise CorpusError(f"{corpus.root} has no committed iteration")
    if iteration is None:
        return committed[-1]
    if iteration not in committed:
        raise CorpusError(
            f"--iteration {iteration}: not a committed iteration of {corpus.root} "
            f"(committed: {committed})"
        )
    return iteration


class CorpusReader:
    """Reads one committed iteration of a corpus, image by image."""

    def __init__(
        self,
        corpus_path: str | Path,
        iteration: int | None = None,
        include_dropped: bool = False,
        batch_rows: int = 2048,
    ):
        self.corpus = Corpus(corpus_path)
        self.iteration = resolve_iteration(self.corpus, iteration)
        self.include_dropped = include_dropped
        self.batch_rows = batch_rows

    @property
    def kept_condition(self) -> str:
        return "TRUE" if self.include_dropped else "kept"

    def connect(self) -> duckdb.DuckDBPyConnection:
        """DuckDB views over this iteration only (for small aggregates such as labels)."""
        return connect(self.corpus.root, [self.iteration])

    def shard_names(self) -> list[str]:
        folder = self.corpus.iteration_dir(self.iteration) / "images"
        return [path.name for path in sorted(folder.glob("shard=*.parquet"))]

    def images(self) -> Iterator[ImageAnnotations]:
        connection = duckdb.connect()
        connection.execute("SET threads = 1")  # one shard at a time, rows in order
        try:
            for shard in self.shard_names():
                yield from self._shard(connection, shard)
        finally:
            connection.close()

    def _file(self, table: str, shard: str) -> Path | None:
        path = self.corpus.iteration_dir(self.iteration) / table / shard
        return path if path.exists() else None

    def _stream(self, connection, table: str, shard: str, columns: str, where: str, order: str):
        path = self._file(table, shard)
        if path is None:
            return iter(())
        cursor = connection.cursor()
        cursor.execute(
            f"SELECT {columns} FROM read_parquet({sql_literal(str(path))}) "
            f"WHERE {where} ORDER BY image_id, {order}"
        )
        names = [d[0] for d in cursor.description]

        def rows() -> Iterator[dict]:
            try:
                while batch := cursor.fetchmany(self.batch_rows):
                    for row in batch:
                        yield dict(zip(names, row, strict=True))
            finally:
                cursor.close()

        return itertools.groupby(rows(), key=lambda row: row["image_id"])

    def _shard(self, connection, shard: str) -> Iterator[ImageAnnotations]:
        kept = self.kept_condition
        images = self._stream(
            connection, "images", shard, "image_id, uri, width, height, format", "TRUE", "uri"
        )
        streams = {
            "texts": self._stream(
                connection, "texts", shard, TEXT_COLUMNS, kept, "granularity, text_id"
            ),
            "regions": self._stream(
                connection, "regions", shard, REGION_COLUMNS, kept, "kind, y0, x0, region_id"
            ),
            "phrases": self._stream(
                connection,
                "phrases",
                shard,
                PHRASE_COLUMNS,
                f"{kept} AND box IS NOT NULL",
                "text_id, char_start, phrase_id, triplet_id",
            ),
        }
        pending: dict[str, tuple[str, list[dict]] | None] = {
            name: next_group(stream) for name, stream in streams.items()
        }
        for image_id, image_rows in images:
            found = ImageAnnotations(image=next(iter(image_rows)))
            for name, stream in streams.items():
                # rows of images that the images table lacks (none in a sound corpus) are skipped
                while pending[name] is not None and pending[name][0] < image_id:
                    pending[name] = next_group(stream)
                if pending[name] is not None and pending[name][0] == image_id:
                    setattr(found, name, pending[name][1])
                    pending[name] = next_group(stream)
            yield found


def next_group(groups) -> tuple[str, list[dict]] | None:
    for key, rows in groups:
        return key, list(rows)
    return None
