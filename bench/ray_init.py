"""What ``ray.init`` costs, and what its extras add (``.venv/bin/python bench/ray_init.py
[--rounds 5]``): issue 27 asks to measure Ray's start with its dashboard, log monitor and
other extras off.

Three arms, each in a fresh process (the cost a ``fld run`` on Ray pays), alternated per
round; the median of the rounds is reported, and every round is kept:

- ``default``: ``ray.init(num_cpus=2)`` as a user would call it (dashboard included when
  its packages are installed);
- ``engine``: the options ``engine.executors.RayExecutor.start_ray`` uses (no dashboard,
  WARNING logging);
- ``bare``: the engine's, plus every other extra off: no log streaming to the driver
  (``log_to_driver=False``: the log monitor has nothing to send), usage stats
  (``RAY_USAGE_STATS_ENABLED=0``) and metrics collection (``RAY_enable_metrics_collection=0``)
  off.

Each arm reports seconds to ``ray.init`` returning, to the first task's result (a
``@ray.remote`` no-op: a worker process started and used), and to ``ray.shutdown``. Writes
``bench/results/ray_init.json`` and its history copy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from results_store import new_run_id, save_result  # noqa: E402

CHILD = r"""
import json, os, sys, time
started = time.perf_counter()
import ray
imported = time.perf_counter()
arm = sys.argv[1]
if arm == "default":
    ray.init(num_cpus=2)
else:
    options = {"num_cpus": 2, "include_dashboard": False, "logging_level": "WARNING", "configure_logging": True}
    options["log_to_driver"] = arm != "bare"
    ray.init(**options)
initialised = time.perf_counter()
ray.get(ray.remote(lambda: 1).remote())
first_task = time.perf_counter()
ray.shutdown()
stopped = time.perf_counter()
print(json.dumps({"import_s": imported - started, "init_s": initialised - imported,
                  "first_task_s": first_task - initialised, "shutdown_s": stopped - first_task,
                  "total_s": stopped - started}))
"""
ARMS = ("default", "engine", "bare")


def run_arm(arm: str) -> dict:
    env = dict(os.environ)
    if arm == "bare":
        env.update(RAY_USAGE_STATS_ENABLED="0", RAY_enable_metrics_collection="0")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, arm],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,  # fmt: skip
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    run_id = new_run_id()
    ray_cli = Path(sys.executable).parent / "ray"
    subprocess.run([str(ray_cli), "stop", "--force"], capture_output=True, check=False)
    rounds = []
    for number in range(args.rounds):
        order = ARMS if number % 2 == 0 else tuple(reversed(ARMS))
        rounds.append({arm: run_arm(arm) for arm in order})
        print(json.dumps(rounds[-1]), flush=True)
    medians = {
        arm: {
            key: round(statistics.median(r[arm][key] for r in rounds), 3) for key in rounds[0][arm]
        }  # fmt: skip
        for arm in ARMS
    }
    ratios = {
        f"{arm}/engine": {
            key: round(statistics.median(r[arm][key] / r["engine"][key] for r in rounds), 3)
            for key in ("init_s", "first_task_s", "total_s")
        }
        for arm in ("default", "bare")
    }
    payload = {"run_id": run_id, "rounds": rounds, "medians": medians, "ratios": ratios}
    path = save_result("ray_init", payload, run_id)
    print(json.dumps({"medians": medians, "ratios": ratios}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
