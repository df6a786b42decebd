"""SQL over a corpus: DuckDB views named after the tables (``images``, ``texts``,
``regions``, ``phrases``, ``errors``) over every *committed* iteration, side by side
(filter with ``WHERE iteration = K``). Uncommitted iterations are invisible.

The views list the files ``Corpus.file_groups`` names (an iteration's compacted parts, or
its shard files), resolved when ``connect`` runs: a connection made before a compaction
deleted the shard files fails on them afterwards; connect again.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import IO, Literal

import duckdb

from engine.corpus import Corpus
from engine.schemas import TABLES
from engine.storage import StorePath, duckdb_filesystem, sql_path


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


DUPLICATE_MODES = ("view", "skip", "none")


def connect(
    corpus_path: str | Path,
    iterations: list[int] | None = None,
    sandbox: bool = False,
    duplicates: Literal["view", "skip", "none"] = "view",
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per table.

    ``duplicates`` (``engine.dedup``): ``"view"`` adds the ``duplicates`` view; ``"skip"``
    adds it and the tables leave out the rows of images that are copies of another in their
    iteration (the ``_all_<table>`` views keep them), as exports and reports count;
    ``"none"``: no ``duplicates`` view (readers that do not need it skip reading it).
    ``sandbox``: for statements from users (``fld sql``). Once the views exist, the
    connection may read only files under the corpus folder and write none: DuckDB's
    ``allowed_directories`` with ``enable_external_access = false`` (so ``COPY ... TO``,
    ``ATTACH``, ``read_csv('/etc/...')`` and extension installs fail), then
    ``lock_configuration`` so that a statement cannot lift it."""
    if duplicates not in DUPLICATE_MODES:
        raise ValueError(f"duplicates: {duplicates!r} is not one of {', '.join(DUPLICATE_MODES)}")
    corpus = Corpus(corpus_path)
    if not corpus.root.is_dir():
        raise FileNotFoundError(f"{corpus_path} is not a corpus folder")
    chosen = corpus.iterations() if iterations is None else iterations
    connection = duckdb.connect()
    remote = isinstance(corpus.root, StorePath)
    if remote:  # DuckDB reads the store through pyarrow (engine.storage.duckdb_filesystem)
        connection.register_filesystem(duckdb_filesystem(corpus.root.fs))
    groups = {k: corpus.file_groups(k) for k in chosen}  # shard files, or compacted parts
    for table in TABLES:
        paths = [group.files[table] for k in chosen for group in groups[k] if table in group.files]
        if paths:
            files = ", ".join(sql_literal(sql_path(path)) for path in paths)
            read = f"SELECT * FROM read_parquet([{files}], hive_partitioning = false"
            if table == "images":
                # By name, with every contract column: files written before its hash columns
                # (or labels_from) lack them, which read as NULL.
                connection.register("_contract_images", TABLES[table].empty_table())
                read = f"SELECT * FROM _contract_images UNION ALL BY NAME {read}, union_by_name = true"  # fmt: skip
            connection.execute(f"CREATE VIEW {table} AS {read})")
        else:
            connection.register(f"_empty_{table}", TABLES[table].empty_table())
            connection.execute(f"CREATE VIEW {table} AS SELECT * FROM _empty_{table}")
    if duplicates != "none":
        add_duplicates_view(connection, corpus, chosen)
    add_review_views(connection, corpus, chosen)
    if duplicates == "skip":
        # Every table without the rows of images that are copies (members of a duplicate
        # group that are not its representative).
        for table in TABLES:
            connection.execute(f"ALTER VIEW {table} RENAME TO _all_{table}")
            connection.execute(
                f"CREATE VIEW {table} AS SELECT * FROM _all_{table} t WHERE NOT EXISTS ("
                "SELECT 1 FROM duplicates d WHERE d.image_id = t.image_id "
                "AND d.iteration = t.iteration AND NOT d.is_representative)"
            )
    if sandbox:
        root = (corpus.root.duckdb_uri if remote else str(corpus.root.resolve())).rstrip("/") + "/"
        # DuckDB's default temp directory is ``$CWD/.tmp``, which it adds to the allowed
        # directories: a private one, outside the corpus and the current directory, instead.
        spill = tempfile.mkdtemp(prefix="fld-sql-")
        weakref.finalize(connection, shutil.rmtree, spill, True)
        connection.execute(f"SET temp_directory = {sql_literal(spill)}")
        connection.execute(f"SET allowed_directories = [{sql_literal(root)}]")
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
    return connection


def add_duplicates_view(connection, corpus: Corpus, iterations: list[int]) -> None:
    """The view ``duplicates``: the ``iteration=K/duplicates.parquet`` of the chosen
    iterations that have one (``engine.dedup``), else an empty table of its schema."""
    from engine.dedup import duplicates_path
    from engine.schemas import DUPLICATES

    paths = [duplicates_path(corpus, k) for k in iterations]
    paths = [path for path in paths if path.exists()]
    if paths:
        files = ", ".join(sql_literal(sql_path(path)) for path in paths)
        connection.execute(f"CREATE VIEW duplicates AS SELECT * FROM read_parquet([{files}])")
    else:
        connection.register("_empty_duplicates", DUPLICATES.empty_table())
        connection.execute("CREATE VIEW duplicates AS SELECT * FROM _empty_duplicates")


REVIEW_EVAL_COLUMNS = {
    "iteration": "int32", "parent": "int32", "images": "int64", "gt_objects": "int64",
    "f1": "float64", "parent_f1": "float64", "map50": "float64", "parent_map50": "float64",
    "precision": "float64", "recall": "float64",
    "worse": "bool_", "made_default": "bool_",
}  # fmt: skip


def add_review_views(connection, corpus: Corpus, iterations: list[int]) -> None:
    """People's reviews (``engine.reviews``): the view ``reviews`` (the corpus's reviews
    table, every project; empty with its schema when there is none) and the table
    ``review_eval``: how each chosen committed iteration scored on the reviewed hold-out
    images when it was made (its ``run.json``; ``pipelines.review.judge_iteration``)."""
    import pyarrow as pa

    from engine.reviews import reviews_path
    from engine.schemas import REVIEWS

    path = reviews_path(corpus)
    if path.exists():
        connection.execute(f"CREATE VIEW reviews AS SELECT * FROM read_parquet({sql_literal(sql_path(path))})")  # fmt: skip
    else:
        connection.register("_empty_reviews", REVIEWS.empty_table())
        connection.execute("CREATE VIEW reviews AS SELECT * FROM _empty_reviews")
    rows = []
    # Only an iteration refined after people reviewed has a review_eval: a corpus without
    # reviews reads no run.json here (connect is on every command's path).
    for k in iterations if path.exists() else ():
        if not corpus.is_committed(k):
            continue
        judged = corpus.run_info(k).get("review_eval") or {}
        if judged.get("f1") is not None:
            rows.append({**{c: judged.get(c) for c in REVIEW_EVAL_COLUMNS}, "iteration": k, "made_default": judged.get("default")})  # fmt: skip
    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in REVIEW_EVAL_COLUMNS.items()])
    connection.register("review_eval", pa.Table.from_pylist(rows, schema=schema))


def format_table(columns: list[str], rows: list[tuple], max_width: int = 60) -> str:
    """Plain-text table for terminals (DuckDB's own renderer elides columns on narrow ones)."""

    cells = [[cell_text(v, max_width) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, rule, *body])


class QueryRefused(ValueError):
    """A statement ``fld sql`` does not run: more than one, or one that is not a read."""


# What ``fld sql`` runs: SELECT (DuckDB parses WITH, FROM-first, VALUES, DESCRIBE, SHOW and
# SUMMARIZE as SELECT) and EXPLAIN of one. COPY, EXPORT, ATTACH, SET, PRAGMA, CALL, INSTALL,
# LOAD, CREATE and the rest are refused before they run, whatever the sandbox would allow.
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(ANALY[SZ]E\s+)?(\([^)]*\)\s*)?", re.IGNORECASE)


def read_only_statement(query: str) -> str:
    """The query's one statement, checked by DuckDB's own parser to be a read (see above);
    raises ``QueryRefused`` naming what it found, ``duckdb.ParserException`` on bad SQL."""
    statements = duckdb.extract_statements(query)
    if len(statements) != 1:
        raise QueryRefused(f"fld sql runs exactly one statement, this has {len(statements)}")
    statement = statements[0]
    kind = statement.type
    if kind == duckdb.StatementType.EXPLAIN:
        explained = _EXPLAIN.sub("", statement.query, count=1)
        inner = duckdb.extract_statements(explained) if explained != statement.query else []
        if len(inner) != 1 or inner[0].type != duckdb.StatementType.SELECT:
            raise QueryRefused("fld sql explains only a SELECT")
    elif kind != duckdb.StatementType.SELECT:
        raise QueryRefused(f"fld sql only reads: a {kind.name} statement is not run")
    return statement.query


def cell_text(value, max_width: int) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


class ResultWriter:
    """Writes a query's Arrow record batches to ``out`` as they come (memory stays that of
    one batch): ``csv`` (a header, then values, quoted only where needed), ``json`` (JSON
    Lines: one object per row), ``parquet`` (``out`` must be binary), or ``table`` (the
    first ``limit`` rows, aligned; then how many rows there were)."""

    def __init__(self, fmt: str, out: IO, limit: int = 1000, max_width: int = 60):
        self.fmt, self.out, self.limit, self.max_width = fmt, out, limit, max_width
        self.rows = 0
        self._shown: list[tuple] = []
        self._parquet = None

    def write(self, reader) -> int:
        """Consume a ``pyarrow.RecordBatchReader``; returns the number of rows."""
        columns = list(reader.schema.names)
        if self.fmt == "csv":
            csv.writer(self.out).writerow(columns)
        for batch in reader:
            self.write_batch(batch)
        self.finish(columns)
        return self.rows

    def write_batch(self, batch) -> None:
        self.rows += batch.num_rows
        if self.fmt == "csv":  # Python's csv module: quotes only the values that need it
            csv.writer(self.out).writerows(zip(*batch.to_pydict().values(), strict=True))
        elif self.fmt == "json":
            for row in batch.to_pylist():
                self.out.write(json.dumps(row, default=str) + "\n")
        elif self.fmt == "parquet":
            import pyarrow.parquet as pq

            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.out, batch.schema)
            self._parquet.write_batch(batch)
        elif len(self._shown) < self.limit:
            self._shown.extend(zip(*batch.to_pydict().values(), strict=True))

    def finish(self, columns: list[str]) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self.fmt != "table" or not columns:
            return
        shown = self._shown[: self.limit]
        self.out.write(format_table(columns, shown, self.max_width) + "\n")
        more = f", the first {len(shown)} shown (--limit)" if self.rows > len(shown) else ""
        self.out.write(f"({self.rows} rows{more})\n")


class QueryTimeout(RuntimeError):
    pass


BATCH_ROWS = 100_000


STOP_GRACE_S = 10.0  # how long interrupts are sent to a query being stopped


class QueryNotStopped(KeyboardInterrupt):
    """A query being stopped (Ctrl-C, or past its timeout) did not stop within
    ``STOP_GRACE_S`` of interrupts, or a second Ctrl-C came meanwhile: closing its
    connection would wait for it, so the caller should end the process, with
    ``exit_code`` (130 after Ctrl-C, 2 after a timeout). ``str()`` says which."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def interrupt_until_stopped(connection: duckdb.DuckDBPyConnection, finished) -> bool:
    """Interrupt the query until its thread sets ``finished`` (True), for at most
    ``STOP_GRACE_S`` (False). A Ctrl-C meanwhile gives up at once (False): whoever
    pressed it twice wants out, not to wait for the query."""
    import time

    stop_by = time.monotonic() + STOP_GRACE_S
    try:
        while not finished.is_set() and time.monotonic() < stop_by:
            connection.interrupt()  # again: an interrupt that lands between two calls is lost
            finished.wait(0.1)
    except KeyboardInterrupt:
        return False
    return finished.is_set()


def stream_query(
    connection: duckdb.DuckDBPyConnection, query: str, writer: ResultWriter, timeout_s: float
) -> int:
    """Run ``query`` (one read-only statement: ``read_only_statement``) and stream its rows
    into ``writer``; returns the row count. The query runs in a thread while this one
    waits, so that Ctrl-C (KeyboardInterrupt, re-raised) and ``timeout_s`` (``QueryTimeout``)
    stop it with ``connection.interrupt()``, which DuckDB honours between vectors; a query
    that does not stop raises ``QueryNotStopped`` (``interrupt_until_stopped``)."""
    import threading
    import time

    statement = read_only_statement(query)
    outcome: dict = {}
    # Not Thread.join/is_alive: a join that Ctrl-C interrupts marks a thread that still runs
    # as stopped (CPython 3.11's Thread._wait_for_tstate_lock releases the lock the running
    # thread holds), and the interrupts below were then never sent.
    finished = threading.Event()

    def work() -> None:
        try:
            reader = connection.sql(statement).to_arrow_reader(BATCH_ROWS)
            outcome["rows"] = writer.write(reader)
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=work, name="fld-sql", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    try:
        while not finished.wait(0.05):
            if time.monotonic() > deadline:
                past = f"the query ran past --timeout {timeout_s:g} s"
                if not interrupt_until_stopped(connection, finished):
                    raise QueryNotStopped(f"{past} and did not stop", exit_code=2)
                raise QueryTimeout(f"{past} and was stopped")
    except QueryNotStopped:
        raise
    except KeyboardInterrupt:
        if not interrupt_until_stopped(connection, finished):
            raise QueryNotStopped("interrupted; the query did not stop", exit_code=130) from None
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["rows"]


def run_query(connection: duckdb.DuckDBPyConnection, query: str) -> tuple[list[str], list[tuple]]:
    relation = connection.sql(query)
    if relation is None:
        return [], []
    return list(relation.columns), relation.fetchall()


# Written for speed at tens of millions of rows (bench/sql_stats.py): ``count_if(kept)``
# rather than ``count(*) FILTER (kept)`` (DuckDB's filtered aggregates cost more; cast back to
# BIGINT, the type ``count`` returns), and phrases counted per phrase first and then per
# iteration rather than with two ``count(DISTINCT phrase_id)`` (each builds its own hash
# table of every phrase id): same rows, same types, 0.6x the CPU time of the phrases query.
# Every ORDER BY ends in the grouping columns, so that ties come out in the same order
# whatever the order of the files (compaction, engine/compact.py, changes it).
STATS_QUERIES: dict[str, str] = {
    "rows per table and iteration": """
        SELECT 'images' AS "table", iteration, count(*) AS rows, count(*) AS kept FROM images GROUP BY ALL
        UNION ALL SELECT 'texts', iteration, count(*), count_if(kept)::BIGINT FROM texts GROUP BY ALL
        UNION ALL SELECT 'regions', iteration, count(*), count_if(kept)::BIGINT FROM regions GROUP BY ALL
        UNION ALL SELECT 'phrases', iteration, count(*), count_if(kept)::BIGINT FROM phrases GROUP BY ALL
        UNION ALL SELECT 'errors', iteration, count(*), 0 FROM errors GROUP BY ALL
        ORDER BY iteration, "table" """,
    "regions per kind": """
        SELECT iteration, kind, count(*) AS rows, count_if(kept)::BIGINT AS kept,
               round(avg(score) FILTER (kept), 3) AS mean_kept_score
        FROM regions GROUP BY ALL ORDER BY iteration, kind""",
    "kept regions per label (top 25)": """
        SELECT iteration, kind, label, count(*) AS kept, round(avg(score), 3) AS mean_score
        FROM regions WHERE kept AND kind <> 'ocr' GROUP BY ALL
        ORDER BY iteration, kept DESC, label, kind LIMIT 25""",
    "regions per source": """
        SELECT iteration, source, count(*) AS rows, count_if(kept)::BIGINT AS kept,
               round(avg(score), 3) AS mean_score
        FROM regions GROUP BY ALL ORDER BY iteration, source""",
    # A fused row's source is "fused": its contributors are in ``sources``. This counts a
    # kept row once for each source in it, so a student's share of the kept labels shows.
    "kept regions per contributing source": """
        SELECT iteration, contributor AS source, count(*) AS kept,
               count_if(n_sources = 1)::BIGINT AS alone
        FROM (SELECT iteration, n_sources, unnest(sources) AS contributor FROM regions WHERE kept)
        GROUP BY ALL ORDER BY iteration, source""",
    "dropped rows by reason": """
        SELECT iteration, 'regions' AS "table", drop_reason, count(*) AS rows FROM regions WHERE NOT kept GROUP BY ALL
        UNION ALL SELECT iteration, 'texts', drop_reason, count(*) FROM texts WHERE NOT kept GROUP BY ALL
        UNION ALL SELECT iteration, 'phrases', drop_reason, count(*) FROM phrases WHERE NOT kept GROUP BY ALL
        ORDER BY iteration, "table", rows DESC, drop_reason""",
    "texts per granularity (kept)": """
        SELECT iteration, granularity, count(*) AS kept, round(avg(n_objects), 2) AS objects,
               round(avg(n_attributes), 2) AS attributes, round(avg(n_actions), 2) AS actions,
               round(avg(object_complexity), 2) AS object_complexity,
               round(avg(action_complexity), 2) AS action_complexity
        FROM texts WHERE kept GROUP BY ALL ORDER BY iteration, objects, granularity""",
    "phrases: kept and dropped, boxes per grounded phrase": """
        WITH per_phrase AS (
            SELECT iteration, phrase_id, count_if(kept)::BIGINT AS kept_boxes FROM phrases GROUP BY ALL
        )
        SELECT iteration, count(*) AS phrases,
               count(*) FILTER (kept_boxes > 0) AS grounded_phrases,
               sum(kept_boxes)::BIGINT AS kept_boxes,
               round(sum(kept_boxes) / nullif(count(*) FILTER (kept_boxes > 0), 0), 2) AS boxes_per_phrase
        FROM per_phrase GROUP BY ALL ORDER BY iteration""",
    "errors by stage and type": """
        SELECT iteration, stage, error_type, count(*) AS rows
        FROM errors GROUP BY ALL ORDER BY iteration, rows DESC, stage, error_type""",
    # engine/reviews.py: what people decided (fld import-reviews), and how each refine
    # iteration scored on their hold-out images (pipelines/review.py).
    "reviews: people's verdicts per region": """
        SELECT iteration AS shown_iteration, kind, verdict, count(*) AS regions,
               count(DISTINCT image_id) AS images, count_if(holdout)::BIGINT AS holdout
        FROM reviews GROUP BY ALL ORDER BY shown_iteration, kind, verdict""",
    "iterations judged on reviewed hold-out images": """
        SELECT iteration, parent, images, gt_objects, round(f1, 3) AS f1,
               round(parent_f1, 3) AS parent_f1, round(map50, 3) AS map50,
               round(parent_map50, 3) AS parent_map50, worse, made_default
        FROM review_eval ORDER BY iteration""",
    # engine/dedup.py: groups of copies; exports, the report and the students take the
    # representatives only unless told otherwise.
    "duplicate images (groups of copies)": """
        SELECT iteration, count(DISTINCT group_id) AS groups,
               count_if(NOT is_representative)::BIGINT AS duplicates,
               count_if(NOT is_representative AND kind = 'exact')::BIGINT AS exact,
               count_if(NOT is_representative AND kind = 'near')::BIGINT AS near,
               max(group_size) AS largest_group
        FROM duplicates GROUP BY ALL ORDER BY iteration""",
    # run.dedup: before_annotation: exact copies whose rows were copied, the models skipped.
    "images whose labels were copied from an exact copy (run.dedup: before_annotation)": """
        SELECT iteration, count(*) AS images, count(DISTINCT labels_from) AS originals
        FROM images WHERE labels_from IS NOT NULL GROUP BY ALL ORDER BY iteration""",
}


def stats_report(corpus_path: str | Path) -> str:
    connection = connect(corpus_path)
    corpus = Corpus(corpus_path)
    committed = corpus.iterations()
    pending = sorted(set(corpus.iterations(committed_only=False)) - set(committed))
    sections = [f"corpus {corpus_path}: committed iterations {committed or 'none'}"]
    if pending:
        sections[0] += f" (not committed, not shown: {pending})"
    for title, query in STATS_QUERIES.items():
        columns, rows = run_query(connection, query)
        sections.append(f"\n== {title} ==\n" + (format_table(columns, rows) if rows else "(none)"))
    return "\n".join(sections)
