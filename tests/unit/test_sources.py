"""engine.sources: listing folders, WebDataset tars and Parquet files; reading bytes; sharding."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.sources import (
    ByteReader,
    InputError,
    Shard,
    fingerprint,
    list_inputs,
    make_shards,
)
from tests.fixtures import imagekit as kit


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def webdataset_members(prefix: str, n: int) -> dict[str, bytes]:
    """``n`` samples, each an image (alternately .jpg and .png) plus .json/.txt/.cls sidecars."""
    members = {}
    for i in range(n):
        key = f"{prefix}{i:06d}"
        ext = ".jpg" if i % 2 == 0 else ".png"
        data = kit.photo_bytes(32 + i) if ext == ".jpg" else kit.tiny_png(16 + i)
        members[key + ext] = data
        members[key + ".json"] = json.dumps({"key": key}).encode()
        members[key + ".txt"] = f"caption {i}".encode()
        members[key + ".cls"] = str(i).encode()
    return members


def read_all(uris: list[str], **kwargs) -> dict[str, bytes]:
    reader = ByteReader(**kwargs)
    try:
        return {uri: reader.read(uri) for uri in uris}
    finally:
        reader.close()


# --- folders --------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A folder tree; returns the root and the bytes expected for each listed URI."""
    root = tmp_path.resolve() / "images"
    files = {
        "b.jpg": kit.photo_bytes(40),
        "a.png": kit.tiny_png(20),
        "sub/c.JPG": kit.photo_bytes(48),
        "sub/deeper/d.gif": kit.animated_gif(24),
        "sub/deeper/notes.txt": kit.text_file(),  # not an image: listed, becomes an errors row
        "sub/empty.jpg": kit.zero_bytes(),
        "z/no_extension": kit.photo_bytes(36),
    }
    for name, data in files.items():
        write(root / name, data)
    # hidden files and folders are never inputs
    write(root / ".hidden.jpg", kit.photo_bytes(40))
    write(root / "sub" / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(root / ".cache" / "e.jpg", kit.photo_bytes(40))
    write(root / "sub" / ".thumbs" / "f.jpg", kit.photo_bytes(40))
    (root / "emptydir").mkdir()
    return root, {str(root / name): data for name, data in files.items()}


def test_folder_lists_every_visible_file_sorted_and_absolute(folder):
    root, expected = folder
    uris = list_inputs(str(root))
    assert uris == sorted(expected)
    assert all(Path(uri).is_absolute() for uri in uris)
    assert not any("/." in uri for uri in uris)
    assert str(root / "sub/deeper/notes.txt") in uris


def test_folder_given_as_relative_path(folder, monkeypatch):
    root, expected = folder
    monkeypatch.chdir(root.parent)
    assert list_inputs("images") == sorted(expected)
    assert list_inputs("./images/") == sorted(expected)


def test_folder_bytes_are_exact(folder):
    root, expected = folder
    assert read_all(list_inputs(str(root))) == expected


def test_folder_with_tar_expands_its_members(folder):
    root, expected = folder
    tar = write_tar(root / "sub" / "pack.tar", webdataset_members("k", 3))
    uris = list_inputs(str(root))
    members = [u for u in uris if "::" in u]
    assert members == [f"{tar}::k000000.jpg", f"{tar}::k000001.png", f"{tar}::k000002.jpg"]
    assert str(tar) not in uris
    assert sorted(set(uris) - set(members)) == sorted(expected)


def test_single_file_input(tmp_path):
    path = write(tmp_path / "one.jpg", kit.photo_bytes(40))
    assert list_inputs(str(path)) == [str(path.resolve())]


def test_missing_input_raises(tmp_path):
    with pytest.raises(InputError):
        list_inputs(str(tmp_path / "nope"))
    with pytest.raises(InputError):
        list_inputs(str(tmp_path / "nope-*.tar"))


# --- WebDataset tars ------------------------------------------------------------------


def test_tar_lists_only_image_members(tmp_path):
    members = webdataset_members("", 4)
    tar = write_tar(tmp_path / "shard-000.tar", members).resolve()
    uris = list_inputs(str(tar))
    assert uris == [
        f"{tar}::000000.jpg",
        f"{tar}::000001.png",
        f"{tar}::000002.jpg",
        f"{tar}::000003.png",
    ]
    got = read_all(uris)
    assert got == {
        f"{tar}::{name}": members[name] for name in members if name[-4:] in (".jpg", ".png")
    }


def test_tar_members_in_subfolders(tmp_path):
    members = {"a/x.jpg": kit.photo_bytes(40), "a/x.json": b"{}", "b/y.webp": b"RIFF"}
    tar = write_tar(tmp_path / "nested.tar", members).resolve()
    uris = list_inputs(str(tar))
    assert uris == [f"{tar}::a/x.jpg", f"{tar}::b/y.webp"]
    assert read_all(uris)[f"{tar}::a/x.jpg"] == members["a/x.jpg"]


def test_glob_of_tars(tmp_path):
    expected = {}
    for s in (2, 0, 1):  # written out of order
        members = webdataset_members(f"s{s}-", 3)
        tar = write_tar(tmp_path / f"shard-{s:03d}.tar", members).resolve()
        for name, data in members.items():
            if name.endswith((".jpg", ".png")):
                expected[f"{tar}::{name}"] = data
    write_tar(tmp_path / "other.tar", {"zzz.jpg": kit.photo_bytes(40)})  # not matched
    uris = list_inputs(str(tmp_path / "shard-*.tar"))
    assert uris == sorted(expected)
    assert len(uris) == 9
    assert read_all(uris) == expected


def test_corrupt_tar_raises_input_error(tmp_path):
    bad = write(tmp_path / "bad.tar", kit.random_bytes(2048))
    with pytest.raises(InputError):
        list_inputs(str(bad))


def test_reading_a_missing_member_raises(tmp_path):
    tar = write_tar(tmp_path / "t.tar", {"a.jpg": kit.photo_bytes(40)}).resolve()
    reader = ByteReader()
    with pytest.raises(KeyError):
        reader.read(f"{tar}::missing.jpg")
    with pytest.raises(OSError):
        reader.read(str(tmp_path / "gone.jpg"))
    reader.close()


# --- Parquet ----------------------------------------------------------------------------


def test_parquet_bytes_column(tmp_path):
    images = [kit.photo_bytes(32 + i) for i in range(5)]
    table = pa.table(
        {"key": [f"k{i}" for i in range(5)], "image": pa.array(images, type=pa.binary())}
    )
    path = tmp_path / "data" / "f.parquet"
    path.parent.mkdir()
    pq.write_table(table, path, row_group_size=2)  # three row groups: 2, 2, 1
    path = path.resolve()
    assert pq.ParquetFile(path).num_row_groups == 3
    uris = list_inputs(str(path))
    assert uris == sorted(f"{path}::row={i}" for i in range(5))
    assert read_all(uris) == {f"{path}::row={i}": images[i] for i in range(5)}
    # rows read out of order, reusing the open file
    reader = ByteReader()
    for i in (4, 0, 3, 1, 2, 4):
        assert reader.read(f"{path}::row={i}") == images[i]
    reader.close()


def test_parquet_sorted_uris_are_lexicographic_over_many_rows(tmp_path):
    path = tmp_path / "many.parquet"
    pq.write_table(pa.table({"image": pa.array([b"x"] * 12, type=pa.binary())}), path)
    uris = list_inputs(str(path))
    # every row once, in string order: row=10 and row=11 come before row=2
    assert uris == sorted(f"{path.resolve()}::row={i}" for i in range(12))
    assert uris[:4] == [f"{path.resolve()}::row={i}" for i in (0, 1, 10, 11)]


def test_parquet_null_bytes_read_as_empty(tmp_path):
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"image": pa.array([kit.tiny_png(16), None], type=pa.binary())}), path)
    uris = list_inputs(str(path))
    got = read_all(uris)
    assert got[f"{path.resolve()}::row=1"] == b""


def test_parquet_path_column_relative_to_parquet_folder(tmp_path, monkeypatch):
    base = tmp_path.resolve() / "dataset"
    files = {
        "imgs/a.jpg": kit.photo_bytes(40),
        "imgs/sub/b.png": kit.tiny_png(20),
    }
    for name, data in files.items():
        write(base / name, data)
    absolute = write(tmp_path.resolve() / "elsewhere" / "c.jpg", kit.photo_bytes(44))
    path = base / "meta" / "index.parquet"
    path.parent.mkdir()
    pq.write_table(
        pa.table({"path": ["../imgs/sub/b.png", "../imgs/a.jpg", str(absolute)], "n": [1, 2, 3]}),
        path,
    )
    monkeypatch.chdir(tmp_path)  # relative paths must not depend on the working folder
    uris = list_inputs(str(path), allow_outside=True)  # the list names files beside its folder
    expected = {
        str(base / "imgs/a.jpg"): files["imgs/a.jpg"],
        str(base / "imgs/sub/b.png"): files["imgs/sub/b.png"],
        str(absolute): absolute.read_bytes(),
    }
    assert uris == sorted(expected)
    assert read_all(uris) == expected


def test_parquet_column_chosen_explicitly(tmp_path):
    a, b = kit.photo_bytes(40), kit.photo_bytes(48)
    path = tmp_path / "two.parquet"
    pq.write_table(
        pa.table(
            {
                "image": pa.array([a], type=pa.binary()),
                "thumb": pa.array([b], type=pa.binary()),
            }
        ),
        path,
    )
    uris = list_inputs(str(path), parquet_column="thumb")
    assert read_all(uris, parquet_column="thumb") == {uris[0]: b}
    assert read_all(uris) == {uris[0]: a}


def test_parquet_unknown_column_names_the_setting(tmp_path):
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"image": pa.array([b"x"], type=pa.binary())}), path)
    with pytest.raises(InputError, match="input.parquet_column") as info:
        list_inputs(str(path), parquet_column="picture")
    assert "picture" in str(info.value)


def test_parquet_without_a_known_column_names_the_setting(tmp_path):
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"caption": ["a cat"]}), path)
    with pytest.raises(InputError, match="input.parquet_column"):
        list_inputs(str(path))


def test_parquet_column_of_wrong_type(tmp_path):
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"image": [1, 2]}), path)
    with pytest.raises(InputError, match="input.parquet_column"):
        list_inputs(str(path))


# --- sharding -------------------------------------------------------------------------


URIS = [f"/data/img{i:03d}.jpg" for i in range(10)]


def test_make_shards_sorted_consecutive_last_shorter():
    shuffled = URIS[:]
    random.Random(3).shuffle(shuffled)
    shards = make_shards(shuffled, 4)
    assert [s.index for s in shards] == [0, 1, 2]
    assert [s.name for s in shards] == ["00000", "00001", "00002"]
    assert [list(s.uris) for s in shards] == [URIS[0:4], URIS[4:8], URIS[8:10]]
    assert all(isinstance(s, Shard) for s in shards)
    assert [u for s in shards for u in s.uris] == sorted(URIS)


def test_make_shards_is_deterministic():
    a = make_shards(URIS, 3)
    b = make_shards(list(reversed(URIS)), 3)
    assert a == b
    assert make_shards(URIS, 3) == a


def test_make_shards_edge_cases():
    assert make_shards([], 5) == []
    assert make_shards(URIS, 10) == [Shard(0, tuple(URIS))]
    assert len(make_shards(URIS, 1)) == 10
    assert make_shards(URIS, 100) == [Shard(0, tuple(URIS))]
    with pytest.raises(ValueError):
        make_shards(URIS, 0)


def test_fingerprint_tracks_uris_and_shard_size():
    base = fingerprint(URIS, 4)
    assert isinstance(base, str) and base
    assert fingerprint(list(reversed(URIS)), 4) == base  # order of listing does not matter
    assert fingerprint(URIS, 5) != base
    changed = URIS[:-1] + ["/data/other.jpg"]
    assert fingerprint(changed, 4) != base
    assert fingerprint(URIS[:-1], 4) != base
    assert fingerprint(URIS + ["/data/extra.jpg"], 4) != base


def test_fingerprint_of_listed_folder_changes_when_a_file_is_added(tmp_path):
    write(tmp_path / "a.jpg", kit.photo_bytes(40))
    before = fingerprint(list_inputs(str(tmp_path)), 8)
    assert fingerprint(list_inputs(str(tmp_path)), 8) == before
    write(tmp_path / "b.jpg", kit.photo_bytes(40))
    assert fingerprint(list_inputs(str(tmp_path)), 8) != before
