"""Streaming a committed iteration image by image, for the exporters.

The corpus is read one file group at a time (``Corpus.file_groups``: a shard's files, or
a compacted part's, which hold consecutive shards). DuckDB reads each table's Parquet
file of the group on its own cursor, rows are fetched in batches of ``batch_rows``
(``fetchmany``), and the four streams are merged on (shard, ``image_id``): an exporter
holds one image's rows at a time. A shard's file is read ``ORDER BY`` ``image_id`` and
the table's ``STREAM_ORDER``; a part's file already stores each shard's rows in that
order, one shard after the other, and is read in file order (one thread, insertion order
preserved; the row numbers are checked), its shard told by the row number and the
manifest's rows per shard. Output order is shard order, then ``image_id`` within a
shard, whether the iteration is compacted or not: deterministic for a given corpus.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from engine.corpus import Corpus, CorpusError, FileGroup
from engine.query import connect, sql_literal
from engine.schemas import STREAM_ORDER
from engine.storage import duckdb_connection, sql_path

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


class CorpusReader:
    """Reads one committed iteration of a corpus, image by image."""

    def __init__(
        self,
        corpus_path: str | Path,
        iteration: int | None = None,
        include_dropped: bool = False,
        batch_rows: int = 2048,
        keep_duplicates: bool = False,
        human=None,
    ):
        """``keep_duplicates``: also the images of a duplicate group that are not its
        representative (``engine.dedup``); by default they are skipped (and counted in
        ``skipped_duplicates``). ``human`` (``engine.reviews.HumanLabels``, what a student
        trains on): on the reviewed images people's boxes replace the models' object and
        OCR regions, and the hold-out images are skipped (counted in ``skipped_holdout``),
        as the SSD student's training set does (``pipelines.ssd_student.corpus_examples``)."""
        self.corpus = Corpus(corpus_path)
        self.iteration = self.corpus.select_iteration(iteration)
        self.include_dropped = include_dropped
        self.batch_rows = batch_rows
        self.keep_duplicates = keep_duplicates
        self.skipped_duplicates = 0
        self.human = human
        self.skipped_holdout = 0
        self.reviewed = 0  # images whose regions people's replaced
        self._groups: dict[str, tuple[str, bool]] | None = None

    def duplicate_groups(self) -> dict[str, tuple[str, bool]]:
        """image_id -> (group_id, is_representative) for every image in a duplicate group
        of this iteration (its ``duplicates.parquet``; none: an empty mapping). Held in
        memory: one entry per member of a group, not per image."""
        if self._groups is None:
            from engine.dedup import duplicates_path

            path = duplicates_path(self.corpus, self.iteration)
            self._groups = {}
            if path.exists():
                connection = duckdb_connection(self.corpus.root)
                try:
                    rows = connection.execute(
                        "SELECT image_id, group_id, is_representative FROM "
                        f"read_parquet({sql_literal(sql_path(path))})"
                    ).fetchall()
                finally:
                    connection.close()
                self._groups = {image_id: (group, first) for image_id, group, first in rows}
        return self._groups

    def human_regions(self, image_id: str) -> list[dict]:
        """People's boxes of a reviewed image as region rows (``REGION_COLUMNS``; boxes in
        pixels of the decoded image, as the models' are; score 1; OCR lines without a
        quad, their text in ``label``)."""
        from engine.reviews import HUMAN_SOURCE

        return [
            {
                "region_id": f"{image_id[:16]}:{HUMAN_SOURCE}:r{n}",
                "image_id": image_id,
                "kind": kind,
                "x0": box[0],
                "y0": box[1],
                "x1": box[2],
                "y1": box[3],
                "quad": None,
                "polygon": None,
                "label": label,
                "score": 1.0,
                "source": HUMAN_SOURCE,
                "kept": True,
                "drop_reason": None,
            }  # fmt: skip
            for n, (kind, label, box) in enumerate(self.human.boxes[image_id])
        ]

    def human_categories(self) -> tuple[set[str], bool]:
        """The object labels people gave on the images whose labels replace the models',
        and whether they drew OCR lines there (the categories an export must hold)."""
        if self.human is None:
            return set(), False
        entries = [entry for image_id in self.human.trained for entry in self.human.boxes[image_id]]
        return {label for kind, label, _ in entries if kind == "object"}, any(kind == "ocr" for kind, _, _ in entries)  # fmt: skip

    def split_key(self, image_id: str) -> str:
        """What a train/validation split hashes: the duplicate group's id, so that the
        copies of one image never fall on both sides; the image's own id otherwise."""
        return self.duplicate_groups().get(image_id, (image_id, True))[0]

    @property
    def kept_condition(self) -> str:
        return "TRUE" if self.include_dropped else "kept"

    def connect(self) -> duckdb.DuckDBPyConnection:
        """DuckDB views over this iteration only (for small aggregates such as labels)."""
        return connect(self.corpus.root, [self.iteration])

    def file_groups(self) -> list[FileGroup]:
        return self.corpus.file_groups(self.iteration)

    def images(self) -> Iterator[ImageAnnotations]:
        connection = duckdb_connection(self.corpus.root)
        connection.execute("SET threads = 1")  # one file at a time, rows in order
        connection.execute("SET preserve_insertion_order = true")
        try:
            for group in self.file_groups():
                yield from self._group(connection, group)
        finally:
            connection.close()

    def _stream(self, connection, group: FileGroup, table: str, columns: str, where: str):
        """(shard number within the group, image_id) -> that image's rows, in order."""
        path = group.files.get(table)
        if path is None:
            return iter(())
        cursor = connection.cursor()
        source = f"read_parquet({sql_literal(sql_path(path))})"
        if group.shard_rows is None:  # one shard's file, as written: sort it
            cursor.execute(
                f"SELECT {columns} FROM {source} WHERE {where} "
                f"ORDER BY {', '.join(STREAM_ORDER[table])}"
            )
        else:  # a compacted part: sorted per shard already, read in file order
            source = f"read_parquet({sql_literal(sql_path(path))}, file_row_number = true)"
            cursor.execute(f"SELECT file_row_number, {columns} FROM {source} WHERE {where}")
        names = [d[0] for d in cursor.description]
        ends = list(itertools.accumulate(group.shard_rows[table])) if group.shard_rows else None

        def rows() -> Iterator[tuple[tuple[int, str], dict]]:
            last = -1
            try:
                while batch := cursor.fetchmany(self.batch_rows):
                    for values in batch:
                        row = dict(zip(names, values, strict=True))
                        if ends is None:
                            yield (0, row["image_id"]), row
                            continue
                        number = row.pop("file_row_number")
                        if number <= last:
                            raise CorpusError(f"{path}: rows not read in file order")
                        last = number
                        yield (bisect.bisect_right(ends, number), row["image_id"]), row
            finally:
                cursor.close()

        return (
            (key, [row for _, row in grouped])
            for key, grouped in itertools.groupby(rows(), key=lambda item: item[0])
        )

    def _group(self, connection, group: FileGroup) -> Iterator[ImageAnnotations]:
        kept = self.kept_condition
        images = self._stream(
            connection, group, "images", "image_id, uri, width, height, format", "TRUE"
        )
        streams = {
            "texts": self._stream(connection, group, "texts", TEXT_COLUMNS, kept),
            "regions": self._stream(connection, group, "regions", REGION_COLUMNS, kept),
            "phrases": self._stream(
                connection, group, "phrases", PHRASE_COLUMNS, f"{kept} AND box IS NOT NULL"
            ),
        }
        pending: dict[str, tuple[tuple[int, str], list[dict]] | None] = {
            name: next_group(stream) for name, stream in streams.items()
        }
        groups = self.duplicate_groups()
        for key, image_rows in images:
            membership = groups.get(key[1])
            if membership is not None and not membership[1] and not self.keep_duplicates:
                self.skipped_duplicates += 1  # its rows are passed over below, with the next key
                continue
            found = ImageAnnotations(image=image_rows[0])
            for name, stream in streams.items():
                # rows of images that the images table lacks (none in a sound corpus) are skipped
                while pending[name] is not None and pending[name][0] < key:
                    pending[name] = next_group(stream)
                if pending[name] is not None and pending[name][0] == key:
                    setattr(found, name, pending[name][1])
                    pending[name] = next_group(stream)
            if self.human is not None and key[1] in self.human.holdout:
                self.skipped_holdout += 1  # kept out of training: it judges the student
                continue
            if self.human is not None and key[1] in self.human.trained:
                models = [r for r in found.regions if r["kind"] not in ("object", "ocr")]
                found.regions = models + self.human_regions(key[1])
                self.reviewed += 1
            yield found


def next_group(groups) -> tuple[tuple[int, str], list[dict]] | None:
    for key, rows in groups:
        return key, rows
    return None
