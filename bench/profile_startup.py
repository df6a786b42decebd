"""Where ``fld run``'s start-up goes: the seconds from launching the command to the first
shard being processed, by phase, on the driver and in the worker.

    .venv/bin/python bench/profile_startup.py               # demo/images, 1 worker, 1 thread
    .venv/bin/python bench/profile_startup.py --repeats 3   # median of 3 of each measurement
    .venv/bin/python bench/profile_startup.py --py-spy      # also write py-spy flame graphs
    .venv/bin/python bench/profile_startup.py --set run.batch_size=1 --input some/folder

Two measurements, each in a fresh Python process (so imports are paid as ``fld run`` pays
them; the OS file cache is warm after the first run):

1. **run** (the real code path): ``pipelines.cli.main(["run", ...])`` with the Ray executor,
   ``run.workers=1``, ``run.threads_per_worker=1``. Timestamps come from thin wrappers
   around the engine's own functions (``load_config``, ``list_inputs``, the plan,
   ``RayExecutor.start_ray``, ``IterationWriter.write_shard`` ...) and, inside the Ray
   worker, from a ``ShardProcessor`` subclass that times the ``setup()`` of each annotator
   and filter that loads something (the classes' methods are wrapped in the worker;
   nothing else changes). Phases: python start + ``import pipelines.cli``;
   ``load_config``; ``import pipelines.annotate``; listing and planning; ``import ray``;
   ``ray.init``; actor start (Ray starts a worker process, which imports ray and unpickles
   the processor); the worker's ``setup()`` step by step; first shard; the rest.
2. **worker** (imports, by package): what the actor does, replayed in a plain process run
   with ``python -X importtime``: ``import ray`` (a Ray worker has it before the actor
   starts), unpickle the processor, then ``ShardProcessor.setup()``; the import self-time
   of every top-level package is attributed to the step that triggered it.

``--py-spy`` runs both once more, untimed, under ``py-spy record --nonblocking --format
speedscope`` (the run with ``--subprocesses``, so the Ray worker is sampled too), and writes
``bench/results/startup_run.speedscope.json`` and ``startup_worker.speedscope.json``; open
them at https://www.speedscope.app. By hand, the same::

    .venv/bin/py-spy record --subprocesses --nonblocking --format speedscope \\
        -o /tmp/fld-run.speedscope.json -- .venv/bin/fld run demo/images --out /tmp/x \\
        --workers 1 --quiet

py-spy needs ptrace permission on the processes it samples; it works here (as root, and
on the processes it starts itself); elsewhere ``kernel.yama.ptrace_scope`` may have to be
lowered, or py-spy run with sudo.

With ``--py-spy`` a third table lists where the worker replay's samples fall in the
engine's own code (the deepest frame in ``annotators/``, ``filters/``, ``engine/``,
``pipelines/``): the ``import`` line of a ``setup()`` collects the whole import it started.

Result: a table of seconds per phase on stdout and ``bench/results/startup_profile.json``
(machine and load average included: start-up is mostly imports and file reads, so other
load on the machine shows directly in these numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
for _path in (str(REPO), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from results_store import new_run_id, save_result  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
DEMO_IMAGES = REPO / "demo" / "images"
MARK = "##fld-phase "  # a line on stderr between -X importtime's lines: "a new phase starts"
TOP_PACKAGES = 6  # packages listed per worker phase


def now() -> float:
    return time.time()


def process_started() -> float:
    """Epoch seconds at which this process was created (Python's own start included)."""
    import psutil

    return psutil.Process().create_time()


# --------------------------------------------------------------------------- timing hooks


def wrap_setup_methods(classes, events: list) -> None:
    """Time ``setup()`` of the given annotator and filter classes, in this process (the
    class attribute is wrapped); each call appends ``(label, start, end, cpu_seconds)`` to
    ``events`` and, under ``-X importtime``, marks its imports on stderr."""
    import functools

    for label, cls in classes:
        original = cls.setup
        if getattr(original, "_fld_profiled", False):
            continue

        def timed(self, *args, _original=original, _label=label, **kwargs):
            mark(_label)
            began, cpu = now(), time.process_time()
            try:
                return _original(self, *args, **kwargs)
            finally:
                events.append((_label, began, now(), time.process_time() - cpu))
                mark("setup (rest)")

        timed = functools.wraps(original)(timed)
        timed._fld_profiled = True
        cls.setup = timed


def configured_classes(config) -> list[tuple[str, type]]:
    """The configured annotator and filter classes that load something in ``setup()``
    (those that keep the base class's no-op are left out: nothing to time)."""
    from annotators import annotator_class
    from annotators.base import Annotator
    from filters import filter_class
    from filters.base import Filter

    classes = [(f"setup: {spec.name}", annotator_class(spec.name)) for spec in config.annotators]
    for step in config.filters.build():
        classes.append((f"setup: filter {step.name}", filter_class(step.name)))
    return [
        (label, cls) for label, cls in classes if cls.setup not in (Annotator.setup, Filter.setup)
    ]


def mark(label: str) -> None:
    """A phase marker on stderr, in order with ``-X importtime``'s lines (raw fd writes)."""
    if os.environ.get("FLD_PROFILE_MARKS"):
        os.write(2, f"{MARK}{label}\n".encode())


def _profiled_processor_class():
    """A ``ShardProcessor`` that records, in the worker, when its setup began and ended,
    every step inside it, and the worker's pid and process start time; they go into each
    shard's marker as ``marker["startup_profile"]``. Defined in ``__main__`` of the run
    child, so Ray pickles it by value."""
    from pipelines.annotate import ShardProcessor

    class ProfiledShardProcessor(ShardProcessor):
        def setup(self) -> None:
            events: list = []
            self.profile = {"pid": os.getpid(), "process_started": process_started()}
            self.profile["code"] = sys.modules[ShardProcessor.__module__].__file__
            self.profile["setup_start"] = now()
            wrap_setup_methods(configured_classes(self.config), events)
            cpu = time.process_time()
            super().setup()
            self.profile["setup_end"] = now()
            self.profile["setup_cpu_s"] = time.process_time() - cpu
            self.profile["steps"] = events

        def process(self, shard):
            result = super().process(shard)
            # run.setup: overlapped: setup() returns at once; the steps load in a thread.
            self.profile["loaded_at"] = self.loader.loaded_at if self.loader else None
            result.marker["startup_profile"] = self.profile
            return result

    return ProfiledShardProcessor


# --------------------------------------------------------------------------- child: run


def child_run(args: argparse.Namespace) -> dict:
    """``fld run`` in this process, with timestamps (measurement 1)."""
    t0 = process_started()
    events: dict[str, list] = defaultdict(list)

    def stamp(label: str, began: float, ended: float | None = None) -> None:
        events[label].append((began, now() if ended is None else ended))

    began = now()
    import pipelines.cli as cli

    stamp("import pipelines.cli", began)
    began = now()
    import engine.executors
    import pipelines.annotate as annotate
    import pipelines.config

    stamp("import pipelines.annotate", began)

    def timed_function(owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*a, **k):
            began = now()
            try:
                return original(*a, **k)
            finally:
                stamp(label, began)

        setattr(owner, name, timed)

    timed_function(pipelines.config, "load_config", "load_config")
    timed_function(annotate, "list_inputs", "list_inputs")
    timed_function(annotate, "build_plan", "plan")
    timed_function(annotate, "fingerprint", "plan")
    timed_function(annotate, "output_config_hash", "plan")
    timed_function(annotate, "package_versions", "commit")
    timed_function(annotate.IterationWriter, "prepare", "plan")
    timed_function(annotate.IterationWriter, "write_marker", "write_shard")
    timed_function(annotate.IterationWriter, "commit", "commit")
    timed_function(engine.executors.RayExecutor, "start_ray", "ray.init")
    original_map = engine.executors.RayExecutor.map

    def timed_map(self, processor, shards, *rest):
        events["executor.map entered"].append((now(), now()))
        yield from original_map(self, processor, shards, *rest)

    engine.executors.RayExecutor.map = timed_map
    annotate.ShardProcessor = _profiled_processor_class()

    argv = ["run", args.input, "--out", args.out, "--quiet", "--executor", "ray"]
    if args.config:
        argv += ["--config", args.config]
    for override in args.set:
        argv += ["--set", override]
    code = cli.main(argv)
    ended = now()
    if code != 0:
        raise SystemExit(f"fld run exited with {code}")
    markers = [
        json.loads(p.read_text()) for p in sorted(Path(args.out).glob("iteration=*/_shards/*.json"))
    ]
    profiles = {m["startup_profile"]["pid"]: m["startup_profile"] for m in markers}
    return {
        "t0": t0,
        "end": ended,
        "events": dict(events),
        "workers": list(profiles.values()),
        "driver_code": annotate.__file__,
        "n_shards": len(markers),
    }


def run_phases(raw: dict) -> list[tuple[str, float]]:
    """The run child's timestamps -> ordered ``(phase, seconds)``; the first worker that
    got ready is the one shown."""
    t0, ev = raw["t0"], raw["events"]

    def first(label):
        return ev[label][0]

    def total(label):
        return sum(end - start for start, end in ev.get(label, []))

    worker = min(raw["workers"], key=lambda w: w["setup_end"])
    load_start, load_end = first("load_config")
    map_entered = first("executor.map entered")[0]
    ray_start, ray_end = first("ray.init")
    first_write = first("write_shard")
    phases = [
        ("driver: python start + import pipelines.cli", first("import pipelines.cli")[1] - t0),
        (
            "driver: import pipelines.config + pipelines.annotate (pydantic, pyarrow)",
            total("import pipelines.annotate"),
        ),
        ("driver: load_config (validates, imports annotator modules)", load_end - load_start),
        ("driver: list inputs", total("list_inputs")),
        ("driver: plan (shards, fingerprint, config hash, prepare)", total("plan")),
        ("driver: import ray", ray_start - map_entered),
        ("driver: ray.init", ray_end - ray_start),
        (
            "worker: actor start (process, import ray, unpickle processor)",
            worker["setup_start"] - ray_end,
        ),
    ]
    steps = worker["steps"]
    first_step = steps[0][1] if steps else worker["setup_end"]
    phases.append(
        (
            "worker: setup, before the first model (thread limits, build())",
            first_step - worker["setup_start"],
        )
    )
    for label, began, ended, _cpu in steps:
        phases.append((f"worker: {label}", ended - began))
    loaded = worker.get("loaded_at") or worker["setup_end"]
    rest = max(worker["setup_end"], loaded) - first_step - sum(end - begin for _, begin, end, _ in steps)  # fmt: skip
    phases.append(("worker: setup, the rest (no-model steps, arrow warm-up)", rest))
    phases.append(("= until the worker is ready (first shard starts)", worker["setup_end"] - t0))
    # With run.setup: overlapped the first shard starts before the models are loaded.
    phases.append(("= until every step is loaded", loaded - t0))
    phases.append(
        ("after: first shard processed and written", first_write[1] - worker["setup_end"])
    )
    phases.append(("after: other shards, commit", raw["end"] - first_write[1]))
    phases.append(("= whole fld run (process start to return)", raw["end"] - t0))
    phases.append(("(worker process created, from ray.init returning)", worker["process_started"] - ray_end))  # fmt: skip
    return phases


# --------------------------------------------------------------------------- child: worker


def child_worker(args: argparse.Namespace) -> dict:
    """The actor's start, replayed under ``-X importtime`` (measurement 2)."""
    t0 = process_started()
    phases: list[tuple[str, float, float]] = []  # label, wall s, cpu s

    def step(label, function):
        mark(label)
        began, cpu = time.perf_counter(), time.process_time()
        value = function()
        phases.append((label, time.perf_counter() - began, time.process_time() - cpu))
        return value

    started = now()
    step("import ray", lambda: __import__("ray"))
    from engine.offline import apply_offline_env

    apply_offline_env()
    data = Path(args.processor).read_bytes()
    processor = step("unpickle processor (engine modules)", lambda: pickle.loads(data))
    events: list = []
    wrap_setup_methods(configured_classes(processor.config), events)
    step("setup (rest)", processor.setup)
    mark("end")
    return {
        "python_start_s": started - t0,
        "phases": phases,
        "setup_steps": [(label, end - begin, cpu) for label, begin, end, cpu in events],
    }


IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def parse_importtime(stderr: str) -> dict[str, dict[str, float]]:
    """``-X importtime`` lines -> {phase: {top-level package: self seconds}}."""
    phase = "python start"
    per_phase: dict[str, Counter] = defaultdict(Counter)
    for line in stderr.splitlines():
        if line.startswith(MARK):
            phase = line[len(MARK) :].strip()
            continue
        match = IMPORT_LINE.match(line)
        if match:
            package = match.group(4).split(".")[0]
            per_phase[phase][package] += int(match.group(1)) / 1e6
    return {phase: dict(counts) for phase, counts in per_phase.items()}


def worker_phases(raw: dict, imports: dict) -> list[dict]:
    """Setup is split into its steps; the rest of ``setup()`` (thread limits before the
    first step, the Arrow warm-up after the last) is what remains."""
    rows = []
    steps = raw["setup_steps"]
    for label, wall, cpu in raw["phases"]:
        if label == "setup (rest)":
            for step_label, step_wall, step_cpu in steps:
                rows.append({"phase": step_label, "wall_s": step_wall, "cpu_s": step_cpu})
            wall -= sum(s[1] for s in steps)
            cpu -= sum(s[2] for s in steps)
            label = "setup, the rest (thread limits, build(), no-model steps, arrow warm-up)"
        rows.append({"phase": label, "wall_s": wall, "cpu_s": cpu})
    for row in rows:
        key = row["phase"]
        if key.startswith("setup, the rest"):
            key = "setup (rest)"
        packages = imports.get(key, {})
        row["import_self_s"] = sum(packages.values())
        row["top_imports"] = {
            name: round(seconds, 3)
            for name, seconds in sorted(packages.items(), key=lambda kv: -kv[1])[:TOP_PACKAGES]
        }
    return rows


# --------------------------------------------------------------------------- parent


def child_env(threads: int | None) -> dict[str, str]:
    """This environment plus the offline variables (as the CLI sets them); with ``threads``,
    the thread budget a Ray worker gets (the worker replay), else none (``fld run``)."""
    from engine.offline import apply_offline_env

    env = dict(os.environ)
    env.update(apply_offline_env())
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def py_spy_prefix(args: argparse.Namespace, name: str, subprocesses: bool) -> list[str]:
    if not args.py_spy:
        return []
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("--py-spy: py-spy is not installed (.venv/bin/pip install py-spy)")
    out = RESULTS_DIR / f"startup_{name}.speedscope.json"
    prefix = [py_spy, "record", "--nonblocking", "--format", "speedscope", "-o", str(out)]
    return prefix + (["--subprocesses"] if subprocesses else []) + ["--"]


def run_child(argv: list[str], env: dict, prefix: list[str], timeout: int = 900):
    command = [*prefix, sys.executable, *argv]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-5000:])
        raise SystemExit(f"{' '.join(command)} exited with {done.returncode}")
    return done


def measure_run(args, tmp: Path, repeat: int, py_spy: bool = False) -> list[tuple[str, float]]:
    out = tmp / f"corpus-{repeat}"
    result_path = tmp / f"run-{repeat}.json"
    argv = [__file__, "--child", "run", "--input", str(args.input), "--out", str(out)]
    argv += ["--result", str(result_path)] + (["--config", args.config] if args.config else [])
    for override in args.overrides:
        argv += ["--set", override]
    prefix = py_spy_prefix(args, "run", subprocesses=True) if py_spy else []
    run_child(argv, child_env(None), prefix)
    shutil.rmtree(out, ignore_errors=True)
    raw = json.loads(result_path.read_text())
    code = {raw["driver_code"], *(w["code"] for w in raw["workers"])}
    print(f"  engine code run: {', '.join(sorted(code))}", file=sys.stderr)
    return run_phases(raw)


def measure_worker(
    args, tmp: Path, repeat: int, processor_path: Path, py_spy: bool = False
) -> list[dict]:
    result_path = tmp / f"worker-{repeat}.json"
    argv = ["-X", "importtime", __file__, "--child", "worker", "--processor", str(processor_path)]
    argv += ["--result", str(result_path)]
    env = child_env(args.threads) | {"FLD_PROFILE_MARKS": "1"}
    prefix = py_spy_prefix(args, "worker", subprocesses=False) if py_spy else []
    done = run_child(argv, env, prefix)
    return worker_phases(json.loads(result_path.read_text()), parse_importtime(done.stderr))


def speedscope_lines(path: Path, top: int = 10) -> list[dict]:
    """Seconds per line of the engine's own code in a py-spy speedscope profile: each
    sample goes to the deepest frame in ``annotators/``, ``filters/``, ``engine/`` or
    ``pipelines/`` (e.g. the ``import`` line of a ``setup()``: the whole import it started)."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    own = tuple(
        str(REPO / part) + os.sep for part in ("annotators", "filters", "engine", "pipelines")
    )
    seconds: Counter = Counter()
    for profile in data["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            for index in reversed(stack):  # leaf last
                frame = frames[index]
                if frame.get("file", "").startswith(own):
                    where = f"{Path(frame['file']).relative_to(REPO)}:{frame['line']}"
                    seconds[(frame["name"], where)] += weight
                    break
    return [
        {"function": name, "line": where, "seconds": round(value, 2)}
        for (name, where), value in seconds.most_common(top)
    ]


def median_rows(runs: list[list[tuple[str, float]]]) -> list[dict]:
    order = [name for name, _ in runs[0]]
    values: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for name, seconds in run:
            values[name].append(seconds)
    return [
        {"phase": name, "seconds": round(statistics.median(values[name]), 3),
         "all": [round(v, 3) for v in values[name]]}
        for name in order
    ]  # fmt: skip


def median_worker(runs: list[list[dict]]) -> list[dict]:
    rows = []
    for index, first in enumerate(runs[0]):
        same = [run[index] for run in runs if index < len(run)]
        rows.append(
            {
                "phase": first["phase"],
                "wall_s": round(statistics.median(r["wall_s"] for r in same), 3),
                "cpu_s": round(statistics.median(r["cpu_s"] for r in same), 3),
                "import_self_s": round(statistics.median(r["import_self_s"] for r in same), 3),
                "top_imports": first["top_imports"],
            }
        )
    return rows


def print_tables(run_rows: list[dict], worker_rows: list[dict], repeats: int) -> None:
    note = f" (median of {repeats})" if repeats > 1 else ""
    print(f"\n1. fld run, real code path, Ray executor, 1 worker{note}")
    width = max(len(r["phase"]) for r in run_rows)
    for row in run_rows:
        print(f"  {row['phase']:<{width}}  {row['seconds']:7.2f} s")
    print(f"\n2. the worker's start replayed with -X importtime{note}")
    width = max(len(r["phase"]) for r in worker_rows)
    print(f"  {'phase':<{width}}  {'wall s':>7}  {'cpu s':>6}  {'import':>6}  top imports (self s)")
    for row in worker_rows:
        top = ", ".join(f"{k} {v:.2f}" for k, v in row["top_imports"].items() if v >= 0.02)
        print(
            f"  {row['phase']:<{width}}  {row['wall_s']:7.2f}  {row['cpu_s']:6.2f}  "
            f"{row['import_self_s']:6.2f}  {top}"
        )
    total = sum(r["wall_s"] for r in worker_rows)
    print(f"  {'= total':<{width}}  {total:7.2f}")


def parent(args: argparse.Namespace) -> int:
    import machine

    from pipelines.annotate import ShardProcessor
    from pipelines.config import load_config

    args.overrides = [
        "run.workers=1",
        f"run.threads_per_worker={args.threads}",
        *args.set,
    ]
    config = load_config(args.config, args.overrides)
    described = machine.describe_machine()
    tmp = Path(tempfile.mkdtemp(prefix="fld-startup-"))
    try:
        processor_path = tmp / "processor.pickle"
        processor_path.write_bytes(pickle.dumps(ShardProcessor(config)))
        run_runs, worker_runs = [], []
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1}/{args.repeats}: fld run ...", file=sys.stderr)
            run_runs.append(measure_run(args, tmp, repeat))
            print(f"repeat {repeat + 1}/{args.repeats}: worker replay ...", file=sys.stderr)
            worker_runs.append(measure_worker(args, tmp, repeat, processor_path))
        if args.py_spy:  # once more under py-spy, not timed (sampling slows the processes)
            print("py-spy: fld run, then worker replay ...", file=sys.stderr)
            measure_run(args, tmp, args.repeats, py_spy=True)
            measure_worker(args, tmp, args.repeats, processor_path, py_spy=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    run_rows, worker_rows = median_rows(run_runs), median_worker(worker_runs)
    print_tables(run_rows, worker_rows, args.repeats)
    profiles = {}
    if args.py_spy:
        for name in ("run", "worker"):
            path = RESULTS_DIR / f"startup_{name}.speedscope.json"
            profiles[str(path.relative_to(REPO))] = speedscope_lines(path)
        print("\n3. py-spy, worker replay: seconds sampled per line of engine code (deepest)")
        for row in profiles["bench/results/startup_worker.speedscope.json"]:
            print(f"  {row['seconds']:6.2f} s  {row['line']:<40} {row['function']}")
    payload = {
        "input": str(args.input),
        "overrides": args.overrides,
        "repeats": args.repeats,
        "machine": described,
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "run_phases": run_rows,
        "worker_phases": worker_rows,
        "py_spy_lines": profiles,
        "notes": [
            "run_phases: fld run in a fresh process (pipelines.cli.main), Ray executor, 1 worker; "
            "timestamps from wrappers around the engine's functions and, in the worker, around "
            "each annotator's and filter's setup(); 'actor start' = ray.init returned -> the "
            "worker entered setup().",
            "worker_phases: the worker's start replayed in a fresh process under -X importtime "
            "(which itself adds a little time); import = self time of the modules first "
            "imported during the phase; cpu < wall means the process waited (disk, or other "
            "load on the machine).",
        ],
    }
    run_id = new_run_id()
    kept = save_result("startup_profile", {"run_id": run_id, **payload}, run_id)
    print(
        f"\nwrote {RESULTS_DIR.relative_to(REPO)}/startup_profile.json and {kept.relative_to(REPO)}"
    )
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default=str(DEMO_IMAGES), help="images (default demo/images)")
    parser.add_argument("--config", default=None, help="config file (default: the default)")
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (1)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each measurement")
    parser.add_argument("--py-spy", action="store_true", help="record speedscope profiles")
    parser.add_argument("--child", choices=("run", "worker"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--processor", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        result = child_run(args) if args.child == "run" else child_worker(args)
        Path(args.result).write_text(json.dumps(result))
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
