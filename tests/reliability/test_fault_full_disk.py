"""Fault battery 7: output on a full or read-only disk.

The test mounts its own small tmpfs (we run as root; it skips, saying why, where ``mount``
is refused) and runs ``fld run`` into it:

- full: the tmpfs is filled but for about 48 KB, so the disk fills in the middle of the
  first shards. ``fld run`` must exit 1 with one line naming the corpus and saying "No
  space left on device" (no traceback), commit nothing, leave every visible Parquet file
  readable and no marker without its files; once space is freed, the same command resumes
  to rows equal to an uninterrupted run's.
- read-only from the start: exit 2 before any work ("--out ... is not writable
  (Read-only file system)"), nothing written.
- read-only in the middle of a run (slow): the tmpfs is remounted read-only after the first
  shard; exit 1 with "Read-only file system", nothing committed; remounted read-write, the
  run resumes to the same rows.
"""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine.query import connect
from pipelines.annotate import annotate_corpus
from pipelines.config import load_config
from tests.fixtures.battery import (
    REPO,
    check_corpus_integrity,
    count_rows,
    fld_command,
    marker_count,
    report,
    shared_photo_set,
    wait_for,
)
from tests.fixtures.corpus_tools import all_rows


@contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True, text=True,
        )  # fmt: skip
    except FileNotFoundError:
        pytest.skip("no mount command here: cannot make a small file system to fill")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield path
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, mode: str, timeout: float = 30) -> bool:
    """Remount ``ro`` or ``rw``; a remount read-only is refused (EBUSY) while a file is open
    for writing, so retry until the writer is between two files."""
    return wait_for(
        lambda: subprocess.run(
            ["mount", "-o", f"remount,{mode}", str(path)], capture_output=True
        ).returncode == 0,
        timeout=timeout, interval=0.001,
    )  # fmt: skip


def fill(path: Path, leave: int) -> Path:
    """Fill the file system of ``path`` but for ``leave`` bytes."""
    stats = os.statvfs(path)
    filler = path / "filler.bin"
    filler.write_bytes(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))
    return filler


def run_cli(photos: dict, out: Path) -> subprocess.CompletedProcess:
    command = fld_command(
        photos["folder"], out, photos["config"], "--shard-size", str(photos["shard_size"]),
        "--executor", "local",
    )  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)


def one_clear_line(stderr: str, words: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    assert words in lines[0], lines[0]
    return lines[0]


def nothing_visible(out: Path) -> dict:
    assert not (out / "iteration=0" / "_COMMITTED").exists()
    figures = check_corpus_integrity(out, allow_temporaries=True)
    if out.exists():
        assert connect(out).execute("SELECT count(*) FROM regions").fetchall()[0][0] == 0
    return figures


def resume_in_process(photos: dict, out: Path) -> dict:
    config = load_config(
        photos["config"], [f"run.shard_size={photos['shard_size']}", "run.executor=local"]
    )
    summary = annotate_corpus(config, str(photos["folder"]), str(out), show_progress=False)
    check_corpus_integrity(out)
    rows = all_rows(out)
    assert rows == photos["rows"]
    return {"resumed": summary.shards_done_before, "rows": count_rows(rows)}


def test_full_disk_gives_one_clear_line_and_resumes(tmp_path, tmp_path_factory, capsys):
    photos = shared_photo_set(tmp_path_factory)
    with tmpfs(tmp_path / "disk", "1m") as disk:
        filler = fill(disk, leave=48 * 1024)
        out = disk / "corpus"
        started = time.monotonic()
        result = run_cli(photos, out)
        seconds = time.monotonic() - started
        assert result.returncode == 1, result.stderr[-3000:]
        line = one_clear_line(result.stderr, "No space left on device")
        assert str(out) in line
        markers = marker_count(out)
        # where the fault is meant to land: after some shards were written, before the last
        assert 0 < markers < 8, f"the disk filled after {markers} of 8 shards"
        figures = nothing_visible(out)
        filler.unlink()
        resumed = resume_in_process(photos, out)
        assert resumed["resumed"] == markers
    report(
        capsys,
        f"\n[full-disk] 1 MB tmpfs with 48 KB free: exit 1 after {seconds:.1f} s with "
        f"{markers} of 8 shards written, stderr: {line!r}; nothing committed, "
        f"{figures['parquet_files']} visible Parquet files read, {figures['temporaries']} "
        f"temporaries; after freeing space: {resumed['resumed']} shards resumed, "
        f"{resumed['rows']} rows equal to the reference",
    )


def test_read_only_disk_fails_before_any_work(tmp_path, tmp_path_factory, capsys):
    photos = shared_photo_set(tmp_path_factory)
    with tmpfs(tmp_path / "disk", "1m") as disk:
        assert remount(disk, "ro", timeout=5)
        out = disk / "corpus"
        started = time.monotonic()
        result = run_cli(photos, out)
        seconds = time.monotonic() - started
        assert result.returncode == 2, result.stderr
        line = one_clear_line(result.stderr, "Read-only file system")
        assert "--out" in line and not out.exists()
        assert seconds < 5, seconds
    report(capsys, f"\n[read-only] exit 2 in {seconds:.1f} s: {line!r}; nothing written")


@pytest.mark.slow
def test_disk_turning_read_only_mid_run(tmp_path, tmp_path_factory, capsys):
    photos = shared_photo_set(tmp_path_factory)
    with tmpfs(tmp_path / "disk", "8m") as disk:
        out = disk / "corpus"
        command = fld_command(
            photos["folder"], out, photos["config"], "--shard-size", str(photos["shard_size"]),
            "--executor", "local",
        )  # fmt: skip
        driver = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert wait_for(lambda: marker_count(out) >= 1 or driver.poll() is not None, 300)
            assert remount(disk, "ro"), "could not remount read-only"
            stdout, stderr = driver.communicate(timeout=300)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        markers = marker_count(out)
        assert driver.returncode == 1, (markers, stdout, stderr[-3000:])
        assert markers < 8, "the disk turned read-only after the last shard"
        line = one_clear_line(stderr, "Read-only file system")
        figures = nothing_visible(out)
        assert remount(disk, "rw")
        resumed = resume_in_process(photos, out)
        assert resumed["resumed"] == markers
    report(
        capsys,
        f"\n[read-only mid-run] remounted read-only after the first shard: exit 1 with "
        f"{markers} of 8 shards written, stderr: {line!r}; nothing committed, "
        f"{figures['parquet_files']} Parquet files read; remounted read-write: "
        f"{resumed['resumed']} shards resumed, {resumed['rows']} rows equal to the reference",
    )
