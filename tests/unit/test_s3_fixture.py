"""The loopback S3 server of ``tests/fixtures/s3_server.py``: buckets, uploads, listing, and
reading back through ``pyarrow.fs.FileSystem.from_uri`` with only the environment set."""

from __future__ import annotations

from pyarrow import fs

from tests.fixtures.common import DEMO_IMAGES
from tests.fixtures.s3_server import list_keys, s3_server, upload_folder  # noqa: F401


def test_upload_list_and_read_back(s3_server):  # noqa: F811
    assert s3_server.make_bucket("inputs") == "s3://inputs"
    upload_folder(DEMO_IMAGES, "s3://inputs/demo")

    local = sorted(path.name for path in DEMO_IMAGES.iterdir() if path.is_file())
    assert list_keys("s3://inputs/demo") == local
    assert list_keys("s3://inputs/nothing-here") == []

    # from_uri reads AWS_ENDPOINT_URL and the keys from the environment the fixture set.
    filesystem, path = fs.FileSystem.from_uri("s3://inputs/demo/bus.jpg")
    assert path == "inputs/demo/bus.jpg"
    with filesystem.open_input_stream(path) as stream:
        assert stream.read() == (DEMO_IMAGES / "bus.jpg").read_bytes()
