"""How ``fld review`` gets images to a reviewer's browser, checked against real servers: a
presigned URL of an ``s3://`` input fetches the stored bytes from an S3 server (moto's, on
loopback); local files are named relative to Label Studio's document root, and files
outside it are refused before anything is sent."""

from __future__ import annotations

import pytest
import requests

from pipelines.review import ReviewError, image_url, local_files_url, presigned_url
from tests.fixtures.common import DEMO_IMAGES
from tests.fixtures.s3_server import start_s3_server


def test_a_presigned_url_fetches_the_stored_image(monkeypatch):
    server = start_s3_server()
    try:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        bucket = server.make_bucket("review-inputs")
        data = (DEMO_IMAGES / "bus.jpg").read_bytes()
        with server.filesystem().open_output_stream("review-inputs/photos/bus.jpg") as sink:
            sink.write(data)
        url = presigned_url(f"{bucket}/photos/bus.jpg")
        assert "Signature" in url or "X-Amz-Signature" in url
        assert requests.get(url, timeout=30).content == data
        assert "X-Amz-Expires=604800" in url or "Expires=" in url  # valid for a week
    finally:
        server.stop()


def test_local_files_are_named_under_the_document_root(tmp_path):
    photo = tmp_path / "served" / "set one" / "bus.jpg"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"x")
    assert local_files_url(str(photo), str(tmp_path / "served")) == "/data/local-files/?d=set%20one/bus.jpg"  # fmt: skip
    with pytest.raises(ReviewError, match="not a file under --document-root"):
        local_files_url(str(photo), str(tmp_path / "elsewhere"))
    with pytest.raises(ReviewError, match="needs --document-root"):
        local_files_url(str(photo), None)


def test_forced_modes_refuse_inputs_they_cannot_serve():
    from pipelines.review import ReviewOptions

    image = {"uri": "/photos/bus.jpg"}
    with pytest.raises(ReviewError, match="is not an http"):
        image_url(None, image, 0, ReviewOptions(images="url"))
    with pytest.raises(ReviewError, match="is not an s3"):
        image_url(None, image, 0, ReviewOptions(images="presign"))
