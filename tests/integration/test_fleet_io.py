"""Fleet inputs and outputs, end to end through ``fld`` on the session's Ray cluster:

- an S3 server on loopback (moto's server mode, ``tests/fixtures/s3_server.py``) through the
  same code paths as real S3 (``engine.storage``: pyarrow's S3 client, configured by the
  AWS variables and ``AWS_ENDPOINT_URL``): ``fld run`` from ``s3://`` inputs to an ``s3://``
  corpus, the driver SIGKILLed mid-run and the run resumed, then ``stats``, ``sql``,
  ``export`` and ``refine`` on the stored corpus;
- a URL list (CSV, img2dataset's ``url`` column) served by a local HTTP server, with a
  missing URL and a slow one: workers download, the bad URLs become ``download_failed``
  rows, the good rows equal those of a run on the files.

The rows are compared with the battery's reference run on the same photos as local files
(``tests/fixtures/battery.shared_photo_set``): every row but the URIs is equal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq

from engine.schemas import TABLES
from tests.fixtures.battery import (
    REPO,
    fld_command,
    kill_tree_leftovers,
    report,
    run,
    shared_photo_set,
)
from tests.fixtures.common import run_fld, wait_for
from tests.fixtures.corpus_tools import all_rows
from tests.fixtures.http_server import serve_folder
from tests.fixtures.s3_server import list_keys, upload_folder

STUDENT = [
    "--epochs", "1", "--set", "refine.student.kind=yolo",
    "--set", "refine.student.model=fld-mobilenetv2-yolo.yaml",
    "--set", "refine.student.image_size=128", "--set", "refine.student.min_score=0.0005",
]  # fmt: skip


def by_name(rows: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """Rows with every URI column reduced to the file name (the same photo is
    ``/tmp/.../photos/x.jpg``, ``s3://b/photos/x.jpg`` or ``http://127.0.0.1:P/x.jpg``)."""
    renamed = {}
    for table, table_rows in rows.items():
        names = TABLES[table].names
        column = names.index("uri") if "uri" in names else None
        renamed[table] = sorted(
            tuple(v.rsplit("/", 1)[-1] if i == column else v for i, v in enumerate(row))
            for row in table_rows
        )
    return renamed


def test_s3_corpus_from_s3_inputs_with_a_driver_kill(s3_server, ray_address, tmp_path, tmp_path_factory, capsys):  # fmt: skip
    photos = shared_photo_set(tmp_path_factory)
    s3_server.make_bucket("fld-inputs")
    s3_server.make_bucket("fld-corpora")
    upload_folder(photos["folder"], "s3://fld-inputs/photos")
    out = "s3://fld-corpora/photos-corpus"
    command = fld_command(
        "s3://fld-inputs/photos", out, photos["config"], "--shard-size", str(photos["shard_size"]),
        "--address", ray_address, "--workers", "2",
    )  # fmt: skip
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    markers = lambda: [k for k in list_keys(out) if k.startswith("iteration=0/_shards/")]  # noqa: E731
    try:
        assert wait_for(lambda: len(markers()) >= 2 or driver.poll() is not None, 300, interval=0.05)  # fmt: skip
        assert driver.poll() is None, "the run ended before the driver could be killed"
        driver.send_signal(signal.SIGKILL)
    finally:
        kill_tree_leftovers(driver)
    at_kill = len(markers())
    assert at_kill < 8 and "iteration=0/_COMMITTED" not in list_keys(out)

    resumed = run(command, timeout=600)
    assert "committed iteration 0" in resumed.stdout, resumed.stdout
    keys = list_keys(out)
    assert "iteration=0/_plan.parquet" in keys and "iteration=0/_COMMITTED" in keys
    assert not [k for k in keys if k.endswith(".tmp")], "no temporary objects on a store"
    rows = all_rows(out)
    assert by_name(rows) == by_name(photos["rows"]), "rows differ from the run on local files"
    assert len(rows["images"]) == 16  # nothing lost, nothing twice

    again = run(command, timeout=120)
    assert "nothing to do" in again.stdout
    stats = run_fld("stats", out).stdout
    assert "regions" in stats and "16" in stats, stats
    counted = run_fld("sql", out, "SELECT count(*) AS n FROM regions WHERE kept").stdout
    kept = sum(1 for row in photos["rows"]["regions"] if row[TABLES["regions"].names.index("kept")])  # fmt: skip
    assert str(kept) in counted.split(), counted
    coco = tmp_path / "coco"
    run_fld("export", out, "--format", "coco", "--out", str(coco), "--keep-duplicates")
    exported = json.loads(next(coco.glob("*.json")).read_text())
    assert len(exported["images"]) == 16

    first = sorted(p.name for p in photos["folder"].iterdir())[0]
    drawn = tmp_path / "shown.png"
    run_fld("show", out, first, "--out", str(drawn))
    assert drawn.stat().st_size > 1000
    run_fld("report", out, "--out", str(tmp_path / "report.html"), "--samples", "2")
    assert "fld-engine corpus report" in (tmp_path / "report.html").read_text()
    compacted = run_fld("compact", out, "--target-rows", "200").stdout
    assert "data files before" in compacted, compacted
    assert [k for k in list_keys(out) if "/part=" in k] and not [k for k in list_keys(out) if "/shard=" in k]  # fmt: skip
    assert all_rows(out) == rows  # the same rows, read from the parts

    refined = run_fld("refine", out, "--iterations", "1", "--address", ray_address, "--quiet", *STUDENT, timeout=900)  # fmt: skip
    assert "committed iteration 1" in refined.stdout, refined.stdout
    keys = list_keys(out)
    assert {"models/iteration=1/student.pt", "models/iteration=1/student.json", "iteration=1/_COMMITTED"} <= set(keys)  # fmt: skip
    rows_1 = all_rows(out)["images"]
    assert len(rows_1) == 32  # iterations 0 and 1, every image in each
    report(
        capsys,
        f"[s3] fld run s3:// -> s3:// (moto on loopback): driver killed with {at_kill} of 8 "
        f"shard markers stored, resumed: {len(rows['regions'])} region rows equal to the local "
        f"run; stats, sql, export (16 images), show, report, compact and refine (iteration 1 "
        "committed) on the store",
    )


def test_url_list_downloaded_by_workers(ray_address, tmp_path, tmp_path_factory, capsys):
    photos = shared_photo_set(tmp_path_factory)
    names = sorted(p.name for p in photos["folder"].iterdir())
    with serve_folder(photos["folder"], slow_paths={"slow.jpg": 20.0}, status_paths={"gone.jpg": 404}) as served:  # fmt: skip
        urls = [served + name for name in names] + [served + "missing.jpg", served + "slow.jpg"]
        listing = tmp_path / "urls.csv"
        listing.write_text("url,caption\n" + "".join(f"{url},a photo\n" for url in urls))
        out = tmp_path / "corpus"
        began = time.monotonic()
        result = run(
            fld_command(
                listing,
                out,
                photos["config"],
                "--shard-size",
                "4",
                "--address",
                ray_address,
                "--set",
                "input.download.timeout_s=2",
                "--set",
                "input.download.retries=1",
            ),  # fmt: skip
            timeout=600,
        )
        seconds = time.monotonic() - began
        hits = dict(served.hits)
    assert "committed iteration 0" in result.stdout, result.stdout
    rows = all_rows(out)
    errors = rows.pop("errors")
    failed = {row[3].rsplit("/", 1)[-1]: row for row in errors}
    assert set(failed) == {"missing.jpg", "slow.jpg"} and len(errors) == 2, errors
    assert all(row[5] == "download_failed" and row[4] == "read" for row in errors)
    assert "404" in failed["missing.jpg"][6] and "timed out" in failed["slow.jpg"][6]
    reference = dict(photos["rows"])
    reference.pop("errors")
    assert by_name(rows) == by_name(reference)
    assert hits["missing.jpg"] == 1 and hits["slow.jpg"] == 2  # a 404 is final; a timeout retried
    plan = pq.read_table(Path(out) / "iteration=0" / "_plan.parquet").column("uri").to_pylist()
    assert plan == sorted(urls)
    report(
        capsys,
        f"[urls] {len(urls)} URLs from a CSV list over a local HTTP server: {len(rows['images'])} "
        f"images with rows equal to the run on the files, download_failed for missing.jpg "
        f"(404, 1 request) and slow.jpg (timed out, 2 requests); {seconds:.1f} s",
    )


def test_unsupported_scheme_is_a_clear_error(tmp_path):
    result = run_fld("run", "demo/images", "--out", "nosuch://bucket/corpus", check=False)
    assert result.returncode == 2
    assert "unsupported scheme nosuch://" in result.stderr
    assert not Path("nosuch:").exists() and not (REPO / "nosuch:").exists()
    assert os.environ.get("PWD") is None or not (Path(os.environ["PWD"]) / "nosuch:").exists()
