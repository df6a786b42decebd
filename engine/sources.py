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
import itertools
import os
import posixpath
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.http import Downloader, DownloadPolicy, is_url
from engine.storage import is_remote, location

LIST_BATCH = 100_000  # URIs per batch when listing (engine.plan streams them to disk)
LIST_SUFFIXES = (".csv", ".tsv")
URI_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]+://"  # a value with a scheme is a URI, kept as it is
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
    """``digits``: the width of the shard's name, the same for every shard of an iteration
    (``engine.plan``: wide enough for its last shard, at least 5), so names sort as
    indexes do at any size."""

    index: int
    uris: tuple[str, ...]
    digits: int = 5

    @property
    def name(self) -> str:
        return f"{self.index:0{self.digits}d}"


def list_inputs(
    input_path: str, parquet_column: str | None = None, allow_outside: bool = False
) -> list[str]:
    """All URIs of an input, sorted (in memory: the engine's driver streams them with
    ``iter_inputs`` into ``engine.plan`` instead)."""
    batches = iter_inputs(input_path, parquet_column, allow_outside)
    return sorted(uri for batch in batches for uri in batch)


def iter_inputs(
    input_path: str, parquet_column: str | None = None, allow_outside: bool = False
) -> Iterator[list[str]]:
    """The URIs of an input in batches of at most ``LIST_BATCH``, in no particular order.
    ``allow_outside``: a list's paths may name files outside the list's own folder (see
    ``listed_uris``)."""
    if is_remote(input_path):
        place = location(str(input_path), "input")
        yield from iter_remote_inputs(place, parquet_column, allow_outside)
        return
    if any(ch in input_path for ch in "*?["):
        paths = sorted(glob.glob(input_path))
        if not paths:
            raise InputError(f"input: no file matches {input_path!r}")
        for path in paths:
            yield from iter_inputs(path, parquet_column, allow_outside)
        return
    path = Path(input_path).resolve()
    if not path.exists():
        raise InputError(f"input: {input_path} does not exist")
    if path.is_dir():
        yield from folder_batches(local_files(path))
    elif path.suffix.lower() == ".tar":
        yield tar_members(path)
    elif path.suffix.lower() in (".parquet", *LIST_SUFFIXES):
        yield from list_file_batches(path, parquet_column, allow_outside)
    else:
        yield [str(path)]


def local_files(folder: Path) -> Iterator[Path]:
    """Every regular, non-hidden file below ``folder`` (hidden folders skipped too)."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            file_path = Path(root) / name
            if not name.startswith(".") and (name.lower().endswith(".tar") or file_path.is_file()):
                yield file_path


def folder_batches(files) -> Iterator[list[str]]:
    """The URIs of a folder's files in batches of at most about ``LIST_BATCH``: a file's
    own, or a tar's image members."""
    batch: list[str] = []
    for path in files:
        if path.suffix.lower() == ".tar":
            batch.extend(tar_members(path))
        else:
            batch.append(str(path))
        if len(batch) >= LIST_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def list_file_batches(path, parquet_column: str | None, allow_outside: bool = False) -> Iterator[list[str]]:  # fmt: skip
    """A Parquet input, or a CSV/TSV list (a local ``Path`` or a ``StorePath``)."""
    if path.suffix.lower() == ".parquet":
        yield from parquet_uri_batches(path, parquet_column, allow_outside)
    else:
        yield from text_list_batches(path, parquet_column, allow_outside)


def iter_remote_inputs(place, parquet_column: str | None, allow_outside: bool = False) -> Iterator[list[str]]:  # fmt: skip
    """A folder, tar, Parquet or URL list on an object store (``engine.storage``)."""
    suffix = place.suffix.lower()
    if suffix in (".parquet", *LIST_SUFFIXES):
        if not place.is_file():
            raise InputError(f"input: {place} does not exist")
        yield from list_file_batches(place, parquet_column, allow_outside)
        return
    if suffix == ".tar" and place.is_file():
        yield tar_members(place)
        return
    found = place.files_below()
    first = next(found, None)
    if first is None:
        raise InputError(f"input: {place} does not exist or holds no file")
    yield from folder_batches(itertools.chain([first], found))


def tar_members(tar_path) -> list[str]:
    """The image members of a tar (a ``Path`` or an ``engine.storage.StorePath``)."""
    try:
        opened = tar_path.open_input() if is_remote(tar_path) else None
        with tarfile.open(tar_path if opened is None else None, fileobj=opened) as archive:
            # Links are listed too: reading one fails (``ByteReader.read``), so it becomes
            # an errors row instead of vanishing from the corpus without a word.
            return [
                f"{tar_path}{TAR_SEP}{member.name}"
                for member in archive.getmembers()
                if (member.isfile() or member.issym() or member.islnk())
                and not Path(member.name).name.startswith(".")
                and Path(member.name).suffix.lower() in IMAGE_EXTENSIONS
            ]
    except tarfile.TarError as exc:
        raise InputError(f"input: {tar_path} is not a readable tar file: {exc}") from exc


def open_parquet(path) -> pq.ParquetFile:
    """A Parquet file on local disk or a store."""
    return pq.ParquetFile(path.open_input() if is_remote(path) else path)


def parquet_column_of(path, column: str | None) -> tuple[str, bool]:
    """The column holding images in a Parquet input, and whether it holds bytes."""
    schema = open_parquet(path).schema_arrow
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


def parquet_uri_batches(path, column: str | None, allow_outside: bool = False) -> Iterator[list[str]]:  # fmt: skip
    """A Parquet input's URIs, a row group's worth at a time (a list of 10M paths is not
    read whole). See ``listed_uris`` for what a path value becomes."""
    chosen, is_bytes = parquet_column_of(path, column)
    parquet_file = open_parquet(path)
    if is_bytes:
        n_rows = parquet_file.metadata.num_rows
        for start in range(0, n_rows, LIST_BATCH):
            yield [f"{path}{TAR_SEP}row={i}" for i in range(start, min(n_rows, start + LIST_BATCH))]
        return
    row = 0
    for batch in row_group_batches(parquet_file, [chosen], LIST_BATCH):
        yield listed_uris(path, batch.column(0), row, allow_outside)
        row += batch.num_rows


def row_group_batches(parquet_file: pq.ParquetFile, columns: list[str], rows: int):
    """The file's rows in batches of at most ``rows``, one row group read at a time.
    (``ParquetFile.iter_batches`` reads ahead: on a list of 10M paths in row groups of
    500k it peaked at about twice the memory of this.)"""
    for group in range(parquet_file.num_row_groups):
        yield from parquet_file.read_row_group(group, columns=columns).to_batches(rows)


class RejectedInput(ValueError):
    """A list row the engine will not read: ``reason`` is the ``errors`` row's
    ``error_type`` (``unsupported_uri``, ``outside_list_folder``)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


REJECTIONS = {
    "unsupported_uri": "a URL list reads http(s) URLs only",
    "outside_list_folder": (
        "a list's paths stay under the list's own folder (fld run --allow-paths-outside lifts this)"
    ),
}
_HTTP = r"^[Hh][Tt][Tt][Pp][Ss]?://"


def rejected_uri(list_path, row: int, reason: str, value: str) -> str:
    """The URI a rejected list row is planned as: reading it raises ``RejectedInput``, so it
    becomes an ``errors`` row naming the row and its value, and the run goes on."""
    return f"{list_path}{TAR_SEP}row={row}{TAR_SEP}{reason}={quote(value, safe='')}"


def list_row_problem(list_path, value: str, allow_outside: bool) -> tuple[str | None, str]:
    """``(reason or None, uri)`` of one list value that is not plainly an http(s) URL or a
    path under the list's folder: relative paths are taken from the list's folder and
    ``..`` is resolved (not symlinks); a tar member or Parquet row (``x.tar::member``) is
    judged by its container."""
    if re.match(URI_PATTERN, value):
        if re.match(_HTTP, value):
            return None, value
        same_store = (
            is_remote(list_path) and value.split("://")[0] == str(list_path).split("://")[0]
        )
        if not same_store:
            return "unsupported_uri", value
        container = posixpath.normpath(value.split("://", 1)[1].split(TAR_SEP)[0])
        folder = str(list_path.parent).split("://", 1)[1]
        inside = container.startswith(folder.rstrip("/") + "/")
        return (None if inside or allow_outside else "outside_list_folder"), value
    if is_remote(list_path):
        if value.startswith("/"):
            return "unsupported_uri", value  # a local path named by a list on a store
        return list_row_problem(list_path, str(list_path.parent / value), allow_outside)
    folder = os.path.dirname(os.path.abspath(list_path))
    container, _, member = value.partition(TAR_SEP)
    resolved = os.path.normpath(os.path.join(folder, container))
    uri = resolved + (TAR_SEP + member if member else "")
    inside = resolved.startswith(folder.rstrip(os.sep) + os.sep)
    return (None if inside or allow_outside else "outside_list_folder"), uri


def listed_uris(list_path, values: pa.Array, first_row: int, allow_outside: bool = False) -> list[str]:  # fmt: skip
    """The URIs a list's rows name: an http(s) URL as it is; a path (absolute, or relative
    to the list's folder) made absolute, when it lies under the list's folder (see
    ``list_row_problem``); an empty row the row itself (``LIST::row=N``), which then reads
    as empty bytes and becomes an ``errors`` row; anything else a ``rejected_uri``.
    Vectorised with pyarrow: a list of 10M absolute paths under its folder or of URLs costs
    no per-row Python work but the final ``to_pylist``."""
    filled = pc.fill_null(values.cast(pa.string()), "")
    if is_remote(list_path):
        prefix = str(list_path.parent).rstrip("/") + "/"
    else:
        prefix = os.path.dirname(os.path.abspath(list_path)).rstrip(os.sep) + os.sep
    plain = pc.and_(pc.starts_with(filled, prefix), pc.invert(pc.match_substring(filled, "..")))
    fine = pc.or_(pc.match_substring_regex(filled, _HTTP), plain)
    uris = filled.to_pylist()
    if pc.all(fine).as_py() is not False:
        return uris
    for index in np.flatnonzero(~fine.to_numpy(zero_copy_only=False)):
        value = uris[index]
        if not value:
            uris[index] = f"{list_path}{TAR_SEP}row={first_row + index}"
            continue
        reason, uri = list_row_problem(list_path, value, allow_outside)
        uris[index] = (
            uri if reason is None else rejected_uri(list_path, first_row + index, reason, value)
        )
    return uris


def text_list_batches(path, column: str | None, allow_outside: bool = False) -> Iterator[list[str]]:  # fmt: skip
    """A CSV (``.csv``) or TSV (``.tsv``, ``.txt`` with tabs) list with a header row; the
    column ``column`` or the first of ``PATH_COLUMNS`` it has (img2dataset's ``url``)."""
    import pyarrow.csv as pacsv

    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    source = path.open_input() if is_remote(path) else str(path)
    try:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
        )
    except (OSError, ValueError) as exc:
        raise InputError(f"input: {path} is not a readable {delimiter!r}-separated list: {exc}") from exc  # fmt: skip
    names = reader.schema.names
    candidates = [column] if column else [name for name in PATH_COLUMNS if name in names]
    if not candidates or candidates[0] not in names:
        raise InputError(
            f"input.parquet_column: {path} has no column {column or PATH_COLUMNS} ({names})"
        )
    index = names.index(candidates[0])
    row = 0
    for batch in reader:
        yield listed_uris(path, batch.column(index), row, allow_outside)
        row += batch.num_rows


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
    """Reads the bytes behind URIs (local, on a store, or http(s) URLs), keeping tar indexes,
    Parquet files and the HTTP session open between calls.

    ``download``: timeouts and retries for URLs (``engine.http.DownloadPolicy``); a URL that
    cannot be fetched raises ``engine.http.DownloadError`` (an ``OSError``) with its status.
    """

    def __init__(self, parquet_column: str | None = None, download: DownloadPolicy | None = None):
        self.parquet_column = parquet_column
        self.download = download or DownloadPolicy()
        self._downloader: Downloader | None = None
        self._tars: dict[str, tarfile.TarFile] = {}
        self._parquet: dict[str, tuple[pq.ParquetFile, str, list[int]]] = {}

    def read(self, uri: str) -> bytes:
        """Return the bytes of ``uri``; raises ``OSError``/``KeyError`` when they are gone."""
        if is_url(uri):
            if self._downloader is None:
                self._downloader = Downloader(self.download)
            return self._downloader.fetch(uri)
        # A local file whose own name holds "::" is that file, not a member of a container.
        if TAR_SEP not in uri or (not is_remote(uri) and os.path.isfile(uri)):
            return location(uri, "input").read_bytes()
        container, inner = uri.split(TAR_SEP, 1)
        if container.lower().endswith((".parquet", *LIST_SUFFIXES)):
            if TAR_SEP in inner:  # a row the listing rejected (rejected_uri)
                row, rejection = inner.split(TAR_SEP, 1)
                reason, value = rejection.split("=", 1)
                raise RejectedInput(
                    reason, f"{row.replace('=', ' ')} of {container}: {unquote(value)}: "
                    f"{REJECTIONS.get(reason, reason)}",
                )  # fmt: skip
            if container.lower().endswith(LIST_SUFFIXES):
                return b""  # an empty row of a URL list: nothing to read
            return self._parquet_row(container, int(inner.removeprefix("row=")))
        archive = self._tars.get(container)
        if archive is None:
            place = location(container, "input")
            opened = place.open_input() if is_remote(place) else None
            archive = tarfile.open(None if opened else place, fileobj=opened)  # noqa: SIM115 - kept open for the shard, closed in close()
            self._tars[container] = archive
        info = archive.getmember(inner)
        if not info.isfile():  # a symlink or hard link: it could name anything
            kind = "symbolic link" if info.issym() else "hard link"
            raise KeyError(f"{inner} in {container} is a {kind} to {info.linkname}: not read")
        member = archive.extractfile(info)
        if member is None:
            raise KeyError(f"{inner} is not a file in {container}")
        return member.read()

    def _parquet_row(self, path: str, row: int) -> bytes:
        if path not in self._parquet:
            place = location(path, "input")
            parquet_file = open_parquet(place)
            column, _ = parquet_column_of(place, self.parquet_column)
            offsets, total = [], 0
            for group in range(parquet_file.num_row_groups):
                offsets.append(total)
                total += parquet_file.metadata.row_group(group).num_rows
            self._parquet[path] = (parquet_file, column, offsets)
        parquet_file, column, offsets = self._parquet[path]
        group = max(i for i, start in enumerate(offsets) if start <= row)
        values = parquet_file.read_row_group(group, columns=[column]).column(column)
        value = values[row - offsets[group]].as_py()
        return value if isinstance(value, bytes) else b""

    def close(self) -> None:
        for archive in self._tars.values():
            archive.close()
        self._tars.clear()
        self._parquet.clear()
        if self._downloader is not None:
            self._downloader.close()
            self._downloader = None
