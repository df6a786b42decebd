"""One writer per corpus (issue 24): a second ``fld run`` on a corpus another live process
is writing exits 2 naming the holder; a lock left by a dead process is taken over."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.corpus import CorpusLock, CorpusLocked
from pipelines.cli import main

DEMO = Path(__file__).parents[2] / "demo" / "images"


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    with CorpusLock(corpus, "refine"):
        assert main(["run", str(DEMO), "--out", str(corpus)]) == 2
        error = capsys.readouterr().err
        assert "being written by `fld refine`" in error and "pid" in error
        with pytest.raises(CorpusLocked):
            CorpusLock(corpus, "run").acquire()
    assert not (corpus / "_LOCK").exists()  # released on leaving


def test_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = CorpusLock(corpus, "run").holder | {"pid": int(gone.stdout), "pid_started": 1}
    (corpus / "_LOCK").write_text(json.dumps(dead))
    with CorpusLock(corpus, "run") as lock:
        assert json.loads((corpus / "_LOCK").read_text())["pid"] == lock.holder["pid"]
    assert "taking over" in capsys.readouterr().err


def test_a_reused_pid_is_not_a_live_holder(tmp_path):
    """The lock records its pid's start time: the same pid started later is someone else."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    reused = CorpusLock(corpus, "run").holder | {"pid_started": 1}  # this pid, another start
    (corpus / "_LOCK").write_text(json.dumps(reused))
    with CorpusLock(corpus, "run"):
        pass
