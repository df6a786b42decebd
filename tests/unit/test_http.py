"""engine/http.py against a real HTTP server on loopback (tests/fixtures/http_server.py)
serving the demo photos: bytes, statuses, retries, timeouts, the size limit, dead ports."""

from __future__ import annotations

import contextlib
import pickle
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import engine.http
from engine.http import Downloader, DownloadError, DownloadPolicy, is_url
from tests.fixtures.common import DEMO_IMAGES, free_port
from tests.fixtures.http_server import serve_folder

FAST = DownloadPolicy(timeout_s=2.0, retries=2, backoff_s=0.01)


@pytest.fixture
def served():
    with serve_folder(
        DEMO_IMAGES,
        slow_paths={"slow.jpg": 3.0},
        status_paths={"gone.jpg": 404, "forbidden.jpg": 403, "busy.jpg": 503, "limit.jpg": 429},
    ) as base:
        yield base


@pytest.fixture
def downloader():
    with Downloader(FAST) as downloader:
        yield downloader


def test_good_file_gives_its_exact_bytes(served, downloader):
    for name in ("bus.jpg", "sign.png"):
        assert downloader.fetch(served + name) == (DEMO_IMAGES / name).read_bytes()
        assert served.hits[name] == 1


def test_one_session_is_opened_lazily_and_reopened_after_close(served):
    downloader = Downloader(FAST)
    assert downloader._session is None
    downloader.fetch(served + "zidane.jpg")
    session = downloader._session
    assert session is not None
    assert session.headers["User-Agent"] == FAST.user_agent
    downloader.fetch(served + "chelsea.jpg")
    assert downloader._session is session
    downloader.close()
    assert downloader._session is None
    assert downloader.fetch(served + "zidane.jpg") == (DEMO_IMAGES / "zidane.jpg").read_bytes()
    downloader.close()


@pytest.mark.parametrize("name,status", [("gone.jpg", 404), ("forbidden.jpg", 403)])
def test_4xx_is_final_at_once(served, downloader, name, status):
    with pytest.raises(DownloadError) as caught:
        downloader.fetch(served + name)
    error = caught.value
    assert error.status == status
    assert error.url == served + name
    assert error.attempts == 1
    assert str(error) == f"HTTP {status} for {served + name}"
    assert served.hits[name] == 1  # not retried


def test_missing_file_is_404(served, downloader):
    with pytest.raises(DownloadError) as caught:
        downloader.fetch(served + "no-such.jpg")
    assert caught.value.status == 404
    assert served.hits["no-such.jpg"] == 1


@pytest.mark.parametrize("name,status", [("busy.jpg", 503), ("limit.jpg", 429)])
def test_retryable_status_is_retried_then_reported(served, monkeypatch, name, status):
    sleeps = []
    monkeypatch.setattr(engine.http, "sleep", sleeps.append)
    policy = DownloadPolicy(timeout_s=2.0, retries=2, backoff_s=0.25)
    with Downloader(policy) as downloader, pytest.raises(DownloadError) as caught:
        downloader.fetch(served + name)
    error = caught.value
    assert served.hits[name] == policy.retries + 1
    assert error.status == status
    assert error.attempts == policy.retries + 1
    assert str(error) == f"HTTP {status} for {served + name} (after 3 attempts)"
    assert sleeps == [0.25, 0.5]  # backoff_s * 2**k before retry k


def test_no_retries_means_one_attempt(served):
    with Downloader(DownloadPolicy(retries=0)) as downloader, pytest.raises(DownloadError):
        downloader.fetch(served + "busy.jpg")
    assert served.hits["busy.jpg"] == 1


def test_slow_answer_past_timeout_is_a_timeout(served):
    policy = DownloadPolicy(timeout_s=0.5, retries=0)
    started = time.monotonic()
    with Downloader(policy) as downloader, pytest.raises(DownloadError) as caught:
        downloader.fetch(served + "slow.jpg")
    elapsed = time.monotonic() - started
    assert caught.value.status is None
    assert "timed out after 0.5 s" in str(caught.value)
    assert 0.4 < elapsed < 1.5


def test_timeouts_are_retried(served):
    policy = DownloadPolicy(timeout_s=0.3, retries=1, backoff_s=0.01)
    with Downloader(policy) as downloader, pytest.raises(DownloadError) as caught:
        downloader.fetch(served + "slow.jpg")
    assert served.hits["slow.jpg"] == 2
    assert caught.value.status is None
    assert caught.value.attempts == 2


def test_slow_answer_within_timeout_is_served(downloader):
    with serve_folder(DEMO_IMAGES, slow_paths={"bus.jpg": 0.2}) as served:
        assert downloader.fetch(served + "bus.jpg") == (DEMO_IMAGES / "bus.jpg").read_bytes()
        assert served.hits["bus.jpg"] == 1


def test_body_over_max_bytes_is_refused_by_its_length(served):
    size = (DEMO_IMAGES / "chelsea.jpg").stat().st_size
    policy = DownloadPolicy(max_bytes=size - 1, backoff_s=0.01)
    with Downloader(policy) as downloader:
        with pytest.raises(DownloadError) as caught:
            downloader.fetch(served + "chelsea.jpg")
        assert "max_bytes" in str(caught.value)
        assert caught.value.status == 200
        assert served.hits["chelsea.jpg"] == 1  # not retried
        # exactly max_bytes is accepted
    with Downloader(DownloadPolicy(max_bytes=size)) as downloader:
        assert len(downloader.fetch(served + "chelsea.jpg")) == size


def test_body_over_max_bytes_without_length_is_refused_while_streaming(monkeypatch):
    size = (DEMO_IMAGES / "sign.png").stat().st_size
    chunks = []
    real_body_chunks = engine.http._body_chunks

    def recording(response):
        assert "Content-Length" not in response.headers
        for chunk in real_body_chunks(response):
            chunks.append(len(chunk))
            yield chunk

    monkeypatch.setattr(engine.http, "_body_chunks", recording)
    policy = DownloadPolicy(max_bytes=100_000, retries=2, backoff_s=0.01)
    with serve_folder(DEMO_IMAGES, unsized_paths={"sign.png"}) as served:
        with Downloader(policy) as downloader, pytest.raises(DownloadError) as caught:
            downloader.fetch(served + "sign.png")
        assert "max_bytes (100000 bytes)" in str(caught.value)
        assert served.hits["sign.png"] == 1  # not retried
        assert chunks and sum(chunks) < size  # stopped reading early: never held it whole
        assert sum(chunks) <= policy.max_bytes + engine.http.CHUNK_BYTES
        with Downloader(FAST) as downloader:  # the same body fits a larger limit
            assert downloader.fetch(served + "sign.png") == (DEMO_IMAGES / "sign.png").read_bytes()


def test_closed_port_is_a_network_error(monkeypatch):
    sleeps = []
    monkeypatch.setattr(engine.http, "sleep", sleeps.append)
    url = f"http://127.0.0.1:{free_port()}/bus.jpg"
    policy = DownloadPolicy(retries=1, backoff_s=0.1)
    with Downloader(policy) as downloader, pytest.raises(DownloadError) as caught:
        downloader.fetch(url)
    error = caught.value
    assert error.status is None
    assert error.url == url
    assert error.attempts == 2  # network errors are retried
    assert sleeps == [0.1]
    assert str(error).startswith(f"ConnectionError: {url}: ")
    assert isinstance(error, OSError)


def test_malformed_url_is_a_download_error_not_retried(monkeypatch):
    monkeypatch.setattr(engine.http, "sleep", lambda seconds: pytest.fail("retried"))
    with Downloader(FAST) as downloader:
        for url in ("http://", "http://exa mple.com:notaport/x.jpg"):
            with pytest.raises(DownloadError) as caught:
                downloader.fetch(url)
            assert caught.value.status is None
            assert caught.value.attempts == 1


def test_download_error_pickles_with_its_fields():
    error = DownloadError("HTTP 503 for http://h/x.jpg", 503, "http://h/x.jpg", 3)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is DownloadError
    assert (str(again), again.status, again.url, again.attempts) == (
        "HTTP 503 for http://h/x.jpg", 503, "http://h/x.jpg", 3,
    )  # fmt: skip


def test_downloader_pickles_without_its_session(served):
    downloader = Downloader(FAST)
    downloader.fetch(served + "rocket.jpg")
    again = pickle.loads(pickle.dumps(downloader))
    downloader.close()
    assert again.policy == FAST and again._session is None
    assert again.fetch(served + "rocket.jpg") == (DEMO_IMAGES / "rocket.jpg").read_bytes()
    again.close()


def test_is_url():
    assert is_url("http://example.com/a.jpg")
    assert is_url("HTTPS://example.com/a.jpg")
    assert is_url("Http://x")
    assert not is_url("ftp://example.com/a.jpg")
    assert not is_url("/data/http://x.jpg")
    assert not is_url("s3://bucket/a.jpg")
    assert not is_url("http:/x")
    assert not is_url("")


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        DownloadPolicy(timeout_s=0)
    with pytest.raises(ValueError):
        DownloadPolicy(retries=-1)


@pytest.fixture
def dribbling_server():
    """A raw loopback server that answers 200 with a 10 000-byte ``Content-Length``, then
    sends 10 bytes and either stops (``/stall``) or goes on sending 10 bytes every 0.05 s
    (``/trickle``): the body's reads, not the headers, are what take too long."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def answer(connection):
        with connection:
            request = connection.recv(4096).decode("latin-1")
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n" + b"x" * 10)
            trickle = request.startswith("GET /trickle")
            while not stop.wait(0.05):
                if trickle:
                    with contextlib.suppress(OSError):
                        connection.sendall(b"x" * 10)

    def accept():
        with contextlib.suppress(OSError):
            while True:
                connection, _ = listener.accept()
                threading.Thread(target=answer, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    stop.set()
    listener.close()


@pytest.mark.parametrize("path", ["stall", "trickle"])
def test_body_that_takes_too_long_is_a_timeout(dribbling_server, path):
    policy = DownloadPolicy(timeout_s=0.4, retries=0)
    started = time.monotonic()
    with Downloader(policy) as downloader, pytest.raises(DownloadError) as caught:
        downloader.fetch(dribbling_server + path)
    elapsed = time.monotonic() - started
    assert caught.value.status is None
    assert str(caught.value) == f"timed out after 0.4 s: {dribbling_server + path}"
    assert 0.3 < elapsed < 1.2


class _StormHandler(BaseHTTPRequestHandler):
    """429 with ``Retry-After`` until the server's ``until`` (monotonic), then the body."""

    def do_GET(self) -> None:
        if time.monotonic() < self.server.until:
            self.send_response(429)
            self.send_header("Retry-After", self.server.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format, *args) -> None:
        pass


@contextlib.contextmanager
def storm(seconds: float, retry_after: str):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StormHandler)
    server.until, server.retry_after = time.monotonic() + seconds, retry_after
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/x.jpg"
    finally:
        server.shutdown()
        server.server_close()


def test_retry_after_is_honoured():
    """A 429 storm with quick retries used to end as a permanent error."""
    with storm(0.8, "1") as url:
        assert Downloader(DownloadPolicy(retries=2, backoff_s=0.01)).fetch(url) == b"ok"


def test_retry_after_is_bounded():
    with storm(60, "3600") as url:
        began = time.monotonic()
        policy = DownloadPolicy(retries=2, backoff_s=0.01, max_retry_after_s=0.2)
        with pytest.raises(DownloadError, match="HTTP 429"):
            Downloader(policy).fetch(url)
        assert time.monotonic() - began < 5


def test_retry_after_as_an_http_date():
    from email.utils import formatdate

    from engine.http import retry_after_seconds

    assert 8 < retry_after_seconds(formatdate(time.time() + 10, usegmt=True)) <= 10
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds("soon") is None
