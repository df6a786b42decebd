"""Shared helpers of the fault battery (``tests/reliability``).

- ``LIGHT_CONFIG``: SSD only, no spaCy filters: fast runs that still go through the whole
  engine (reading, decoding, an annotator, the region filters, the captioners' absence,
  Parquet, markers, commit).
- ``small_photos(folder, n)``: ``n`` distinct small photos (about 160 px wide) made from the
  demo photos: each copy differs in width, flip and JPEG quality, so every file has its own
  bytes and therefore its own ``image_id``.
- ``check_corpus_integrity(corpus)``: what a killed writer must never leave behind (an
  unreadable Parquet file, a marker without its five files (those of the compacted part
  that holds its shard, once an iteration has a ``_COMPACTED.json``), temporaries after a
  run, duplicated row ids), returning the figures it checked.
- ``fld_command(...)``: the ``fld run`` command line of a test, as a list.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from conftest import wait_for  # noqa: F401 - re-exported to the battery tests
from PIL import Image

from engine.query import connect
from engine.schemas import ROW_ID, TABLES

REPO = Path(__file__).resolve().parents[2]
DEMO_IMAGES = REPO / "demo" / "images"
BIN = Path(sys.executable).parent

LIGHT_CONFIG = """\
# The fault battery's light pipeline: one detector, the region filters, no spaCy.
# input_size 160 (the photos are about 160 px wide): 3x less CPU than 300 on SSD.
annotators:
  - {name: ssd_coco, input_size: 160}
filters:
  text_complexity: {enabled: false}
  phrase_confidence: {enabled: false}
"""


def write_light_config(folder: Path) -> Path:
    path = folder / "light.yaml"
    path.write_text(LIGHT_CONFIG)
    return path


def demo_photos() -> list[Path]:
    return sorted(p for p in DEMO_IMAGES.iterdir() if p.is_file() and not p.name.startswith("."))


def small_photo_bytes(index: int, base_width: int = 160) -> tuple[str, bytes]:
    """The ``index``-th distinct small photo: (file name, JPEG bytes). Deterministic."""
    photos = demo_photos()
    source = photos[index % len(photos)]
    variant = index // len(photos)
    width = base_width + (variant % 23)  # 160..182 px wide
    flip = (variant // 23) % 2 == 1
    quality = 90 - (variant // 46) % 30
    with Image.open(source) as image:
        image = image.convert("RGB")
        height = max(16, round(image.height * width / image.width))
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
    return f"{index:05d}_{source.stem}.jpg", buffer.getvalue()


def small_photos(folder: Path, n: int, base_width: int = 160) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(n):
        name, data = small_photo_bytes(index, base_width)
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def fld_command(input_path: Path, out: Path, config: Path, *extra: str) -> list[str]:
    return [
        str(BIN / "fld"), "run", str(input_path), "--out", str(out), "--config", str(config),
        "--quiet", *extra,
    ]  # fmt: skip


def run(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result


def marker_count(corpus: Path, iteration: int = 0) -> int:
    markers = corpus / f"iteration={iteration}" / "_shards"
    return len(list(markers.glob("*.json"))) if markers.is_dir() else 0


def check_corpus_integrity(corpus: Path, allow_temporaries: bool = False) -> dict:
    """Every Parquet file under ``corpus`` opens and reads in full; every shard marker has
    its five table files, each readable; no temporaries (unless ``allow_temporaries``:
    the state a killed writer may leave); no row id twice in a committed table.
    Returns what was checked."""
    figures = {"parquet_files": 0, "markers": 0, "temporaries": 0, "rows": 0}
    unreadable = []
    for path in sorted(corpus.rglob("*.parquet")):
        figures["parquet_files"] += 1
        try:
            pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
            unreadable.append(f"{path}: {type(exc).__name__}: {exc}")
    assert not unreadable, "unreadable Parquet files:\n" + "\n".join(unreadable)
    temporaries = [p for p in corpus.rglob(".*.tmp")]
    figures["temporaries"] = len(temporaries)
    if not allow_temporaries:
        assert not temporaries, f"temporaries left: {temporaries}"
    for iteration_dir in sorted(corpus.glob("iteration=*")):
        compacted = iteration_dir / "_COMPACTED.json"  # engine/compact.py: parts replace shards
        in_part = {}
        if compacted.exists():
            for part in json.loads(compacted.read_text())["parts"]:
                in_part.update(dict.fromkeys(part["shards"], part))
        for marker in sorted((iteration_dir / "_shards").glob("*.json")):
            figures["markers"] += 1
            json.loads(marker.read_text())  # a marker is whole JSON, never half written
            for table in TABLES:
                path = iteration_dir / table / f"shard={marker.stem}.parquet"
                if marker.stem in in_part:
                    path = iteration_dir / in_part[marker.stem]["files"][table]
                assert path.is_file(), f"marker {marker} without its file {path}"
        if (iteration_dir / "_COMMITTED").exists():
            plan = json.loads((iteration_dir / "_plan.json").read_text())
            markers = len(list((iteration_dir / "_shards").glob("*.json")))
            assert markers == plan["n_shards"], f"{iteration_dir}: committed with missing shards"
    if any(corpus.glob("iteration=*/_COMMITTED")):
        connection = connect(corpus)
        for table, row_id in ROW_ID.items():
            total, distinct = connection.execute(  # ids repeat across iterations only
                f"SELECT count(*), count(DISTINCT ({row_id}, iteration)) FROM {table}"
            ).fetchall()[0]
            assert total == distinct, f"{table}: {total - distinct} duplicated {row_id}"
            figures["rows"] += total
    return figures


PHOTO_SET_SIZE = 16  # photos of the shared set
PHOTO_SET_SHARD = 2  # images per shard: 8 shards
_shared: dict = {}


def shared_photo_set(tmp_path_factory) -> dict:
    """One folder of small photos for the whole session, its light config, and the rows of
    an uninterrupted reference run (in this process, ``LocalExecutor``; the same rows as on
    Ray, which ``tests/test_annotate.py`` checks). Made once, read by several modules:
    ``folder``, ``config``, ``shard_size``, ``reference`` (a committed corpus),
    ``rows`` (``all_rows`` of it), ``seconds`` (the reference run's wall time)."""
    if not _shared:
        from corpus_tools import all_rows

        from pipelines.annotate import annotate_corpus
        from pipelines.config import load_config

        base = tmp_path_factory.mktemp("battery")
        folder = base / "photos"
        small_photos(folder, PHOTO_SET_SIZE)
        config_path = write_light_config(base)
        reference = base / "reference"
        config = load_config(
            config_path, [f"run.shard_size={PHOTO_SET_SHARD}", "run.executor=local"]
        )
        started = time.monotonic()
        annotate_corpus(config, str(folder), str(reference), show_progress=False)
        seconds = time.monotonic() - started
        _shared.update(
            folder=folder, config=config_path, shard_size=PHOTO_SET_SHARD, reference=reference,
            rows=all_rows(reference), seconds=seconds,
        )  # fmt: skip
        print(
            f"\n[battery] reference run: {PHOTO_SET_SIZE} photos, "
            f"{count_rows(_shared['rows'])} rows, {seconds:.1f} s"
        )
    return _shared


def report(capsys, text: str) -> None:
    """Print a test's figures past pytest's output capture, so that ``make test`` and
    ``make reliability`` (which run without ``-s``) show them."""
    with capsys.disabled():
        print("\n" + text.strip("\n"), flush=True)


def count_rows(rows: dict[str, list[tuple]]) -> int:
    return sum(len(table_rows) for table_rows in rows.values())


def kill_tree_leftovers(process: subprocess.Popen) -> None:
    """Reap a killed ``fld`` process (its Ray actors die with their owner)."""
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, 9)
        process.wait()
