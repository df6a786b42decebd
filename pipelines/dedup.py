"""``fld dedup CORPUS``: the duplicates table of a committed iteration, made again (other
``--max-distance``), or made for the first time for a corpus written before images had
hashes: such an iteration's images are read and decoded again as it decoded them, hashed
(``engine.dedup.image_hashes``), and the hashes written beside its rows, one file per
shard (or compacted part) under ``iteration=K/_dedup/`` (image_id, pixel_sha256, phash),
each written whole or not at all: a killed ``fld dedup`` resumes with the files it has.
An image that cannot be read or decoded any more gets no hash and is grouped with nothing.
"""

from __future__ import annotations

import sys

import duckdb
import pyarrow as pa
from tqdm import tqdm

from engine.corpus import Corpus, atomic_write_parquet
from engine.dedup import HASHES_DIR, hashes_schema, image_hashes, write_duplicates
from engine.imaging import ImageError
from engine.query import sql_literal
from engine.sources import ByteReader
from engine.storage import StorePath, duckdb_connection, sql_path


def images_without_hashes(corpus: Corpus, iteration: int) -> bool:
    """Whether some image of ``iteration`` has no ``pixel_sha256`` (its files were written
    before images had hashes); one scan of the images files."""
    files = corpus.table_files("images", [iteration])
    if not files:
        return False
    listed = ", ".join(sql_literal(sql_path(path)) for path in files)
    connection = duckdb_connection(corpus.root)
    try:
        # union_by_name: a file without the column reads it as NULL.
        return connection.execute(
            "SELECT count(*) FILTER (pixel_sha256 IS NULL) > 0 FROM "
            f"read_parquet([{listed}], union_by_name = true)"
        ).fetchone()[0]
    except duckdb.BinderException:  # no file has the column at all
        return True
    finally:
        connection.close()


def hash_iteration(corpus: Corpus, iteration: int, show_progress: bool = True) -> int:
    """Hash the images of ``iteration``'s file groups that have no hash file yet; returns
    how many images were hashed now."""
    folder = corpus.iteration_dir(iteration) / HASHES_DIR
    groups = [g for g in corpus.file_groups(iteration) if "images" in g.files]
    todo = [g for g in groups if not (folder / f"{g.name}.parquet").exists()]
    if not todo:
        return 0
    if not isinstance(folder, StorePath):  # a store has no folders to make
        folder.mkdir(parents=True, exist_ok=True)
    connection = duckdb_connection(corpus.root)
    reader = ByteReader()
    hashed = 0
    try:
        with tqdm(total=len(todo), unit="shard", desc=f"hashing iteration {iteration}",
                  disable=not show_progress, file=sys.stderr) as progress:  # fmt: skip
            for group in todo:
                rows = connection.execute(
                    f"SELECT image_id, uri FROM read_parquet({sql_literal(sql_path(group.files['images']))}) ORDER BY image_id"  # fmt: skip
                ).fetchall()
                out = {"image_id": [], "pixel_sha256": [], "phash": [], "phash_crops": []}
                for image_id, uri in rows:
                    try:
                        hashes = image_hashes(corpus.load_image(uri, iteration, reader))
                    except (OSError, ImageError, ValueError, KeyError):
                        hashes = {"pixel_sha256": None, "phash": None, "phash_crops": None}
                    out["image_id"].append(image_id)
                    for column in ("pixel_sha256", "phash", "phash_crops"):
                        out[column].append(hashes[column])
                    hashed += 1
                atomic_write_parquet(folder / f"{group.name}.parquet", pa.table(out, schema=hashes_schema()))  # fmt: skip
                progress.update(1)
    finally:
        reader.close()
        connection.close()
    return hashed


def dedup_corpus(corpus_path, iteration: int | None = None, settings: dict | None = None, show_progress: bool = True) -> dict:  # fmt: skip
    """Hash what lacks hashes, then group; returns the facts (the committed ``run.json``
    is not rewritten: ``fld dedup`` prints them)."""
    corpus = Corpus(corpus_path)
    chosen = corpus.select_iteration(iteration)
    hashed = hash_iteration(corpus, chosen, show_progress) if images_without_hashes(corpus, chosen) else 0  # fmt: skip
    facts = write_duplicates(corpus, chosen, settings)
    return {"iteration": chosen, "hashed_now": hashed, **facts}
