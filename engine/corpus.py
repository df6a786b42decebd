"""Corpus layout and commit protocol (docs/corpus.md).

```
corpus/iteration=K/
  _plan.json                  what this iteration is made of: input fingerprint, shard count
  <table>/shard=NNNNN.parquet one file per table per shard, all five tables, always
  _shards/NNNNN.json          a shard's marker: written after all its table files are in place
  run.json                    resolved config, versions, timings, counts: written at commit
  _COMMITTED                  written last; readers see only committed iterations
  <table>/part=NNNNN.parquet  after compaction (engine/compact.py): consecutive shards in one
  _COMPACTED.json             file per table; the manifest, written once every part is in
                              place, lists the parts and their shards; from then on readers
                              read the parts, and the shard files are deleted
```

Every file is written to a hidden temporary name in its final folder, then moved into
place with ``os.replace`` (atomic on POSIX), so a reader never sees a half-written file
and a killed writer leaves only temporaries, which the next run removes. A shard without
a marker is redone in full, overwriting the same deterministic names.

Which files hold an iteration's rows is answered in one place, ``Corpus.file_groups``
(and ``Corpus.table_files``, built on it): the parts a ``_COMPACTED.json`` lists, else the
shard files. Nothing else globs ``shard=*.parquet``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.imaging import DecodeLimits, decode_image
from engine.records import file_sha256
from engine.schemas import TABLES
from engine.sources import ByteReader
from engine.storage import StorePath, location

COMMITTED = "_COMMITTED"
COMPACTED = "_COMPACTED.json"
PLAN = "_plan.json"
RUN = "run.json"
ITERATION_RE = re.compile(r"^iteration=(\d+)$")
SHARD_FILE_RE = re.compile(r"^shard=(.+)\.parquet$")


class CorpusError(Exception):
    """The corpus on disk does not match what was asked of it."""


def atomic_write_bytes(path: Path | StorePath, data: bytes, durable: bool = False) -> None:
    """Write ``data`` so that no reader sees part of it: a temporary name then a rename; on
    an object store (no rename), the final name directly: an object appears whole."""
    if isinstance(path, StorePath):
        if path.object_store:
            path.write_bytes(data)
        else:
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_bytes(data)
            temporary.rename(path)
        return
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    if durable:
        fsync_path(temporary)
    os.replace(temporary, path)


def atomic_write_json(path: Path, payload: dict, durable: bool = False) -> None:
    data = (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()
    atomic_write_bytes(path, data, durable)


def atomic_write_parquet(path: Path, table: pa.Table, durable: bool = False) -> dict:
    """``durable``: the file's bytes reach the disk (``fsync``) before it gets its name, for
    writers that delete the only other copy of the rows afterwards (compaction). Returns the
    file's facts as a shard marker records them: ``rows``, ``bytes``, ``sha256``."""
    if isinstance(path, StorePath):
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        data = sink.getvalue().to_pybytes()
        atomic_write_bytes(path, data)
        return {
            "rows": table.num_rows,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary, compression="zstd")
    if durable:
        fsync_path(temporary)
    facts = {
        "rows": table.num_rows,
        "bytes": temporary.stat().st_size,
        "sha256": file_sha256(temporary),
    }
    os.replace(temporary, path)
    return facts


def footer_rows(path: Path | StorePath) -> int:
    """The row count a Parquet file's footer states (reads the footer only)."""
    if isinstance(path, StorePath):
        with path.open_input() as handle:
            return pq.read_metadata(handle).num_rows
    return pq.read_metadata(path).num_rows


def shard_file_problems(path: Path | StorePath, recorded: dict | None, deep: bool) -> list[str]:
    """What is wrong with one shard file against what its marker recorded when it was
    written (``rows``, ``bytes``, ``sha256``; a marker older than these facts records none,
    and then only the footer is checked). ``deep`` also hashes the whole file."""
    if not path.exists():
        return [f"{path}: missing"]
    try:
        rows = footer_rows(path)
    except (OSError, pa.ArrowException) as exc:
        return [f"{path}: not a readable Parquet file ({' '.join(str(exc).split())[:120]})"]
    if not recorded:
        return []
    size = path.size() if isinstance(path, StorePath) else path.stat().st_size
    if size != recorded["bytes"] or rows != recorded["rows"]:
        return [
            f"{path}: {rows} rows in {size} bytes, its marker recorded {recorded['rows']} rows "
            f"in {recorded['bytes']} bytes"
        ]
    if deep:
        data = path.read_bytes() if isinstance(path, StorePath) else None
        actual = hashlib.sha256(data).hexdigest() if data is not None else file_sha256(path)
        if actual != recorded["sha256"]:
            return [f"{path}: its SHA-256 is not the one its marker recorded"]
    return []


def fsync_path(path: Path) -> None:
    """``fsync`` a file, or a folder (so that the names in it are on disk too). A store
    makes its writes durable before it answers them: nothing to do there."""
    if isinstance(path, StorePath):
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class FileGroup:
    """The files that hold the rows of some consecutive shards of an iteration, one file per
    table: a shard's own files as written (``shard_rows`` None), or a compacted part
    (``part=NNNNN``), whose file of each table holds its shards' rows one shard after the
    other, each shard's rows in ``STREAM_ORDER``; ``shard_rows[table]`` says how many rows
    each shard has there, in that order."""

    name: str  # "shard=00000" or "part=00000"
    files: dict[str, Path]  # table -> file (a table missing here has no file)
    shards: tuple[str, ...]
    shard_rows: dict[str, tuple[int, ...]] | None = None


def check_same_plan(recorded: dict, plan: dict, where: Path, contents: bool = True) -> None:
    """An iteration started (or committed) over other inputs, shard size or config cannot
    be resumed with this one: its shards would not match. ``contents``: also refuse inputs
    whose sizes or modification times changed (a resume; a committed iteration is final,
    its rerun only checks the names). Plans written before ``content_fingerprint`` existed
    are checked by names."""
    if recorded.get("fingerprint") != plan.get("fingerprint"):
        what = "other inputs or another shard size"
    elif contents and recorded.get(
        "content_fingerprint", plan.get("content_fingerprint")
    ) != plan.get("content_fingerprint"):
        what = "the same file names, but some input changed since (size or modification time)"
    elif recorded.get("config_hash") != plan.get("config_hash"):
        what = "another config (settings that change the rows)"
    else:
        return
    raise CorpusError(
        f"{where} was started over {what}; rerun with the same input and config to resume, "
        "or write to a new --out (or another run.iteration)"
    )


def check_same_request(recorded: dict, request: dict, where) -> None:
    """A recorded plan answers a run only if it was made for the same input, shard size and
    config (what a committed rerun or a resume checks without listing the input)."""
    for key, what in (
        ("input", "other inputs"),
        ("shard_size", "another shard size"),
        ("config_hash", "another config (settings that change the rows)"),
    ):
        if key in recorded and str(recorded[key]) != str(request.get(key)):
            raise CorpusError(
                f"{where} was started over {what} ({key}: {recorded[key]!r}, now "
                f"{request.get(key)!r}); rerun with the same input and config to resume, or "
                "write to a new --out (or another run.iteration)"
            )


def uri_within_input(uri: str, source: str, allow_outside: bool = False) -> bool:
    """Whether ``uri`` is one the input ``source`` (a run's normalised input: a folder, a
    tar, a glob, a Parquet or URL list, local or on a store) could have named: under the
    folder (a list's, a tar's, a glob's fixed part); http(s) URLs only from a list; any
    local path from a list when the run allowed paths outside it."""
    from engine.http import is_url
    from engine.sources import LIST_SUFFIXES, TAR_SEP

    if not source:
        return False
    is_list = source.lower().endswith((".parquet", *LIST_SUFFIXES))
    if is_url(uri):
        return is_list
    container = uri.split(TAR_SEP, 1)[0]
    fixed = re.split(r"[*?\[]", source, maxsplit=1)[0]
    if fixed != source or is_list or source.lower().endswith(".tar"):
        root = fixed.rsplit("/", 1)[0]
    else:
        root = source.rstrip("/")
    if "://" in container or "://" in source:
        inside = container == source or container.startswith(root + "/")
        return inside and ".." not in container.split("/")
    normal = os.path.normpath(container)
    if is_list and allow_outside:
        return True
    return normal == os.path.normpath(source) or normal.startswith(os.path.normpath(root) + os.sep)


def recorded_plan_file(plan: dict | None) -> str:
    return (plan or {}).get("plan_file") or "_plan.parquet"


class Corpus:
    """A corpus folder: iterations side by side, models beside them."""

    def __init__(self, root: str | Path | StorePath):
        self.root = location(root, "corpus")

    def iteration_dir(self, iteration: int) -> Path:
        return self.root / f"iteration={iteration}"

    def iterations(self, committed_only: bool = True) -> list[int]:
        if not self.root.is_dir():
            return []
        found = []
        for child in self.root.iterdir():
            match = ITERATION_RE.match(child.name)
            if match and (not committed_only or (child / COMMITTED).exists()):
                found.append(int(match.group(1)))
        return sorted(found)

    def is_committed(self, iteration: int) -> bool:
        return (self.iteration_dir(iteration) / COMMITTED).exists()

    def select_iterations(self, iteration: int | None = None) -> list[int]:
        """The committed iterations a reader asked for: ``[iteration]`` if it is committed,
        every committed one when ``iteration`` is None. The one place that decides which
        iterations a command may read; raises ``CorpusError`` naming the problem."""
        if not self.root.is_dir():
            raise CorpusError(f"{self.root} is not a corpus folder")
        committed = self.iterations()
        if not committed:
            raise CorpusError(f"{self.root} has no committed iteration")
        if iteration is None:
            return committed
        if iteration not in committed:
            raise CorpusError(
                f"--iteration {iteration}: not a committed iteration of {self.root} "
                f"(committed: {committed})"
            )
        return [iteration]

    def select_iteration(self, iteration: int | None = None) -> int:
        """``iteration`` if it is committed, else (None) the corpus's default one
        (``default_iteration``)."""
        if iteration is None:
            self.select_iterations(None)  # raises CorpusError when nothing is committed
            return self.default_iteration()
        return self.select_iterations(iteration)[-1]

    def default_iteration(self, before: int | None = None) -> int:
        """The iteration readers take when none is named (``export``, ``report``, the next
        ``refine``'s parent): the latest committed one (below ``before``) that was not
        judged worse than its parent on people's hold-out reviews (its ``run.json``'s
        ``review_eval.default`` is false: ``pipelines.review``). Iteration 0 always is."""
        committed = [k for k in self.iterations() if before is None or k < before]
        if not committed:
            raise CorpusError(f"{self.root} has no committed iteration" + (f" before {before}" if before is not None else ""))  # fmt: skip
        for k in reversed(committed):
            if k == 0 or (self.run_info(k).get("review_eval") or {}).get("default", True):
                return k
        return committed[0]

    def run_info(self, iteration: int) -> dict:
        return json.loads((self.iteration_dir(iteration) / RUN).read_text())

    def decode_limits(self, iteration: int) -> DecodeLimits:
        """The decode limits iteration ``iteration`` was annotated with (its config)."""
        decode = self.run_info(iteration).get("config", {}).get("decode", {})
        return DecodeLimits(**decode) if decode else DecodeLimits()

    def input_rule(self, iteration: int) -> tuple[str, bool]:
        """``(input, allow_paths_outside)`` as iteration ``iteration``'s ``run.json``
        recorded them; read once per iteration (``load_image`` asks for every image)."""
        rules = self.__dict__.setdefault("_input_rules", {})
        if iteration not in rules:
            info = self.run_info(iteration)
            source = str((info.get("plan") or {}).get("input") or "")
            allow = ((info.get("config") or {}).get("input") or {}).get("allow_paths_outside")
            rules[iteration] = (source, bool(allow))
        return rules[iteration]

    def check_input_uri(self, uri: str, iteration: int) -> None:
        """Raise ``PermissionError`` unless ``uri`` is one iteration ``iteration``'s input
        could have named (``uri_within_input``): ``images.uri`` is a corpus's own data, and a
        changed one must not make ``show``, ``report`` or ``export`` copy a local file or
        fetch a URL the input never held."""
        source, allow_outside = self.input_rule(iteration)
        if not uri_within_input(uri, source, allow_outside):
            raise PermissionError(
                f"{uri}: not under the input iteration {iteration} was made from ({source}); "
                "not read"
            )

    def load_image(self, uri: str, iteration: int, reader: ByteReader | None = None):
        """The ``HxWx3`` RGB pixels of ``uri`` decoded as iteration ``iteration`` decoded
        it (so its rows' coordinates apply). Raises ``OSError`` (``PermissionError`` for a
        URI outside the iteration's input: ``check_input_uri``) or ``ImageError``."""
        self.check_input_uri(uri, iteration)
        own = reader is None
        reader = ByteReader() if own else reader
        try:
            return decode_image(reader.read(uri), self.decode_limits(iteration)).pixels
        finally:
            if own:
                reader.close()

    def compaction(self, iteration: int) -> dict | None:
        """The iteration's compaction manifest (``_COMPACTED.json``), or None."""
        path = self.iteration_dir(iteration) / COMPACTED
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def shard_files(self, iteration: int) -> dict[str, dict[str, Path]]:
        """The shard files on disk, by shard name (in name order), then by table."""
        found: dict[str, dict[str, Path]] = {}
        for table in TABLES:
            folder = self.iteration_dir(iteration) / table
            if isinstance(folder, StorePath):
                for entry in folder.iterdir():
                    match = SHARD_FILE_RE.match(entry.name)
                    if match:
                        found.setdefault(match.group(1), {})[table] = entry
                continue
            if not folder.is_dir():
                continue
            with os.scandir(folder) as entries:
                for entry in entries:
                    match = SHARD_FILE_RE.match(entry.name)
                    if match:
                        found.setdefault(match.group(1), {})[table] = Path(entry.path)
        return {name: found[name] for name in sorted(found)}

    def file_groups(self, iteration: int) -> list[FileGroup]:
        """Which files to read for ``iteration``, in shard order: the parts of its compaction
        manifest if it has one, else its shard files.

        The manifest is looked for again after the shard files are listed: compaction deletes
        shard files only after writing the manifest, so if it is still absent then, the list
        is whole; if it appeared meanwhile, the parts are read instead."""
        manifest = self.compaction(iteration)
        if manifest is None:
            shards = self.shard_files(iteration)
            manifest = self.compaction(iteration)
            if manifest is None:
                return [
                    FileGroup(f"shard={name}", files, (name,)) for name, files in shards.items()
                ]
        folder = self.iteration_dir(iteration)
        return [
            FileGroup(
                name=f"part={part['name']}",
                files={table: folder / path for table, path in part["files"].items()},
                shards=tuple(part["shards"]),
                shard_rows={table: tuple(rows) for table, rows in part["shard_rows"].items()},
            )
            for part in manifest["parts"]
        ]

    def table_files(self, table: str, iterations: list[int] | None = None) -> list[Path]:
        """The Parquet files holding ``table``'s rows of ``iterations`` (default: every
        committed one), in shard order (see ``file_groups``)."""
        chosen = self.iterations() if iterations is None else iterations
        files = []
        for iteration in chosen:
            files.extend(
                group.files[table] for group in self.file_groups(iteration) if table in group.files
            )
        return files


class IterationWriter:
    """Writes one iteration of a corpus, shard by shard, then commits it."""

    def __init__(self, corpus: Corpus, iteration: int):
        self.corpus = corpus
        self.iteration = iteration
        self.path = corpus.iteration_dir(iteration)

    @property
    def markers_dir(self) -> Path:
        return self.path / "_shards"

    def prepare(self, plan: dict) -> None:
        """Create the folders and record the plan; refuse a plan that differs from the one
        an earlier, unfinished run of this iteration recorded (its shards would not match)."""
        plan_path = self.path / PLAN
        if plan_path.exists():
            check_same_plan(json.loads(plan_path.read_text()), plan, self.path)
        for table in TABLES:
            (self.path / table).mkdir(parents=True, exist_ok=True)
        self.markers_dir.mkdir(parents=True, exist_ok=True)
        self.remove_temporaries()
        if not plan_path.exists():
            atomic_write_json(plan_path, plan)

    def plan_for(self, request: dict, build) -> dict:
        """The iteration's plan: the one recorded if it is whole (a resume: the input is not
        listed again), else ``build(path of _plan.parquet)`` (``engine.plan.build_plan``)
        now, recorded. ``request``: ``input``, ``shard_size``, ``config_hash``; a recorded
        plan made for another one is refused (``check_same_request``)."""
        recorded = self.recorded_plan()
        if recorded is not None and recorded.get("plan_file"):
            check_same_request(recorded, request, self.path)
            return recorded
        self.path.mkdir(parents=True, exist_ok=True)
        summary = build(self.path / recorded_plan_file(None))
        plan = {**request, **summary.to_dict()}
        if recorded is not None:  # begun by an engine that kept no _plan.parquet: as then
            check_same_plan(recorded, plan, self.path)
        atomic_write_json(self.path / PLAN, plan)
        return plan

    def recorded_plan(self) -> dict | None:
        plan_path = self.path / PLAN
        if not plan_path.exists():
            return None
        try:
            plan = json.loads(plan_path.read_text())
        except ValueError:
            plan = None
        if not isinstance(plan, dict):
            raise CorpusError(
                f"{plan_path} is damaged (not a JSON object): delete iteration "
                f"{self.iteration}'s folder to run it again from the start"
            )
        return plan

    def remove_temporaries(self) -> None:
        if isinstance(self.path, StorePath) and self.path.object_store:
            return  # nothing is written under a temporary name there
        for temporary in self.path.rglob(".*.tmp"):
            temporary.unlink(missing_ok=True)

    def done_indexes(self) -> set[int]:
        """The indexes of the shards already complete (their markers' names: one listing,
        no marker read)."""
        if not self.markers_dir.is_dir():
            return set()
        return {int(marker.stem) for marker in self.markers_dir.glob("*.json")}

    def read_marker(self, index: int, digits: int = 5) -> dict:
        return json.loads((self.markers_dir / f"{index:0{digits}d}.json").read_text())

    def iter_markers(self) -> Iterator[dict]:
        """Every marker, read one at a time, in name order."""
        if self.markers_dir.is_dir():
            for marker in sorted(self.markers_dir.glob("*.json")):
                yield json.loads(marker.read_text())

    def done_shards(self) -> dict[int, dict]:
        """Markers of the shards already complete, by shard index."""
        return {int(marker["shard"]): marker for marker in self.iter_markers()}

    def write_shard(self, shard_name: str, tables: dict[str, pa.Table], marker: dict) -> None:
        """Write every table of one shard, then its marker."""
        marker = {**marker, "files": self.write_tables(shard_name, tables)}
        self.write_marker(shard_name, marker)

    def write_marker(self, shard_name: str, marker: dict) -> None:
        """The shard's marker: written once its table files are all in place (by a worker,
        ``write_tables``), it makes the shard done."""
        atomic_write_json(self.markers_dir / f"{shard_name}.json", marker)

    def write_tables(self, shard_name: str, tables: dict[str, pa.Table]) -> dict[str, dict]:
        """Every table file of one shard, each under its final name once whole (workers
        call this, then send the marker to the driver). Returns each file's facts (rows,
        bytes, SHA-256), which the marker records under ``files`` for ``verify_marker``."""
        facts = {}
        for table_name, schema in TABLES.items():
            table = tables[table_name]
            if not table.schema.equals(schema):
                raise CorpusError(
                    f"shard {shard_name}: table {table_name} does not have the contract schema"
                )
            path = self.path / table_name / f"shard={shard_name}.parquet"
            facts[table_name] = atomic_write_parquet(path, table)
        return facts

    def marker_problems(
        self, marker_path: Path, deep: bool = False
    ) -> tuple[dict | None, list[str]]:
        """``(marker, problems)`` of one marker file: a marker that is not JSON, whose name is
        not its shard's, or whose shard files are missing, truncated or other than it
        recorded (``shard_file_problems``) has problems, and its shard is not done."""
        try:
            marker = json.loads(marker_path.read_text())
            index = int(marker["shard"])
        except (ValueError, KeyError, TypeError) as exc:
            return None, [f"{marker_path}: not a shard marker ({type(exc).__name__})"]
        if index != int(marker_path.stem):
            return None, [f"{marker_path}: names shard {index}, not {marker_path.stem}"]
        problems = []
        recorded = marker.get("files") or {}
        for table in TABLES:
            path = self.path / table / f"shard={marker_path.stem}.parquet"
            problems += shard_file_problems(path, recorded.get(table), deep)
        return marker, problems

    def iter_verified_markers(self, problems: list[str], deep: bool = False) -> Iterator[dict]:
        """The markers of the shards that are done and whose files are whole, one at a time
        in name order; a marker with problems is deleted (its shard is redone) and its
        problems appended to ``problems``."""
        if not self.markers_dir.is_dir():
            return
        for marker_path in sorted(self.markers_dir.glob("*.json")):
            marker, found = self.marker_problems(marker_path, deep)
            if found:
                problems.extend(found)
                marker_path.unlink(missing_ok=True)
            else:
                yield marker

    def commit(self, run_info: dict) -> None:
        """Write ``run.json``, then ``_COMMITTED`` — only when every shard the plan names
        has its marker (a commit over a missing shard would hide its rows for good)."""
        planned = int((self.recorded_plan() or {}).get("n_shards", 0))
        done = self.done_indexes()
        missing = sorted(set(range(planned)) - done)
        if missing:
            raise CorpusError(
                f"{self.path}: not committed: {len(missing)} of {planned} planned shards have "
                f"no marker (first: {missing[0]}); rerun the same command to finish them"
            )
        atomic_write_json(self.path / RUN, run_info)
        atomic_write_bytes(self.path / COMMITTED, b"")


def verify_iteration(corpus: Corpus, iteration: int) -> list[str]:
    """Every problem of a committed iteration's files, one sentence each (``fld verify``):
    shard files against their markers' row counts, sizes and SHA-256 (the whole file is
    read), or, once compacted, each part's footer against the manifest's row counts; and
    every planned shard has its marker."""
    writer = IterationWriter(corpus, iteration)
    manifest = corpus.compaction(iteration)
    problems: list[str] = []
    if manifest is not None:
        for part in manifest["parts"]:
            for table, name in part["files"].items():
                path = writer.path / name
                found = shard_file_problems(path, None, deep=False)
                if not found and (rows := footer_rows(path)) != part["rows"][table]:
                    found = [f"{path}: {rows} rows, the manifest recorded {part['rows'][table]}"]
                problems += found
        return problems
    planned = int((writer.recorded_plan() or {}).get("n_shards", 0))
    found = set()
    if writer.markers_dir.is_dir():
        for marker_path in sorted(writer.markers_dir.glob("*.json")):
            marker, marker_found = writer.marker_problems(marker_path, deep=True)
            problems += marker_found
            if marker is not None:
                found.add(int(marker["shard"]))
    missing = sorted(set(range(planned)) - found)
    if missing:
        problems.append(
            f"{writer.path}: {len(missing)} of {planned} planned shards have no marker "
            f"(first: {missing[0]})"
        )
    return problems


class CorpusLocked(CorpusError):
    """Another live process holds the corpus's writer lock."""


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None if there is
    no such process: a pid reused by a later process has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime


class CorpusLock:
    """One writer per corpus: ``fld run`` and ``fld refine`` hold ``CORPUS/_LOCK`` while they
    write (``with CorpusLock(root, "run"):``). The file names its holder (host, pid, the
    pid's start time, the command, when). A second writer exits naming the holder; a lock
    whose holder died (same host, pid gone or reused) is taken over with a warning. Local
    folders create the file exclusively (``O_EXCL``); a store has no such create in pyarrow,
    so there the lock is checked, then written: it catches a forgotten second run, not two
    started in the same instant."""

    NAME = "_LOCK"

    def __init__(self, root: Path | StorePath, command: str):
        self.path = root / self.NAME
        pid = os.getpid()
        self.holder = {
            "host": socket.gethostname(),
            "pid": pid,
            "pid_started": process_start_ticks(pid),
            "command": command,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    @classmethod
    def at(cls, out: str | Path | StorePath, command: str) -> CorpusLock:
        """The lock of the corpus at ``out`` (a folder, made absolute, or a store URI)."""
        place = location(out, "--out")
        return cls(place if isinstance(place, StorePath) else place.resolve(), command)

    def __enter__(self) -> CorpusLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def is_stale(self, holder: dict) -> bool:
        if holder.get("host") != socket.gethostname():
            return False  # another machine's process: cannot be checked from here
        pid = holder.get("pid")
        return not isinstance(pid, int) or process_start_ticks(pid) != holder.get("pid_started")

    def acquire(self) -> None:
        data = json.dumps(self.holder, indent=2).encode()
        if isinstance(self.path, StorePath):
            if self.path.exists():
                self.check_holder()
            self.path.write_bytes(data)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self.check_holder()  # raises for a live holder; removes a stale lock
                continue
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            return

    def check_holder(self) -> None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            holder = {}
        if holder and not self.is_stale(holder):
            raise CorpusLocked(
                f"{self.path.parent} is being written by `fld {holder.get('command')}` "
                f"(host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}); "
                f"wait for it, or delete {self.path} if that process is gone"
            )
        print(
            f"warning: taking over {self.path} from a process that is gone ({holder or 'unreadable'})",
            file=sys.stderr,
        )
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if holder.get("pid") == self.holder["pid"] and holder.get("host") == self.holder["host"]:
            self.path.unlink(missing_ok=True)


# Errors worth another try: a download refused for now (408, 425, 429, 5xx), timed out or
# cut off. 404s, bodies over the size limit, undecodable images and poison images are not.
TRANSIENT_ERROR = r"HTTP (408|425|429|5\d\d)|timed out|ConnectionError|ChunkedEncodingError"


def reopen_for_retry(corpus: Corpus, iteration: int) -> list[str]:
    """Make the shards of ``iteration`` that hold transient ``download_failed`` rows
    undone (their markers removed; a committed iteration uncommitted first), so that a run
    redoes them and commits again; returns their names. Refused for a compacted iteration
    (its shard files are gone) and for one a later iteration was built on."""
    import duckdb

    from engine.storage import sql_path

    writer = IterationWriter(corpus, iteration)
    if corpus.compaction(iteration) is not None:
        raise CorpusError(
            f"iteration {iteration} is compacted: its shards cannot be redone one by one"
        )
    later = [k for k in corpus.iterations(committed_only=False) if k > iteration]
    if later:
        raise CorpusError(
            f"iteration {later[0]} was built on iteration {iteration}: retrying its errors "
            "would change what the later iteration was made from"
        )
    files = [
        writer.path / "errors" / f"shard={path.stem}.parquet"
        for path in sorted(writer.markers_dir.glob("*.json"))
    ] if writer.markers_dir.is_dir() else []  # fmt: skip
    files = [f for f in files if f.exists()]
    if not files:
        return []
    listing = ", ".join("'" + sql_path(f).replace("'", "''") + "'" for f in files)
    rows = (
        duckdb.connect()
        .execute(
            f"SELECT DISTINCT filename FROM read_parquet([{listing}], filename = true) "
            "WHERE error_type = 'download_failed' AND regexp_matches(message, ?)",
            [TRANSIENT_ERROR],
        )
        .fetchall()
    )
    shards = sorted(SHARD_FILE_RE.match(Path(name).name).group(1) for (name,) in rows)
    if shards and corpus.is_committed(iteration):
        (writer.path / COMMITTED).unlink()  # first: a crash now leaves a resumable run
    for shard in shards:
        (writer.markers_dir / f"{shard}.json").unlink(missing_ok=True)
    return shards
