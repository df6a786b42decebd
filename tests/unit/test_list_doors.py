"""Inputs stay inputs (issue 24): a URL list reads http(s) URLs only, and a path list reads
files under its own folder only, unless ``allow_outside``; a rejected row becomes an errors
row naming its row and value, not a read of someone's local file or an aborted run."""

from __future__ import annotations

import pytest

from engine.sources import ByteReader, RejectedInput, list_inputs


@pytest.fixture
def listing(tmp_path):
    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes(b"inside")
    (tmp_path / "secret.jpg").write_bytes(b"outside")
    rows = [
        "https://example.org/a.jpg", "HTTP://example.org/b.jpg", "ftp://example.org/c.jpg",
        "file:///etc/passwd", "/etc/passwd", "../secret.jpg", "ok.jpg",
        str(folder / "ok.jpg"), f"{folder}/../secret.jpg", "s3://bucket/x.jpg",
        "../other.tar::member.jpg",
    ]  # fmt: skip
    path = folder / "urls.csv"
    path.write_text("url\n" + "\n".join(rows) + "\n")
    return path


def reasons(uris: list[str]) -> dict[str, str]:
    """``{uri: error_type}`` of the rejected rows (reading them raises ``RejectedInput``)."""
    reader = ByteReader()
    found = {}
    for uri in uris:
        if "::row=" in uri:
            with pytest.raises(RejectedInput) as raised:
                reader.read(uri)
            found[str(raised.value).split(": ", 1)[1].rsplit(": ", 1)[0]] = raised.value.reason
    return found


def test_only_http_urls_and_paths_under_the_list_folder_are_read(listing):
    uris = list_inputs(str(listing))
    assert "https://example.org/a.jpg" in uris and "HTTP://example.org/b.jpg" in uris
    assert uris.count(str(listing.parent / "ok.jpg")) == 2
    assert reasons(uris) == {
        "ftp://example.org/c.jpg": "unsupported_uri",
        "file:///etc/passwd": "unsupported_uri",
        "s3://bucket/x.jpg": "unsupported_uri",
        "/etc/passwd": "outside_list_folder",
        "../secret.jpg": "outside_list_folder",
        f"{listing.parent}/../secret.jpg": "outside_list_folder",
        "../other.tar::member.jpg": "outside_list_folder",
    }
    assert not any(uri == "/etc/passwd" for uri in uris)


def test_allow_outside_lets_paths_out_but_not_other_schemes(listing):
    uris = list_inputs(str(listing), allow_outside=True)
    assert "/etc/passwd" in uris and str(listing.parent.parent / "secret.jpg") in uris
    assert set(reasons(uris).values()) == {"unsupported_uri"}


def test_a_rejected_row_names_its_row_and_value(listing):
    uris = list_inputs(str(listing))
    (ftp,) = [u for u in uris if "ftp" in u]
    with pytest.raises(RejectedInput, match=r"row 2 of .*urls.csv: ftp://example.org/c.jpg: a URL list reads http\(s\) URLs only"):  # fmt: skip
        ByteReader().read(ftp)


def test_tar_links_are_listed_and_refused_when_read(tmp_path):
    """Links in a tar vanished from the corpus without a word; now each is an errors row."""
    import io
    import tarfile

    tar_path = tmp_path / "pack.tar"
    with tarfile.open(tar_path, "w") as archive:
        data = b"jpeg bytes"
        info = tarfile.TarInfo("a.jpg")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        for name, kind in (("b.jpg", tarfile.SYMTYPE), ("c.jpg", tarfile.LNKTYPE)):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = kind, "/etc/passwd" if kind == tarfile.SYMTYPE else "a.jpg"
            archive.addfile(link)
    uris = list_inputs(str(tar_path))
    assert [uri.rsplit("::", 1)[1] for uri in uris] == ["a.jpg", "b.jpg", "c.jpg"]
    reader = ByteReader()
    assert reader.read(uris[0]) == b"jpeg bytes"
    with pytest.raises(KeyError, match="symbolic link to /etc/passwd"):
        reader.read(uris[1])
    with pytest.raises(KeyError, match="hard link to a.jpg"):
        reader.read(uris[2])


def test_a_damaged_plan_is_a_sentence(tmp_path):
    from engine.corpus import Corpus, CorpusError, IterationWriter

    writer = IterationWriter(Corpus(tmp_path / "corpus"), 0)
    writer.path.mkdir(parents=True)
    (writer.path / "_plan.json").write_text('{"n_shards": ')
    with pytest.raises(CorpusError, match="_plan.json is damaged"):
        writer.recorded_plan()


def test_the_student_trains_in_an_absolute_folder(tmp_path, monkeypatch):
    """ultralytics puts a relative ``project`` under its own runs/ folder of the cwd."""
    from engine.corpus import Corpus
    from pipelines.refine import models_folder

    monkeypatch.chdir(tmp_path)
    assert models_folder(Corpus("relative/corpus"), 1).is_absolute()


def test_a_file_name_with_the_member_separator_reads_as_that_file(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "scan::2024.jpg").write_bytes(b"the file itself")
    (uri,) = list_inputs(str(folder))
    assert ByteReader().read(uri) == b"the file itself"
