"""Fault battery 3: bad inputs at scale.

A folder of distinct small photos with bad files of every kind mixed in (zero bytes,
truncated, random bytes, text, decompression bombs, tiny) and odd-but-good ones (CMYK,
16-bit, EXIF-rotated, RGBA, animated), spread over the shards by a seeded shuffle.
``fld run`` must exit 0 with exactly one ``errors`` row per bad file, of the right
``error_type``, no row for anything else in ``errors``, and the good files' rows (odd ones
included) equal to those of a run over the good files alone (same folder, same URIs: the
reference runs first, the bad files are added afterwards).

Fast (``make test``): 100 files, 1 of each bad and odd kind, ``--executor local``. Slow
(``make reliability``): 1,000 files, 10 of each bad and odd kind (1% each), on Ray.
"""

from __future__ import annotations

import random
import time

import pytest

from engine.query import connect
from pipelines.annotate import annotate_corpus
from pipelines.config import load_config
from tests.fixtures import imagekit
from tests.fixtures.battery import (
    check_corpus_integrity,
    count_rows,
    fld_command,
    report,
    run,
    small_photo_bytes,
    write_light_config,
)
from tests.fixtures.corpus_tools import all_rows

SHARD_SIZE = 8


def bad_file(kind: str, copy: int) -> tuple[str, bytes, str]:
    """(extension, bytes, expected error_type) of the ``copy``-th distinct bad file."""
    if kind == "zero_bytes":
        return ".jpg", imagekit.zero_bytes(), "empty"
    if kind == "truncated":
        data = small_photo_bytes(1000 + copy)[1]
        return ".jpg", data[: len(data) // 2 + copy], "truncated"
    if kind == "random_bytes":
        return ".png", imagekit.random_bytes(4096 + copy, seed=copy), "not_an_image"
    if kind == "text":
        return ".txt", imagekit.text_file() + f"note {copy}\n".encode(), "not_an_image"
    if kind == "bomb":
        return ".png", imagekit.decompression_bomb_png(20_000 + copy), "decompression_bomb"
    if kind == "tiny":
        return ".png", imagekit.tiny_png(8 + copy % 8), "too_small"
    raise ValueError(kind)


BAD_KINDS = ("zero_bytes", "truncated", "random_bytes", "text", "bomb", "tiny")
ODD_KINDS = ("cmyk", "png16", "exif_rotated", "rgba", "animated")


def odd_file(kind: str, copy: int) -> tuple[str, bytes]:
    width = 150 + copy
    if kind == "cmyk":
        return ".jpg", imagekit.cmyk_jpeg(width)
    if kind == "png16":
        return ".png", imagekit.png16(width)
    if kind == "exif_rotated":
        return ".jpg", imagekit.exif_rotated_jpeg(width, orientation=(6, 8, 3)[copy % 3])
    if kind == "rgba":
        return ".png", imagekit.rgba_png(width)
    if kind == "animated":
        return ".gif", imagekit.animated_gif(width)
    raise ValueError(kind)


def build_inputs(folder, n_files: int, copies: int, seed: int):
    """Write the good files (photos and odd ones) now; return the bad files to add later
    as ``{name: (bytes, error_type)}``, and the odd files' names by kind."""
    rng = random.Random(seed)
    specials = [("bad", kind, c) for kind in BAD_KINDS for c in range(copies)]
    specials += [("odd", kind, c) for kind in ODD_KINDS for c in range(copies)]
    slots = list(range(n_files))
    rng.shuffle(slots)
    placed = dict(zip(slots, specials, strict=False))
    folder.mkdir(parents=True)
    bad: dict[str, tuple[bytes, str]] = {}
    odd: dict[str, tuple[str, int]] = {}
    photo = 0
    for index in range(n_files):
        if index in placed:
            role, kind, copy = placed[index]
            if role == "bad":
                extension, data, error_type = bad_file(kind, copy)
                bad[f"{index:05d}_{kind}{extension}"] = (data, error_type)
                continue
            extension, data = odd_file(kind, copy)
            name = f"{index:05d}_{kind}{extension}"
            odd[name] = (kind, copy)
        else:
            name, data = small_photo_bytes(photo)
            name = f"{index:05d}_{name}"
            photo += 1
        (folder / name).write_bytes(data)
    return bad, odd


def bad_inputs_at_scale(
    executor: list[str], tmp_path, capsys, n_files: int, copies: int, seed: int
) -> None:
    folder = tmp_path / "inputs"
    bad, odd = build_inputs(folder, n_files, copies, seed)
    config_path = write_light_config(tmp_path)
    n_good = n_files - len(bad)

    # The reference: the good files alone (odd ones included), in this process.
    started = time.monotonic()
    reference = tmp_path / "good_only"
    config = load_config(config_path, [f"run.shard_size={SHARD_SIZE}", "run.executor=local"])
    annotate_corpus(config, str(folder), str(reference), show_progress=False)
    reference_seconds = time.monotonic() - started

    for name, (data, _) in bad.items():
        (folder / name).write_bytes(data)
    out = tmp_path / "corpus"
    started = time.monotonic()
    result = run(fld_command(folder, out, config_path, "--shard-size", str(SHARD_SIZE), *executor))
    seconds = time.monotonic() - started
    assert f"{n_good} images" in result.stdout and f"{len(bad)} errors" in result.stdout, (
        result.stdout
    )

    connection = connect(out)
    errors = connection.sql(
        "SELECT regexp_extract(uri, '[^/]+$'), error_type, stage, count(*) OVER (PARTITION BY uri) "
        "FROM errors"
    ).fetchall()
    assert all(row[3] == 1 for row in errors), "a file with more than one errors row"
    assert {row[0]: row[1] for row in errors} == {name: t for name, (_, t) in bad.items()}
    assert {row[2] for row in errors} == {"decode"}

    mixed = all_rows(out)
    good = all_rows(reference)
    assert good["errors"] == []
    for table in ("images", "regions", "texts", "phrases"):
        assert mixed[table] == good[table], f"{table}: good files' rows changed by bad files"
    odd_sizes = dict(
        connection.sql(
            "SELECT regexp_extract(uri, '[^/]+$'), [width, height] FROM images"
        ).fetchall()
    )
    for name, (kind, copy) in odd.items():
        # decoded upright, at the size of the photo it was made from (EXIF applied)
        assert odd_sizes.get(name) == list(imagekit.photo_image(150 + copy).size), (name, kind)
    figures = check_corpus_integrity(out)
    kinds = {}
    for _, error_type in bad.values():
        kinds[error_type] = kinds.get(error_type, 0) + 1
    report(
        capsys,
        f"\n[bad-inputs] {n_files} files: {n_good} good ({len(odd)} odd: {copies} each of "
        f"{', '.join(ODD_KINDS)}), {len(bad)} bad ({copies} each of {', '.join(BAD_KINDS)}); "
        f"exit 0 in {seconds:.1f} s ({'Ray' if '--address' in executor else 'local'}); errors rows by type {dict(sorted(kinds.items()))}; "
        f"{count_rows({t: mixed[t] for t in ('images', 'regions', 'texts', 'phrases')})} good "
        f"rows equal to the good-only run ({reference_seconds:.1f} s); "
        f"{figures['parquet_files']} Parquet files read",
    )


def test_bad_inputs_mixed_in(tmp_path, capsys):
    """100 files through ``fld run --executor local`` (the CLI, in one process: the same
    workers' code without Ray's start-up, to keep ``make test`` short; bad files on Ray are
    in ``tests/integration/test_annotate.py`` and in the slow variant)."""
    bad_inputs_at_scale(["--executor", "local"], tmp_path, capsys, n_files=100, copies=1, seed=7)


@pytest.mark.slow
def test_bad_inputs_at_scale_1000(ray_address, tmp_path, capsys):
    """1,000 files on the session's Ray cluster, 2 workers."""
    executor = ["--address", ray_address, "--workers", "2"]
    bad_inputs_at_scale(executor, tmp_path, capsys, n_files=1000, copies=10, seed=8)
