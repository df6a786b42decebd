"""Corpus layout and commit protocol (see DESIGN.md).

```
corpus/iteration=K/
  _plan.json                  what this iteration is made of: input fingerprint, shard count
  <table>/shard=NNNNN.parquet one file per table per shard, all five tables, always
  _shards/NNNNN.json          a shard's marker: written after all its table files are in place
  run.json                    resolved config, versions, timings, counts: written at commit
  _COMMITTED                  written last; readers see only committed iterations
```

Every file is written to a hidden temporary name in its final folder, then moved into
place with ``os.replace`` (atomic on POSIX), so a reader never sees a half-written file
and a killed writer leaves only temporaries, which the next run removes. A shard without
a marker is redone in full, overwriting the same deterministic names.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.schemas import TABLES

COMMITTED = "_COMMITTED"
PLAN = "_plan.json"
RUN = "run.json"
ITERATION_RE = re.compile(r"^iteration=(\d+)$")


class CorpusError(Exception):
    """The corpus on disk does not match what was asked of it."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def atomic_write_json(path: Path, payload: dict) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary, compression="zstd")
    os.replace(temporary, path)


def check_same_plan(recorded: dict, plan: dict, where: Path) -> None:
    """An iteration started (or committed) over other inputs, shard size or config cannot
    be resumed with this one: its shards would not match."""
    if recorded.get("fingerprint") != plan.get("fingerprint"):
        what = "other inputs or another shard size"
    elif recorded.get("config_hash") != plan.get("config_hash"):
        what = "another config (settings that change the rows)"
    else:
        return
    raise CorpusError(
        f"{where} was started over {what}; rerun with the same input and config to resume, "
        "or write to a new --out (or another run.iteration)"
    )


class Corpus:
    """A corpus folder: iterations side by side, models beside them."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

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

    def run_info(self, iteration: int) -> dict:
        return json.loads((self.iteration_dir(iteration) / RUN).read_text())

    def table_files(self, table: str, iterations: list[int] | None = None) -> list[Path]:
        chosen = self.iterations() if iterations is None else iterations
        files = []
        for iteration in chosen:
            files.extend(sorted((self.iteration_dir(iteration) / table).glob("shard=*.parquet")))
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

    def recorded_plan(self) -> dict | None:
        plan_path = self.path / PLAN
        return json.loads(plan_path.read_text()) if plan_path.exists() else None

    def remove_temporaries(self) -> None:
        for temporary in self.path.rglob(".*.tmp"):
            temporary.unlink(missing_ok=True)

    def done_shards(self) -> dict[int, dict]:
        """Markers of the shards already complete, by shard index."""
        done = {}
        if self.markers_dir.is_dir():
            for marker in sorted(self.markers_dir.glob("*.json")):
                done[int(marker.stem)] = json.loads(marker.read_text())
        return done

    def write_shard(self, shard_name: str, tables: dict[str, pa.Table], marker: dict) -> None:
        """Write every table of one shard, then its marker."""
        for table_name, schema in TABLES.items():
            table = tables[table_name]
            if not table.schema.equals(schema):
                raise CorpusError(
                    f"shard {shard_name}: table {table_name} does not have the contract schema"
                )
            atomic_write_parquet(self.path / table_name / f"shard={shard_name}.parquet", table)
        atomic_write_json(self.markers_dir / f"{shard_name}.json", marker)

    def commit(self, run_info: dict) -> None:
        atomic_write_json(self.path / RUN, run_info)
        atomic_write_bytes(self.path / COMMITTED, b"")
