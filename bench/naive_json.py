"""The naive way against ``fld run`` (issue 7, benchmark 6): how single-machine
auto-labelling scripts work, one image at a time through each model in turn, one JSON file
per image.

The naive script (``--naive IMAGES OUT``) loads the default config's annotators and filters
(the same models and settings as ``fld run``, built by ``workload.pipeline_steps``, so the
two make the same labels), then for every image: read, decode, call each step on a batch of
one, ``json.dump`` the image's rows. It uses the libraries' default threading (every
core), as such a script would. ``fld run`` runs with its defaults (2 workers, 1 thread each,
batch 8) and shards small enough to give both workers work. Each side is a fresh process,
timed from launch to exit (Python start-up, imports and model loading included on both).

    .venv/bin/python bench/naive_json.py            # 48 images
    .venv/bin/python bench/naive_json.py --quick    # 8 images
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for path in (str(REPO), str(BENCH_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)

FLD = Path(sys.executable).with_name("fld")


def json_value(value):
    """numpy scalars and arrays, as JSON (the naive script's ``default=``)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def naive_script(images: Path, out: Path) -> dict:
    """The per-image loop (runs in this process). Returns counts of what it wrote."""
    import workload

    from engine.imaging import DecodeLimits, decode_image
    from engine.records import Sample, content_id
    from pipelines.config import load_config

    threads = os.cpu_count() or 1
    config = load_config(None, [f"run.threads_per_worker={threads}", "run.batch_size=1"])
    steps = workload.pipeline_steps(config)
    limits = DecodeLimits(config.decode.min_side, config.decode.max_pixels)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"images": 0, "regions": 0, "kept_regions": 0, "texts": 0, "phrases": 0}
    for path in sorted(images.iterdir()):
        data = path.read_bytes()
        decoded = decode_image(data, limits)
        sample = Sample(content_id(data), str(path), decoded.pixels, decoded.format, len(data))
        for step in steps:
            step.run([sample])
        record = {
            "image": sample.image_row(0),
            "regions": sample.region_rows(0),
            "texts": sample.text_rows(0),
            "phrases": sample.phrase_rows(0),
        }
        with open(out / f"{path.stem}.json", "w") as handle:
            json.dump(record, handle, default=json_value)
        counts["images"] += 1
        counts["regions"] += len(record["regions"])
        counts["kept_regions"] += sum(1 for row in record["regions"] if row["kept"])
        counts["texts"] += len(record["texts"])
        counts["phrases"] += len(record["phrases"])
    return counts


def timed(command: list[str]) -> tuple[float, str]:
    began = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - began
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    return seconds, completed.stdout


def engine_counts(corpus: Path) -> dict:
    from engine.query import connect

    connection = connect(corpus)
    row = connection.execute(
        "SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM regions), "
        "(SELECT count(*) FROM regions WHERE kept), (SELECT count(*) FROM texts), "
        "(SELECT count(*) FROM phrases)"
    ).fetchall()[0]
    return dict(zip(("images", "regions", "kept_regions", "texts", "phrases"), row, strict=True))


def run(
    quick: bool = False,
    images_dir: Path | None = None,
    n_images: int | None = None,
    repeats: int = 3,
) -> dict:
    """Both arms ``repeats`` times, alternating which runs first; ``speedup`` is the
    median of the per-repeat ratios (naive / fld run), ``spread`` their min and max."""
    import statistics

    import workload

    n_images = n_images or (8 if quick else 48)
    shard_size = max(1, n_images // 6)
    runs = []
    with tempfile.TemporaryDirectory(prefix="fld-naive-") as temporary:
        tmp = Path(temporary)
        images = workload.image_folders([n_images], images_dir, tmp)[n_images]
        for repeat in range(repeats):
            arms = ("naive", "fld run") if repeat % 2 == 0 else ("fld run", "naive")
            seconds = {}
            for arm in arms:
                out = tmp / f"{arm.replace(' ', '_')}_{repeat}"
                print(
                    f"  naive_json: repeat {repeat + 1}, {arm} on {n_images} images ...", flush=True
                )
                if arm == "naive":
                    seconds[arm], stdout = timed(
                        [sys.executable, __file__, "--naive", str(images), str(out)]
                    )
                    naive_counts = json.loads(stdout.strip().splitlines()[-1])
                else:
                    seconds[arm], _ = timed(
                        [str(FLD), "run", str(images), "--out", str(out), "--shard-size",
                         str(shard_size), "--workers", "2"]
                    )  # fmt: skip
                    counts = engine_counts(out)
            runs.append({"first": arms[0], "naive_s": seconds["naive"],
                         "fld_run_s": seconds["fld run"],
                         "ratio": seconds["naive"] / seconds["fld run"]})  # fmt: skip
    ratios = [entry["ratio"] for entry in runs]
    same = naive_counts == counts
    notes = [
        f"naive_json: {n_images} images; naive = one process, images one at a time through "
        f"the default config's annotators and filters, library default threads "
        f"({os.cpu_count()}), one JSON file per image; fld run = 2 workers x 1 thread, batch 8, "
        f"shards of {shard_size}; both timed launch to exit (imports and model loading "
        f"included); {repeats} repeats, arms alternating which runs first, median ratio "
        f"{statistics.median(ratios):.3f}. Same labels: "
        + ("yes" if same else f"NO (naive {naive_counts}, fld run {counts})")
    ]
    return {
        "n_images": n_images,
        "shard_size": shard_size,
        "runs": runs,
        "speedup": statistics.median(ratios),
        "speedup_per_repeat": ratios,
        "naive_counts": naive_counts,
        "fld_run_counts": counts,
        "same_labels": same,
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 images")
    parser.add_argument("--images", type=int, default=None, help="images (default 48)")
    parser.add_argument("--naive", nargs=2, metavar=("IMAGES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive:
        print(json.dumps(naive_script(Path(args.naive[0]), Path(args.naive[1]))))
        return 0
    print(json.dumps(run(quick=args.quick, n_images=args.images), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
