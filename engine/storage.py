"""Where a corpus or an input lives: a local path, or a URI on any ``pyarrow.fs`` / fsspec
filesystem (``s3://``, ``gs://``, ``hdfs://``, ...).

``location(uri)`` gives a ``pathlib.Path`` for a local path (and ``file://``), and a
``StorePath`` for everything else. ``StorePath`` has the part of ``pathlib.Path``'s API
that the corpus code uses (``/``, ``name``, ``parent``, ``exists``, ``is_dir``,
``iterdir``, ``glob``, ``read_bytes``, ``write_bytes``, ``mkdir``, ``unlink``), so
``engine.corpus`` reads and writes both kinds through one code path; the few places that
differ (atomic writes, Parquet and DuckDB access) branch on ``is_remote``.

Credentials and endpoints are configured as the store's own tools are:

- S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
  ``AWS_DEFAULT_REGION``/``AWS_REGION``, profiles and instance roles (the AWS SDK's own
  chain, inside pyarrow), and ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` for
  S3-compatible servers (MinIO, Ceph, moto). pyarrow's ``S3FileSystem`` constructor does
  not read the endpoint variables itself, so they are read here.
- GCS, HDFS: pyarrow's ``FileSystem.from_uri`` (``GOOGLE_APPLICATION_CREDENTIALS``,
  ``HADOOP_HOME``/``CLASSPATH``...).
- Any other scheme an installed fsspec package registers (``az://`` with adlfs, ...),
  wrapped with ``pyarrow.fs.FSSpecHandler``.

A scheme nothing handles is a ``StorageError`` naming it, never a local folder called
``s3:``.

Writes on object stores: an object becomes visible only once its upload completes, so a
reader never sees half an object; there is no rename, so writers use deterministic names
and write a shard's marker after its table files (``engine.corpus``).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import pyarrow.fs as pafs

URI_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$")
# Object stores: no rename, no folders of their own, an object appears whole when written.
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"}
DUCKDB_PROTOCOL = "fldstore"  # the prefix DuckDB sees for a store's files (engine.query)


# The variables that configure access to stores; a driver joining a cluster passes its own to
# the workers (runtime_env), as a local Ray's workers inherit them.
STORE_ENV_PREFIXES = ("AWS_", "GOOGLE_APPLICATION_CREDENTIALS", "GCS_", "AZURE_", "HADOOP_", "ARROW_S3_")  # fmt: skip


def store_env() -> dict[str, str]:
    """This process's store variables (``STORE_ENV_PREFIXES``)."""
    return {key: value for key, value in os.environ.items() if key.startswith(STORE_ENV_PREFIXES)}


class StorageError(ValueError):
    """A location that cannot be used: an unsupported scheme, a missing bucket, ..."""


def scheme_of(uri: str) -> str | None:
    """``"s3"`` for ``s3://bucket/key``; None for a local path (a Windows drive letter is
    not a scheme: one character)."""
    match = URI_RE.match(str(uri))
    if match and len(match.group(1)) > 1:
        return match.group(1).lower()
    return None


def is_remote(uri) -> bool:
    """True for a ``StorePath`` or a URI with a scheme other than ``file``."""
    if isinstance(uri, StorePath):
        return True
    scheme = scheme_of(str(uri))
    return scheme is not None and scheme != "file"


def location(uri: str | Path | StorePath, what: str = "path") -> Path | StorePath:
    """The place ``uri`` names: a ``Path`` (local; ``file://`` stripped) or a ``StorePath``.
    ``what`` names the setting in errors (``--out``, ``input``)."""
    if isinstance(uri, (Path, StorePath)):
        return uri
    text = str(uri)
    scheme = scheme_of(text)
    if scheme is None:
        return Path(text)
    if scheme == "file":
        return Path(URI_RE.match(text).group(2))
    if scheme in ("http", "https"):
        raise StorageError(
            f"{what}: {text} is a web address; http(s) URLs are inputs listed in a URL list "
            "(a Parquet, CSV or TSV file with a column of URLs), not a folder to list or write"
        )
    path = URI_RE.match(text).group(2).rstrip("/")
    return StorePath(filesystem_for(scheme, path.split("/", 1)[0], what), path, scheme)


def filesystem_for(scheme: str, authority: str, what: str = "path") -> pafs.FileSystem:
    """One filesystem object per scheme (and bucket, whose region may differ) and store
    settings, reused."""
    return cached_filesystem(scheme, authority, what, tuple(sorted(store_env().items())))


@lru_cache(maxsize=32)
def cached_filesystem(scheme: str, authority: str, what: str, settings: tuple) -> pafs.FileSystem:
    if scheme in ("s3", "s3a"):
        return s3_filesystem()
    try:
        filesystem, _ = pafs.FileSystem.from_uri(f"{scheme}://{authority}")
        return filesystem
    except (OSError, ValueError, NotImplementedError) as arrow_error:
        reason = str(arrow_error)
    try:
        import fsspec

        handler = pafs.FSSpecHandler(fsspec.filesystem(scheme))
        return pafs.PyFileSystem(handler)
    except (ImportError, ValueError) as fsspec_error:
        raise StorageError(
            f"{what}: unsupported scheme {scheme}:// ({reason}; fsspec: {fsspec_error}). "
            "Local paths, s3://, gs://, hdfs:// and schemes of installed fsspec packages work"
        ) from fsspec_error


def s3_filesystem() -> pafs.S3FileSystem:
    """S3 configured from the AWS variables (see the module docstring)."""
    options: dict = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        match = URI_RE.match(endpoint)
        if match:
            options["scheme"] = match.group(1)
            options["endpoint_override"] = match.group(2).rstrip("/")
        else:
            options["endpoint_override"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options)


class StorePath:
    """A file or folder on a ``pyarrow.fs`` filesystem, named like ``s3://bucket/key``.

    ``path`` is the filesystem's own path (``bucket/key``: no scheme, no trailing slash).
    Picklable (the filesystem pickles), so Ray workers get it as it is."""

    is_remote = True

    def __init__(self, filesystem: pafs.FileSystem, path: str, scheme: str):
        self.fs = filesystem
        self.path = path.rstrip("/")
        self.scheme = scheme

    # -- naming --------------------------------------------------------------------------
    def __truediv__(self, other: str) -> StorePath:
        return StorePath(self.fs, f"{self.path}/{str(other).strip('/')}", self.scheme)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}"

    def __repr__(self) -> str:
        return f"StorePath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, StorePath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: StorePath) -> bool:
        return str(self) < str(other)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0] if "." in self.name[1:] else self.name

    @property
    def suffix(self) -> str:
        return "." + self.name.rsplit(".", 1)[1] if "." in self.name[1:] else ""

    @property
    def parent(self) -> StorePath:
        return StorePath(self.fs, self.path.rsplit("/", 1)[0], self.scheme)

    def with_name(self, name: str) -> StorePath:
        return self.parent / name

    def resolve(self) -> StorePath:
        return self

    @property
    def object_store(self) -> bool:
        """No rename here: write final names directly (an object appears whole)."""
        return self.scheme in OBJECT_STORES

    @property
    def duckdb_uri(self) -> str:
        """The name DuckDB reads this file by, through ``duckdb_filesystem(self.fs)``."""
        return f"{DUCKDB_PROTOCOL}://{self.path}"

    # -- queries -------------------------------------------------------------------------
    def info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def size(self) -> int:
        return int(self.info().size or 0)

    def iterdir(self) -> list[StorePath]:
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        return [StorePath(self.fs, info.path, self.scheme) for info in self.fs.get_file_info(selector)]  # fmt: skip

    def glob(self, pattern: str) -> list[StorePath]:
        """Entries of this folder whose name matches ``pattern`` (one level, like
        ``Path.glob`` without ``/`` or ``**``)."""
        return sorted(child for child in self.iterdir() if fnmatch.fnmatchcase(child.name, pattern))

    def rglob(self, pattern: str) -> list[StorePath]:
        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
        return sorted(
            StorePath(self.fs, info.path, self.scheme)
            for info in self.fs.get_file_info(selector)
            if fnmatch.fnmatchcase(info.path.rsplit("/", 1)[-1], pattern)
        )

    def files_below(self) -> Iterator[StorePath]:
        """Every non-hidden file below this folder (hidden folders skipped too), one folder's
        listing at a time: pyarrow lists a whole selector into memory, so a recursive
        listing of a store with 100M objects would hold them all at once."""
        selector = pafs.FileSelector(self.path, recursive=False, allow_not_found=True)
        folders = []
        for info in sorted(self.fs.get_file_info(selector), key=lambda entry: entry.path):
            name = info.path.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("."):
                continue
            if info.type == pafs.FileType.File:
                yield StorePath(self.fs, info.path, self.scheme)
            elif info.type == pafs.FileType.Directory:
                folders.append(StorePath(self.fs, info.path, self.scheme))
        for folder in folders:
            yield from folder.files_below()

    # -- reading and writing -------------------------------------------------------------
    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.path) as stream:
                return stream.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if not self.exists():
                raise FileNotFoundError(f"{self} does not exist") from exc
            raise

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def open_input(self):
        """A seekable file (for ``tarfile`` and ``pyarrow.parquet``)."""
        return self.fs.open_input_file(self.path)

    def write_bytes(self, data: bytes) -> None:
        with self.fs.open_output_stream(self.path) as stream:
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        if not self.object_store:  # object stores have no folders: keys imply them
            self.fs.create_dir(self.path, recursive=parents)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rename(self, target: StorePath) -> None:
        self.fs.move(self.path, target.path)

    def delete_tree(self) -> None:
        self.fs.delete_dir(self.path)


# A DuckDB connection on a store keeps, for its lifetime, what it learnt of each file (size,
# time, existence) and the whole bytes of files up to WHOLE_FILE_BYTES, WHOLE_FILES_BYTES in all
# (least recently used out first). A corpus's files do not change under a reader (shards and
# parts are written once, under new names), and every object request costs a round trip:
# without this, each query on a stored corpus asked about every file again, and read each
# Parquet footer and column chunk with requests of its own (``fld stats`` on 35 files on a
# loopback S3 server took 6x its time on local files).
WHOLE_FILE_BYTES = 32 << 20
WHOLE_FILES_BYTES = 256 << 20
ONE_PASS_CACHE_BYTES = 64 << 20  # compaction and exports (duckdb_connection)


def duckdb_filesystem(filesystem: pafs.FileSystem, cache_bytes: int = WHOLE_FILES_BYTES):
    """An fsspec filesystem over ``filesystem`` for ``DuckDBPyConnection.register_filesystem``:
    DuckDB then reads ``fldstore://bucket/key`` through pyarrow (its own S3 support is an
    extension that would have to be downloaded, which these machines cannot). One per
    connection: it caches (see ``WHOLE_FILE_BYTES``), up to ``cache_bytes`` of files. DuckDB
    opens a file several times in one query (its metadata, then each scan), so even a
    reader that reads each file once (compaction, exports) keeps the last few. fsspec's own caching file systems do
    not apply: its block caches need its buffered files, which ``ArrowFSWrapper`` does not
    make, and ``simplecache`` would still ask the store about each file on every query."""
    import io
    import threading
    from collections import OrderedDict
    from datetime import UTC, datetime

    from fsspec.implementations.arrow import ArrowFSWrapper

    class StoreForDuckDB(ArrowFSWrapper):
        protocol = DUCKDB_PROTOCOL
        cachable = False  # fsspec would otherwise share one instance (and its cache) per store

        def __init__(self, fs, **kwargs):
            super().__init__(fs, **kwargs)
            self.infos: dict[str, dict] = {}
            self.blobs: OrderedDict[str, bytes] = OrderedDict()
            self.blob_bytes = 0  # the sum of the blobs' sizes
            self.lock = threading.Lock()

        @classmethod
        def _strip_protocol(cls, path):
            path = (
                path[len(DUCKDB_PROTOCOL) + 3 :]
                if path.startswith(f"{DUCKDB_PROTOCOL}://")
                else path
            )
            return path.rstrip("/")

        def info(self, path, **kwargs):
            path = self._strip_protocol(path)
            if path not in self.infos:
                self.infos[path] = super().info(path, **kwargs)
            return self.infos[path]

        def modified(self, path):
            # DuckDB asks on every open; a store that keeps no times (fsspec's memory) gives 0.
            return self.info(path)["mtime"] or datetime.fromtimestamp(0, UTC)

        def exists(self, path, **kwargs):
            try:
                self.info(path)
            except FileNotFoundError:
                return False
            return True

        def glob(self, path, **kwargs):
            # DuckDB globs every name it is given; a name without a pattern is the file itself.
            if re.search(r"[*?[]", path):
                return super().glob(path, **kwargs)
            path = self._strip_protocol(path)
            return [path] if self.exists(path) and self.info(path)["type"] == "file" else []

        def _open(self, path, mode="rb", **kwargs):
            path = self._strip_protocol(path)
            if mode != "rb":
                self.infos.pop(path, None)
                with self.lock:
                    self.blob_bytes -= len(self.blobs.pop(path, b""))
                return super()._open(path, mode, **kwargs)
            with self.lock:  # DuckDB's scan threads call in at once
                data = self.blobs.get(path)
                if data is not None:
                    self.blobs.move_to_end(path)
            if data is not None:
                return io.BytesIO(data)
            if self.info(path)["size"] > WHOLE_FILE_BYTES:
                return super()._open(path, mode, **kwargs)
            with self.fs.open_input_stream(path) as stream:
                data = stream.read()
            with self.lock:
                if path not in self.blobs:  # another scan thread may have fetched it too
                    self.blobs[path] = data
                    self.blob_bytes += len(data)
                while self.blobs and self.blob_bytes > cache_bytes:
                    self.blob_bytes -= len(self.blobs.popitem(last=False)[1])
            return io.BytesIO(data)

    return StoreForDuckDB(filesystem)


def sql_path(path: Path | StorePath) -> str:
    """The name DuckDB reads ``path`` by (see ``duckdb_filesystem``). DuckDB takes any name
    holding ``*``, ``?`` or ``[`` as a glob: a corpus at ``c[1]`` read the files of ``c1``.
    Each such character of a local path is written as a one-character class, which matches
    only itself (``[[]``, ``[*]``, ``[?]``)."""
    if isinstance(path, StorePath):
        return path.duckdb_uri
    return re.sub(r"([\[*?])", r"[\1]", str(path))


def duckdb_connection(root: Path | StorePath):
    """A new DuckDB connection that reads the files under ``root`` (by ``sql_path``) once
    each, in order: on a store it keeps the last ``ONE_PASS_CACHE_BYTES`` of them."""
    import duckdb

    connection = duckdb.connect()
    if isinstance(root, StorePath):
        connection.register_filesystem(duckdb_filesystem(root.fs, ONE_PASS_CACHE_BYTES))
    return connection


def parquet_source(path: Path | StorePath):
    """What ``pyarrow.parquet`` reads ``path`` from: a file of the store, or the path."""
    return path.open_input() if isinstance(path, StorePath) else path


def remove(path: Path | StorePath) -> None:
    """Delete a file; ``FileNotFoundError`` if it is gone."""
    if isinstance(path, StorePath):
        if not path.exists():
            raise FileNotFoundError(str(path))
        path.unlink()
    else:
        os.unlink(path)
