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
