"""Would a worker start sooner if its steps loaded their models at the same time? The
default config's steps set up one after another (as ``ShardProcessor.setup`` does) against
all at once in threads (the two spaCy steps in one thread, in order, since they share one
pipeline), each arm in a fresh process, alternating which runs first.

    .venv/bin/python bench/setup_parallel.py              # 5 alternated pairs

Measured: the seconds from the first step's ``setup()`` to the last one's end (the
imports they trigger included: that is most of a step's set-up), per arm; the median of
the per-pair ratios threads / in turn. Writes ``bench/results/setup_parallel.json`` (and
its history copy). Issue 27 asked for threads ("the big ones release the GIL"); this says
whether they pay on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (str(REPO), str(REPO / "bench")):
    if path not in sys.path:
        sys.path.insert(0, path)

from results_store import new_run_id, save_result  # noqa: E402

SHARED_SPACY = ("phrase_extractor", "text_complexity")


def child(mode: str) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from engine.steps import worker_context
    from pipelines.config import load_config

    config = load_config(None)
    steps = [spec.build() for spec in config.annotators] + config.filters.build()
    worker = worker_context(1)
    seconds: dict[str, float] = {}

    def setup(step) -> None:
        began = time.perf_counter()
        step.setup(worker)
        seconds[step.name] = round(time.perf_counter() - began, 3)

    began = time.perf_counter()
    if mode == "in_turn":
        for step in steps:
            setup(step)
    else:
        spacy_steps = [s for s in steps if s.name in SHARED_SPACY]
        others = [s for s in steps if s.name not in SHARED_SPACY]
        with ThreadPoolExecutor(len(others) + 1) as pool:
            futures = [pool.submit(lambda: [setup(s) for s in spacy_steps])]
            futures += [pool.submit(setup, step) for step in others]
            for future in futures:
                future.result()
    return {"seconds": round(time.perf_counter() - began, 3), "steps": seconds}


def measure(mode: str) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", mode], capture_output=True, text=True,
        check=True, cwd=REPO, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    from machine import describe_machine

    run_id = new_run_id()
    measure("in_turn")  # unmeasured: the OS file cache warms up
    pairs = []
    for repeat in range(args.repeats):
        order = ("in_turn", "threads") if repeat % 2 == 0 else ("threads", "in_turn")
        pair = {mode: measure(mode) for mode in order}
        pair["ratio"] = round(pair["threads"]["seconds"] / pair["in_turn"]["seconds"], 4)
        pairs.append(pair)
        print(f"repeat {repeat + 1}: in turn {pair['in_turn']['seconds']:.2f} s, threads "
              f"{pair['threads']['seconds']:.2f} s", file=sys.stderr)  # fmt: skip
    ratios = [p["ratio"] for p in pairs]
    result = {
        "benchmark": "setup_parallel",
        "run_id": run_id,
        "pairs": pairs,
        "headlines": [
            {
                "measure": "worker set-up, all steps in threads / one after another",
                "ratio": round(statistics.median(ratios), 3),
                "spread": [min(ratios), max(ratios)],
                "target": None,
                "met": None,
            }
        ],
        "machine": describe_machine(),
    }
    kept = save_result("setup_parallel", result, run_id)
    print(json.dumps(result["headlines"], indent=2))
    print(f"kept: {kept}")


if __name__ == "__main__":
    main()
