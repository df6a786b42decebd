"""Fault battery 1: SIGKILL the ``fld run`` driver at random moments, then rerun.

Each trial starts ``fld run`` on the shared photo set (16 photos, 8 shards of 2), kills it
with SIGKILL at a moment drawn from a seeded RNG, checks what the killed run left, reruns
the same command to completion and compares the corpus with an uninterrupted run.

Kill moments (``mode``):
- ``early``: a random delay after the process starts, before any marker: while Python
  imports, while Ray connects (``--address``) or the actors load their models;
- ``marker``: after a random number of shard markers, plus a random fraction of a shard;
- ``temporary``: as soon as a hidden temporary is seen in the corpus (a Parquet or marker
  file being written), i.e. in the middle of ``IterationWriter.write_shard``.

After the kill: it landed where its mode says (``early``: no marker yet; ``marker``: the
markers waited for were there and the run had not committed; ``temporary``: a temporary was
seen just before the kill and, where the killed process is the writer (``--executor
local``), the kill left a shard cut mid-write on disk: a temporary, or table files without
their marker), every visible Parquet file reads, no marker lacks its five files, nothing
committed, readers see no rows. After the rerun: no temporaries, no duplicated row id, and
every row of every table equal to the uninterrupted run's (``all_rows``).

The fast variant (``make test``) runs 3 trials: a Ray run (``--address``) killed in its
first seconds, and two ``--executor local`` runs killed after some markers and mid-write;
their reruns call ``annotate_corpus`` in the test process (what ``fld run`` calls) to skip a
new interpreter's imports. The slow one (``make reliability``) runs 15 trials with Ray or
local killed runs and Ray, local or in-process reruns, a third of the reruns killed again
before a last rerun. ``FLD_BATTERY_SEED`` changes the seed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass

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
    run,
    shared_photo_set,
    wait_for,
)
from tests.fixtures.corpus_tools import all_rows

SEED = int(os.environ.get("FLD_BATTERY_SEED", "20240607"))


@dataclass
class Kill:
    mode: str  # early | marker | temporary
    executor: str  # ray | local
    delay: float = 0.0  # early: seconds after start; marker/temporary: extra seconds
    after_markers: int = 1
    landed: str = ""  # what the kill interrupted, as observed
    missed: str = ""  # why it did not land where ``mode`` says ("" when it did)


def executor_args(executor: str, ray_address: str) -> list[str]:
    if executor == "ray":
        return ["--address", ray_address, "--workers", "2"]
    return ["--executor", "local"]


def any_temporary(out) -> bool:
    iteration = out / "iteration=0"
    if not iteration.is_dir():
        return False
    for folder in (iteration, *(p for p in iteration.iterdir() if p.is_dir())):
        try:
            if any(name.startswith(".") and name.endswith(".tmp") for name in os.listdir(folder)):
                return True
        except FileNotFoundError:
            continue
    return False


def shards_cut_mid_write(out) -> list[str]:
    """Shards with table files but no marker: ``write_shard`` writes the five tables, then
    the marker, so such a shard's writer stopped in between."""
    iteration = out / "iteration=0"
    names = {path.stem.removeprefix("shard=") for path in iteration.glob("*/shard=*.parquet")}
    return sorted(n for n in names if not (iteration / "_shards" / f"{n}.json").exists())


def killed_run(photos: dict, out, kill: Kill, ray_address: str) -> dict:
    """Start ``fld run``, SIGKILL it as ``kill`` says; return what the kill left, and say in
    ``kill.landed`` what it interrupted and in ``kill.missed`` whether it missed its mode."""
    command = fld_command(
        photos["folder"], out, photos["config"], "--shard-size", str(photos["shard_size"]),
        *executor_args(kill.executor, ray_address),
    )  # fmt: skip
    driver = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    reached = True  # the moment the mode waits for came (rather than a timeout)
    try:
        if kill.mode == "early":
            time.sleep(kill.delay)
        else:
            reached = wait_for(
                lambda: marker_count(out) >= kill.after_markers or driver.poll() is not None,
                timeout=300,
            )
            if kill.mode == "temporary":
                reached = reached and wait_for(
                    lambda: any_temporary(out) or driver.poll() is not None, timeout=60,
                    interval=0.0005,
                )  # fmt: skip
            else:
                time.sleep(kill.delay)
        finished = driver.poll() is not None
        if not finished:
            os.kill(driver.pid, signal.SIGKILL)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    markers = marker_count(out)
    committed = (out / "iteration=0" / "_COMMITTED").exists()
    figures = check_corpus_integrity(out, allow_temporaries=True) if out.exists() else {}
    cut = shards_cut_mid_write(out)
    if finished:
        kill.landed = "too late: the run had finished"
    elif committed:
        kill.landed = "too late: the run had committed"
    elif not (out / "iteration=0").exists():
        kill.landed = "before the corpus folder existed"
    else:
        kill.landed = f"after {markers} of 8 markers"
        if figures.get("temporaries") or cut:
            kill.landed += ", mid-write" + (f" (shards {cut} without a marker)" if cut else "")
    if finished or committed:
        kill.missed = kill.landed
    elif not reached:
        kill.missed = f"what the {kill.mode} kill waits for never came: {kill.landed}"
    elif kill.mode == "early" and markers:
        kill.missed = f"an early kill came {kill.landed}"
    elif (
        kill.mode == "temporary"
        and kill.executor == "local"
        and not (figures.get("temporaries") or cut)
    ):
        # The killed process was the writer: a kill in write_shard leaves its trace.
        kill.missed = f"no write was cut by the temporary kill ({kill.landed})"
    if out.exists() and not committed:
        # An uncommitted iteration is invisible to readers.
        assert connect(out).execute("SELECT count(*) FROM regions").fetchall()[0][0] == 0
    return {"markers": markers, "committed": committed, "finished": finished, **figures}


def rerun(photos: dict, out, executor: str, ray_address: str) -> str:
    """Run to completion: ``inprocess`` calls ``annotate_corpus`` here (what ``fld run``
    calls, without paying a new process's 9 s of imports), ``local``/``ray`` the CLI."""
    if executor == "inprocess":
        config = load_config(
            photos["config"], [f"run.shard_size={photos['shard_size']}", "run.executor=local"]
        )
        summary = annotate_corpus(config, str(photos["folder"]), str(out), show_progress=False)
        if summary.nothing_to_do:
            return "already committed: nothing to do"
        return f"committed iteration 0 ({summary.shards_done_before} resumed)"
    result = run(
        fld_command(
            photos["folder"],
            out,
            photos["config"],
            "--shard-size",
            str(photos["shard_size"]),
            *executor_args(executor, ray_address),
        )  # fmt: skip
    )
    return result.stdout


def draw_kill(rng: random.Random, mode: str, executor: str) -> Kill:
    if mode == "early":
        # Ray: the CLI imports, connects and creates actors within the first seconds.
        return Kill(mode, executor, delay=rng.uniform(0.0, 4.0))
    return Kill(mode, executor, delay=rng.uniform(0.0, 0.2), after_markers=rng.randint(1, 4))


def run_trials(photos, ray_address, tmp_path, capsys, plan: list[tuple[str, str, str, bool]], seed):
    """``plan``: per trial (mode, killed run's executor, rerun's executor, kill the rerun too)."""
    rng = random.Random(seed)
    reference = photos["rows"]
    rows_compared = files_checked = temporaries_seen = 0
    landed, missed = [], []
    started = time.monotonic()
    for trial, (mode, executor, rerun_executor, kill_rerun) in enumerate(plan):
        out = tmp_path / f"trial{trial:02d}"
        kill = draw_kill(rng, mode, executor)
        state = killed_run(photos, out, kill, ray_address)
        temporaries_seen += state.get("temporaries", 0)
        files_checked += state.get("parquet_files", 0)
        note = f"{mode}/{executor} {kill.landed}"
        if state.get("temporaries"):
            note += f", {state['temporaries']} temporaries"
        if kill.missed:
            missed.append(f"trial {trial} ({mode}/{executor}): {kill.missed}")
        if kill_rerun and not state["committed"]:
            second = draw_kill(
                rng, "marker", "local" if rerun_executor == "inprocess" else rerun_executor
            )
            second.after_markers = min(state["markers"] + second.after_markers, 7)
            again = killed_run(photos, out, second, ray_address)
            temporaries_seen += again.get("temporaries", 0)
            files_checked += again.get("parquet_files", 0)
            note += f"; rerun killed {second.landed}"
        before_rerun = marker_count(out)
        stdout = rerun(photos, out, rerun_executor, ray_address)
        if "nothing to do" not in stdout:  # else the kill came after the commit
            # only the shards without a marker were redone
            assert "committed iteration 0" in stdout and f"{before_rerun} resumed" in stdout, stdout
        figures = check_corpus_integrity(out)
        files_checked += figures["parquet_files"]
        rows = all_rows(out)
        assert rows == reference, f"trial {trial} ({note}): rows differ from the reference"
        rows_compared += count_rows(rows)
        landed.append(note)
        report(
            capsys,
            f"[kill-driver] trial {trial}: {note}; rerun on {rerun_executor} "
            f"({before_rerun} shards resumed): {count_rows(rows)} rows equal",
        )
    late = sum("too late" in note for note in landed)
    report(
        capsys,
        f"[kill-driver] {len(plan)} trials (seed {seed}), {late} kills after the run had "
        f"finished or committed, {len(missed)} first kills not where their mode says, "
        f"{temporaries_seen} temporaries left by kills, {rows_compared} rows compared, "
        f"{files_checked} Parquet files opened, {time.monotonic() - started:.1f} s",
    )
    return landed, missed


def test_kill_driver_at_random_moments(ray_address, tmp_path, tmp_path_factory, capsys):
    """3 trials: killed before Ray is up (Ray), after some markers, in the middle of a
    write; reruns in this process (``annotate_corpus``) to keep ``make test`` short."""
    photos = shared_photo_set(tmp_path_factory)
    plan = [
        ("early", "ray", "inprocess", False),
        ("marker", "local", "inprocess", False),
        ("temporary", "local", "inprocess", False),
    ]
    landed, missed = run_trials(photos, ray_address, tmp_path, capsys, plan, SEED)
    assert sum("too late" in note for note in landed) == 0, landed
    assert missed == [], missed  # each kill landed where its mode says


@pytest.mark.slow
def test_kill_driver_at_random_moments_many_trials(ray_address, tmp_path, tmp_path_factory, capsys):
    """15 trials, modes and executors drawn from the seed; a third of the reruns are killed
    again before the last rerun."""
    photos = shared_photo_set(tmp_path_factory)
    rng = random.Random(SEED + 1)
    plan = []
    for trial in range(15):
        mode = ("early", "marker", "temporary")[trial % 3]
        executor = rng.choice(("ray", "local"))
        rerun_executor = rng.choice(("ray", "local", "inprocess"))
        plan.append((mode, executor, rerun_executor, rng.random() < 0.33))
    landed, missed = run_trials(photos, ray_address, tmp_path, capsys, plan, SEED + 2)
    assert sum("too late" in note for note in landed) <= 2, landed
    # Too late is tolerated twice (above); a kill that landed elsewhere than its mode says
    # (an early kill after a marker, a temporary kill that cut no write) is not.
    assert [m for m in missed if "too late" not in m] == [], missed
