"""``fld sql`` cannot write (issue 24): one statement, a read by DuckDB's own parser; its
spill folder is private; results stream in batches (flat memory), in four formats; a
timeout and Ctrl-C stop the query."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from engine.query import QueryRefused, connect, read_only_statement
from pipelines.cli import main
from tests.fixtures.common import BIN
from tests.fixtures.export_helpers import write_synthetic_corpus

# A query that runs for minutes (DuckDB cannot fold it away), for the stop tests.
SLOW = "SELECT sum(hash(a.range + b.range)) FROM range(200000) a, range(200000) b"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("sql")
    return write_synthetic_corpus(work / "corpus", work / "inputs")


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize(
    "statement",
    [
        "COPY (SELECT 'x') TO '{root}/iteration=0/run.json'",
        "COPY regions TO '{root}/iteration=0/regions/shard=00000.parquet' (FORMAT parquet)",
        "EXPORT DATABASE '{root}/iteration=7'",
        "SELECT 1; COPY (SELECT 1) TO '{root}/iteration=7/_COMMITTED'",
        "EXPLAIN ANALYZE COPY regions TO '{root}/x.parquet'",
        "CREATE TABLE t AS SELECT 1",
        "SET threads = 1",
        "PRAGMA version",
        "CALL pragma_version()",
        "ATTACH '{root}/x.duckdb'",
        "INSTALL httpfs",
        "LOAD httpfs",
    ],
)
def test_writes_and_settings_are_refused_and_change_nothing(corpus, capsys, statement):
    before = tree_digest(corpus)
    assert main(["sql", str(corpus), statement.format(root=corpus.resolve())]) == 2
    assert "query refused" in capsys.readouterr().err
    assert tree_digest(corpus) == before


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT count(*) AS n FROM regions",
        "WITH kept AS (SELECT * FROM regions WHERE kept) SELECT count(*) FROM kept",
        "FROM images",
        "DESCRIBE regions",
        "SHOW TABLES",
        "SUMMARIZE regions",
        "EXPLAIN SELECT * FROM regions",
        "VALUES (1, 2)",
    ],
)
def test_reads_run(corpus, statement):
    assert main(["sql", str(corpus), statement]) == 0


def test_the_parser_decides_not_the_text():
    assert "select 1" in read_only_statement("  select 1 -- COPY x TO 'y'")
    with pytest.raises(QueryRefused, match="exactly one"):
        read_only_statement("SELECT 1; SELECT 2")
    with pytest.raises(duckdb.ParserException):
        read_only_statement("SELEC 1")


def test_the_spill_folder_is_private(corpus, tmp_path, monkeypatch):
    """DuckDB's default temp folder, ``$CWD/.tmp``, was readable through the sandbox."""
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "secret.txt").write_text("secret")
    monkeypatch.chdir(tmp_path)
    connection = connect(corpus, sandbox=True)
    with pytest.raises(duckdb.PermissionException):
        connection.sql("SELECT * FROM read_text('.tmp/secret.txt')").fetchall()
    spill = connection.execute("SELECT current_setting('temp_directory')").fetchone()[0]
    assert not Path(spill).resolve().is_relative_to(tmp_path)
    assert not Path(spill).resolve().is_relative_to(corpus.resolve())


def test_formats_hold_the_same_rows(corpus, tmp_path, capsys):
    query = "SELECT region_id, label, score, kept FROM regions ORDER BY region_id"
    expected = connect(corpus).sql(query).fetchall()
    assert main(["sql", str(corpus), query, "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [tuple(row.values()) for row in rows] == expected
    assert (
        main(["sql", str(corpus), query, "--format", "csv", "--out", str(tmp_path / "r.csv")]) == 0
    )
    with open(tmp_path / "r.csv", newline="") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["region_id", "label", "score", "kept"]
    assert [tuple(line[:2]) for line in lines[1:]] == [row[:2] for row in expected]
    assert (
        main(["sql", str(corpus), query, "--format", "parquet", "--out", str(tmp_path / "r.pq")])
        == 0
    )
    assert [tuple(r.values()) for r in pq.read_table(tmp_path / "r.pq").to_pylist()] == expected
    assert main(["sql", str(corpus), query, "--limit", "2"]) == 0
    table = capsys.readouterr().out
    assert f"({len(expected)} rows, the first 2 shown (--limit))" in table


def default_sigint() -> None:
    """In the child before exec: Ctrl-C handled as a terminal's would be. A suite started in
    the background by a non-interactive shell runs with SIGINT ignored, which its children
    inherit (and Python then installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def fld_sql(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "fld"), "sql", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=default_sigint, **popen,
    )  # fmt: skip


def test_a_timeout_stops_the_query(corpus):
    began = time.monotonic()
    process = fld_sql(str(corpus), SLOW, "--timeout", "2")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2 and "ran past --timeout 2 s" in err
    assert time.monotonic() - began < 60  # the query alone runs for minutes


def test_ctrl_c_stops_the_query(corpus):
    process = fld_sql(str(corpus), SLOW)
    time.sleep(4)  # started, and deep in the query
    began = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"fld sql still ran 60 s after Ctrl-C; its stderr:\n{err[-3000:]}") from None  # fmt: skip
    assert process.returncode == 130 and "interrupted" in err
    assert time.monotonic() - began < 10


DEAF_TO_INTERRUPTS = """
import os, sys, time
import engine.query

engine.query.STOP_GRACE_S = float(os.environ.get("GRACE_S", "2"))  # 10 s in real use

class Stuck:  # a connection whose query no interrupt stops, as a stuck DuckDB call would
    def __init__(self, connection):
        self.connection = connection
    def sql(self, statement):
        return self
    def to_arrow_reader(self, batch_rows):
        time.sleep(3600)
    def __getattr__(self, name):
        return getattr(self.connection, name)

real_connect = engine.query.connect
engine.query.connect = lambda *args, **kwargs: Stuck(real_connect(*args, **kwargs))
from pipelines.cli import main
sys.exit(main(sys.argv[1:]))
"""


def deaf_fld_sql(corpus: Path, *args: str, grace_s: float = 2) -> subprocess.Popen:
    """``fld sql`` whose query no interrupt stops, sending interrupts for ``grace_s``."""
    return subprocess.Popen(
        [sys.executable, "-c", DEAF_TO_INTERRUPTS, "sql", str(corpus), SLOW, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
        env={**os.environ, "GRACE_S": str(grace_s)},
    )  # fmt: skip


def ended(process: subprocess.Popen, within_s: float) -> str:
    """The process's stderr once it has ended by itself within ``within_s``."""
    try:
        _, err = process.communicate(timeout=within_s)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"still running after {within_s} s; stderr:\n{err[-3000:]}") from None
    return err


def test_ctrl_c_ends_the_process_even_if_the_query_does_not_stop(corpus):
    process = deaf_fld_sql(corpus)
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    err = ended(process, 30)  # 2 s of interrupts, then out
    assert process.returncode == 130
    assert "fld sql: interrupted; the query did not stop, the process ends" in err


def test_a_second_ctrl_c_ends_the_process_at_once(corpus):
    """Whoever presses Ctrl-C again while the query is being stopped wants out now."""
    process = deaf_fld_sql(corpus, grace_s=600)
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    err = ended(process, 30)  # not the 600 s of interrupts
    assert process.returncode == 130 and "the query did not stop, the process ends" in err


def test_a_timeout_ends_the_process_if_the_query_does_not_stop(corpus):
    process = deaf_fld_sql(corpus, "--timeout", "1")
    err = ended(process, 60)
    assert process.returncode == 2
    assert "ran past --timeout 1 s and did not stop, the process ends" in err


def peak_rss_mib(corpus: Path, query: str) -> float:
    """The peak RSS of an ``fld sql`` process writing ``query``'s rows as CSV."""
    script = (
        "import resource, sys\n"
        "from pipelines.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "sql", str(corpus), query, "--format", "csv"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    return int(result.stderr.strip().splitlines()[-1]) / 1024


def test_memory_stays_flat_on_five_million_rows(corpus):
    """Built whole in Python, 5M rows took 2.6 GB; streamed, one batch at a time."""
    small = peak_rss_mib(corpus, "SELECT 1 AS i, 'x' AS s")
    large = peak_rss_mib(corpus, "SELECT range AS i, 'label ' || range AS s FROM range(5000000)")
    assert large - small < 300, (small, large)


def test_stats_and_sql_import_neither_torch_nor_ray(corpus):
    """The commands people run most stay light (issue 27): no torch, no Ray, no model
    library is imported by ``fld stats`` or ``fld sql``."""
    script = (
        "import sys\n"
        "from pipelines.cli import main\n"
        "assert main(['stats', sys.argv[1]]) == 0\n"
        "assert main(['sql', sys.argv[1], 'SELECT count(*) FROM regions']) == 0\n"
        "heavy = {'torch', 'ray', 'spacy', 'transformers', 'ultralytics', 'cv2'}\n"
        "print(sorted(heavy & set(sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(corpus)], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    assert result.stderr.strip().splitlines()[-1] == "[]"
