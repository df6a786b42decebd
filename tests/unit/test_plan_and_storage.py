"""The stored plan (``engine.plan``) and locations (``engine.storage``): real Parquet, real
DuckDB, pyarrow's in-memory filesystem standing in for a store in this process."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.corpus import Corpus, CorpusError, IterationWriter, atomic_write_json
from engine.plan import PLAN_FILE, build_plan, iter_shards, shard_digits
from engine.sources import Shard, fingerprint, list_inputs, make_shards
from engine.storage import StorageError, StorePath, location, scheme_of


def write_path_list(path: Path, uris: list[str]) -> None:
    pq.write_table(pa.table({"path": uris}), path, row_group_size=1000)


def test_plan_shards_equal_make_shards_and_names_sort_as_indexes(tmp_path):
    rng = random.Random(7)
    uris = [f"/data/img-{rng.randrange(10**9):09d}-ü{i}.jpg" for i in range(5003)]
    rng.shuffle(uris)
    listing = tmp_path / "list.parquet"
    write_path_list(listing, uris)
    target = tmp_path / PLAN_FILE
    summary = build_plan(str(listing), None, 7, target, allow_outside=True)  # /data/...
    assert summary.n_inputs == 5003 and summary.n_shards == 715
    assert summary.fingerprint == fingerprint(uris, 7)  # the same as the in-memory plan's
    planned = list(iter_shards(target, summary.digits))
    expected = make_shards(uris, 7)
    assert [s.uris for s in planned] == [s.uris for s in expected]
    assert [s.index for s in planned] == list(range(715))
    skipped = list(iter_shards(target, summary.digits, skip={0, 3, 714}))
    assert [s.index for s in skipped] == [i for i in range(715) if i not in {0, 3, 714}]
    # Names are as wide as the last shard's index needs (at least 5): name order = index order.
    assert shard_digits(1) == 5  # small iterations keep the names they always had
    assert shard_digits(99_999) == 5 and shard_digits(100_001) == 6
    assert shard_digits(1_000_000_000) == 9
    wide = [Shard(i, (), shard_digits(1_000_000_000)).name for i in (9, 10, 999_999_999)]
    assert wide == sorted(wide) and len(wide[0]) == 9


def test_plan_of_a_folder_is_its_sorted_listing(tmp_path):
    folder = tmp_path / "images"
    for name in ("b.jpg", "a.png", "sub/c.jpg", ".hidden.jpg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    summary = build_plan(str(folder), None, 2, tmp_path / PLAN_FILE)
    uris = [u for s in iter_shards(tmp_path / PLAN_FILE, summary.digits) for u in s.uris]
    assert uris == list_inputs(str(folder)) and len(uris) == 3
    (folder / "b.jpg").write_bytes(b"changed")  # a file changed: the content stamp moves
    again = build_plan(str(folder), None, 2, tmp_path / "again.parquet")
    assert again.fingerprint == summary.fingerprint
    assert again.content_fingerprint != summary.content_fingerprint


def test_a_resume_reads_the_stored_plan_and_refuses_another_request(tmp_path):
    listing = tmp_path / "list.parquet"
    write_path_list(listing, [f"/x/{i}.jpg" for i in range(10)])
    writer = IterationWriter(Corpus(tmp_path / "corpus"), 0)
    request = {"input": str(listing), "shard_size": 4, "config_hash": "c"}
    builds = []

    def build(target):
        builds.append(target)
        return build_plan(str(listing), None, 4, target)

    plan = writer.plan_for(request, build)
    assert plan["n_shards"] == 3 and len(builds) == 1
    listing.unlink()  # a resume does not list the input again
    assert writer.plan_for(request, build) == plan and len(builds) == 1
    with pytest.raises(CorpusError, match="another shard size"):
        writer.plan_for({**request, "shard_size": 5}, build)
    with pytest.raises(CorpusError, match="another config"):
        writer.plan_for({**request, "config_hash": "d"}, build)


def test_locations_and_unsupported_schemes(tmp_path):
    assert location(str(tmp_path)) == tmp_path
    assert location(f"file://{tmp_path}") == tmp_path
    assert scheme_of("C:/data") is None and scheme_of("s3://b/k") == "s3"
    with pytest.raises(StorageError, match=r"unsupported scheme nosuch://"):
        location("nosuch://bucket/corpus", "--out")
    with pytest.raises(StorageError, match="URL list"):
        location("https://example.com/images/", "input")


def test_a_corpus_on_a_store_writes_reads_and_lists(tmp_path):
    """``memory://`` (fsspec's in-memory filesystem through pyarrow) is a store without
    rename, as S3 is: a writer's files appear under their final names, never temporaries."""
    root = location("memory://fld-unit/corpus")
    assert isinstance(root, StorePath) and root.object_store
    corpus = Corpus(root)
    writer = IterationWriter(corpus, 0)
    writer.prepare({"n_shards": 1, "fingerprint": "f", "config_hash": "c"})
    from engine.schemas import TABLES

    tables = {name: schema.empty_table() for name, schema in TABLES.items()}
    writer.write_shard("00000", tables, {"shard": 0, "rows": {}})
    writer.commit({"iteration": 0})
    assert corpus.iterations() == [0]
    assert writer.done_indexes() == {0}
    names = sorted(p.name for p in root.rglob("*"))
    assert "_COMMITTED" in names and not [n for n in names if n.endswith(".tmp")]
    assert [g.name for g in corpus.file_groups(0)] == ["shard=00000"]
    atomic_write_json(root / "note.json", {"a": 1})
    assert json.loads((root / "note.json").read_text()) == {"a": 1}


def test_duckdb_on_a_store_asks_about_and_reads_each_file_once():
    """Every object request is a round trip to the store: a connection's queries ask about
    each file (size, time) once and fetch it once, however many queries read it."""
    import collections

    import fsspec
    import pyarrow.fs as pafs

    from engine.storage import duckdb_filesystem

    requests = collections.Counter()

    class CountingHandler(pafs.FSSpecHandler):
        def get_file_info(self, paths):
            requests["info"] += len(paths)
            return super().get_file_info(paths)

        def open_input_stream(self, path):
            requests["read"] += 1
            return super().open_input_stream(path)

        def open_input_file(self, path):
            requests["read"] += 1
            return super().open_input_file(path)

    store = pafs.PyFileSystem(CountingHandler(fsspec.filesystem("memory")))
    store.create_dir("fld-count")
    for shard in range(3):
        table = pa.table({"shard": [shard] * 100, "score": [i / 100 for i in range(100)]})
        with store.open_output_stream(f"fld-count/{shard}.parquet") as sink:
            pq.write_table(table, sink)
    requests.clear()
    import duckdb

    connection = duckdb.connect()
    connection.register_filesystem(duckdb_filesystem(store))
    files = ", ".join(f"'fldstore://fld-count/{shard}.parquet'" for shard in range(3))
    connection.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet([{files}])")
    for _ in range(4):
        assert connection.execute("SELECT count(*), sum(shard) FROM t").fetchone() == (300, 300)
    assert connection.execute("SELECT max(score) FROM t WHERE shard = 2").fetchone() == (0.99,)
    assert requests == {"info": 3, "read": 3}, requests

    # A cache too small for the files: each of DuckDB's opens is a read again (a one-pass
    # reader's cache holds the few files it is reading, which DuckDB opens several times).
    requests.clear()
    small = duckdb.connect()
    small.register_filesystem(duckdb_filesystem(store, cache_bytes=0))
    for _ in range(2):
        assert small.execute(f"SELECT count(*) FROM read_parquet([{files}])").fetchone() == (300,)
    assert requests["info"] == 3 and requests["read"] > 6, requests


def test_a_folder_on_a_store_is_listed_one_folder_at_a_time():
    """Files in nested folders are found; hidden files and folders are not; a folder with
    no file is a clear error. pyarrow is asked one folder at a time (never recursively:
    it would hold a whole store's listing in memory)."""
    import pyarrow.fs as pafs

    root = location("memory://fld-walk/photos")
    for key in ("a.jpg", "sub/b.jpg", "sub/deeper/c.jpg", ".hidden.jpg", ".cache/d.jpg", "z/e.jpg"):  # fmt: skip
        (root / key).parent.mkdir()
        (root / key).write_bytes(b"x")
    asked = []
    original = root.fs.get_file_info

    class Watching:  # the store's filesystem, noting what it is asked
        def __getattr__(self, name):
            return getattr(root.fs, name)

        def get_file_info(self, selector):
            asked.append(selector.recursive)
            return original(selector)

    watched = StorePath(Watching(), root.path, root.scheme)
    found = [p.path.split("/photos/", 1)[1] for p in watched.files_below()]
    assert found == ["a.jpg", "sub/b.jpg", "sub/deeper/c.jpg", "z/e.jpg"]
    assert asked and not any(asked)  # 4 folders, each listed alone
    assert len(asked) == 4 and isinstance(root.fs, pafs.FileSystem)
    uris = list_inputs("memory://fld-walk/photos")
    assert [u.rsplit("/photos/", 1)[1] for u in uris] == found
    with pytest.raises(Exception, match="holds no file"):
        list_inputs("memory://fld-walk/nothing-here")
