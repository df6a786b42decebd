"""``fld run --retry-errors`` (issue 24): images whose download failed for a transient
reason (here 503) are fetched again, in a committed iteration too, and the iteration is
committed again with their rows; permanent failures (404) stay errors."""

from __future__ import annotations

import contextlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from engine.query import connect
from pipelines.cli import main

DEMO = Path(__file__).parents[2] / "demo" / "images"


class _Flaky(SimpleHTTPRequestHandler):
    """Serves demo/images; the names in ``server.failing`` answer 503 while listed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(DEMO), **kwargs)

    def do_GET(self) -> None:
        if self.path.lstrip("/") in self.server.failing:
            self.send_error(503)
            return
        super().do_GET()

    def log_message(self, format, *args) -> None:
        pass


@contextlib.contextmanager
def flaky_server(failing: set[str]):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    server.failing = failing
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def errors_of(corpus: Path) -> list[tuple]:
    rows = connect(corpus).execute("SELECT uri, error_type FROM errors ORDER BY uri").fetchall()
    return [(uri.rsplit("/", 1)[1], kind) for uri, kind in rows]


def test_transient_download_errors_are_retried(tmp_path, capsys):
    failing = {"bus.jpg"}
    with flaky_server(failing) as base:
        urls = tmp_path / "urls.csv"
        names = ["bus.jpg", "zidane.jpg", "missing.jpg"]
        urls.write_text("url\n" + "".join(f"{base}/{name}\n" for name in names))
        corpus = tmp_path / "corpus"
        run = [
            "run", str(urls), "--out", str(corpus), "--executor", "local", "--shard-size", "1",
            "--quiet", "--set", "input.download.retries=0",
        ]  # fmt: skip
        assert main(run) == 0
        assert errors_of(corpus) == [("bus.jpg", "download_failed"), ("missing.jpg", "download_failed")]  # fmt: skip
        failing.clear()  # the server is back
        assert main([*run, "--retry-errors"]) == 0
        assert "1 shard(s) to redo" in capsys.readouterr().err
    assert errors_of(corpus) == [("missing.jpg", "download_failed")]  # a 404 stays
    images = connect(corpus).execute("SELECT count(*) FROM images").fetchone()[0]
    assert images == 2
    assert main(["verify", str(corpus)]) == 0
