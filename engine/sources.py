"""Input sources, URIs and deterministic sharding.

An input is named by a URI string; every table row that comes from it carries that URI.

=====================  ==========================================  ==============================
input given to ``fld``  what is taken                               URI of one image
=====================  ==========================================  ==============================
a folder               every regular, non-hidden file below it,     the file's absolute path
                       recursively (a file that is not an image
                       becomes an ``errors`` row, never a silent
                       skip); ``*.tar`` files in it are expanded
                       as below
a ``.tar`` file, or a  WebDataset layout: members whose extension   ``/abs/shard.tar::key.jpg``
glob of them           is an image extension (sidecars such as
                       ``.json``/``.txt``/``.cls`` are not images)
a ``.parquet`` file    one row per image: a binary column of image  bytes: ``/abs/f.parquet::row=N``;
                       bytes or a string column of paths (relative  paths: the path, made absolute
                       paths are taken from the Parquet's folder)
=====================  ==========================================  ==============================

Shards: URIs sorted, cut into consecutive runs of ``shard_size``; shard ``k`` holds
URIs ``[k*shard_size, (k+1)*shard_size)``. The same input and shard size always give
the same shards.
"""

from __future__ import annotations

import glob
import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

IMAGE_EXTENSIONS = {
    ".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".jp2", ".tga",
}  # fmt: skip
TAR_SEP = "::"
BYTES_COLUMNS = ("image", "bytes", "jpg", "png", "image_bytes", "content")
PATH_COLUMNS = ("path", "uri", "file", "filename", "image_path", "url")


class InputError(Exception):
    """The input itself cannot be listed (missing path, unknown Parquet column, ...)."""


@dataclass(frozen=True)
class Shard:
    index: int
    uris: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.index:05d}"


def list_inputs(input_path: str, parquet_column: str | None = None) -> list[str]:
    """All URIs of an input, sorted."""
    if any(ch in input_path for ch in "*?["):
        paths = sorted(glob.glob(input_path))
        if not paths:
            raise InputError(f"input: no file matches {input_path!r}")
        uris = []
        for path in paths:
            uris.extend(list_inputs(path, parquet_column))
        return sorted(uris)
    path = Path(input_path).resolve()
    if not path.exists():
        raise InputError(f"input: {input_path} does not exist")
    if path.is_dir():
        uris = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                if name.startswith("."):
                    continue
                file_path = Path(root) / name
                if name.lower().endswith(".tar"):
                    uris.extend(tar_members(file_path))
                elif file_path.is_file():
                    uris.append(str(file_path))
        return sorted(uris)
    if path.suffix.lower() == ".tar":
        return sorted(tar_members(path))
    if path.suffix.lower() == ".parquet":
        return sorted(parquet_uris(path, parquet_column))
    return [str(path)]


def tar_members(tar_path: Path) -> list[str]:
    try:
        with tarfile.open(tar_path) as archive:
            return [
                f"{tar_path}{TAR_SEP}{member.name}"
                for member in archive.getmembers()
                if member.isfile()
                and not Path(member.name).name.startswith(".")
                and Path(member.name).suffix.lower() in IMAGE_EXTENSIONS
            ]
    except tarfile.TarError as exc:
        raise InputError(f"input: {tar_path} is not a readable tar file: {exc}") from exc


def parquet_column_of(path: Path, column: str | None) -> tuple[str, bool]:
    """The column holding images in a Parquet input, and whether it holds bytes."""
    schema = pq.read_schema(path)
    names = schema.names
    if column is not None:
        if column not in names:
            raise InputError(
                f"input.parquet_column: {column!r} is not a column of {path} ({names})"
            )
        candidates = [column]
    else:
        candidates = [c for c in BYTES_COLUMNS + PATH_COLUMNS if c in names]
        if not candidates:
            raise InputError(
                f"input.parquet_column: {path} has none of the columns "
                f"{BYTES_COLUMNS + PATH_COLUMNS}; name the column to use"
            )
    chosen = candidates[0]
    field_type = schema.field(chosen).type
    is_bytes = str(field_type) in ("binary", "large_binary")
    if not is_bytes and str(field_type) not in ("string", "large_string"):
        raise InputError(f"input.parquet_column: {chosen!r} is {field_type}, not bytes or paths")
    return chosen, is_bytes


def parquet_uris(path: Path, column: str | None) -> list[str]:
    chosen, is_bytes = parquet_column_of(path, column)
    n_rows = pq.ParquetFile(path).metadata.num_rows
    if is_bytes:
        return [f"{path}{TAR_SEP}row={i}" for i in range(n_rows)]
    values = pq.read_table(path, columns=[chosen]).column(chosen).to_pylist()
    return [
        str((path.parent / v).resolve()) if v else f"{path}{TAR_SEP}row={i}"
        for i, v in enumerate(values)
    ]


def make_shards(uris: list[str], shard_size: int) -> list[Shard]:
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    ordered = sorted(uris)
    return [
        Shard(index=k, uris=tuple(ordered[start : start + shard_size]))
        for k, start in enumerate(range(0, len(ordered), shard_size))
    ]


def fingerprint(uris: list[str], shard_size: int) -> str:
    """Identifies a plan: the same URIs and shard size give the same shards."""
    digest = hashlib.sha256(str(shard_size).encode())
    for uri in sorted(uris):
        digest.update(uri.encode() + b"\n")
    return digest.hexdigest()[:16]


def content_fingerprint(uris: list[str]) -> str:
    """Identifies what the inputs hold, as far as a ``stat`` tells: the size and modification
    time of every file (of the tar or Parquet file holding a member), so that a file
    changed between a killed run and its resume is noticed. One ``stat`` per file."""
    digest = hashlib.sha256()
    stats: dict[str, bytes] = {}
    for uri in sorted(uris):
        container = uri.split(TAR_SEP, 1)[0]
        if container not in stats:
            try:
                status = os.stat(container)
                stats[container] = f"{status.st_size}:{status.st_mtime_ns}".encode()
            except OSError:
                stats[container] = b"missing"
        digest.update(uri.encode() + b"\t" + stats[container] + b"\n")
    return digest.hexdigest()[:16]


class ByteReader:
    """Reads the bytes behind URIs, keeping tar indexes and Parquet files open between calls."""

    def __init__(self, parquet_column: str | None = None):
        self.parquet_column = parquet_column
        self._tars: dict[str, tarfile.TarFile] = {}
        self._parquet: dict[str, tuple[pq.ParquetFile, str, list[int]]] = {}

    def read(self, uri: str) -> bytes:
        """Return the bytes of ``uri``; raises ``OSError``/``KeyError`` when they are gone."""
        if TAR_SEP not in uri:
            return Path(uri).read_bytes()
        container, inner = uri.split(TAR_SEP, 1)
        if container.lower().endswith(".parquet"):
            return self._parquet_row(container, int(inner.removeprefix("row=")))
        archive = self._tars.get(container)
        if archive is None:
            archive = self._tars[container] = tarfile.open(container)  # noqa: SIM115 - kept open for the shard, closed in close()
        member = archive.extractfile(inner)
        if member is None:
            raise KeyError(f"{inner} is not a file in {container}")
        return member.read()

    def _parquet_row(self, path: str, row: int) -> bytes:
        if path not in self._parquet:
            parquet_file = pq.ParquetFile(path)
            column, _ = parquet_column_of(Path(path), self.parquet_column)
            offsets, total = [], 0
            for group in range(parquet_file.num_row_groups):
                offsets.append(total)
                total += parquet_file.metadata.row_group(group).num_rows
            self._parquet[path] = (parquet_file, column, offsets)
        parquet_file, column, offsets = self._parquet[path]
        group = max(i for i, start in enumerate(offsets) if start <= row)
        values = parquet_file.read_row_group(group, columns=[column]).column(column)
        value = values[row - offsets[group]].as_py()
        return value or b""

    def close(self) -> None:
        for archive in self._tars.values():
            archive.close()
        self._tars.clear()
        self._parquet.clear()
