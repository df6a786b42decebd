"""Downloading images named by ``http://`` and ``https://`` URLs (img2dataset-style URL lists).

A worker keeps one :class:`Downloader` (one ``requests.Session``, so connections to a host
are reused) and calls :meth:`Downloader.fetch` once per URL; it answers the body's bytes or
raises :class:`DownloadError`. The :class:`DownloadPolicy` bounds the work per URL:

- each attempt is bounded by ``timeout_s``: connecting, waiting for the answer's headers and
  waiting for each chunk of the body each take at most that long, and reading the body stops
  once the attempt has run past it (a server trickling bytes cannot hold a worker);
- a body larger than ``max_bytes`` is refused, by its ``Content-Length`` before any of it is
  read, else as soon as that many bytes have arrived: it is read in chunks, never held whole;
- retryable failures are tried again, up to ``retries`` more times, sleeping
  ``backoff_s * 2**k`` before retry ``k`` (k = 0, 1, ...), or as long as a 429/503 answer's
  ``Retry-After`` asks, up to ``max_retry_after_s``. Retryable: network errors
  (refused or reset connections, DNS failures, a body that breaks off), timeouts, and the
  statuses of :data:`RETRYABLE_STATUSES` (408, 425, 429, 500, 502, 503, 504). Every other
  failure is final at once: other 4xx/5xx statuses (404, 403, ...), a body over
  ``max_bytes``, TLS certificate errors, undecodable content encodings, malformed URLs, too
  many redirects.

Error semantics: whatever happened, a failed ``fetch`` ends as exactly one
:class:`DownloadError` (an ``OSError``) describing the *last* attempt: ``status`` is that
attempt's HTTP status (a 2xx one for a body refused for its size), or ``None`` when it got
no answer (network error, timeout, malformed URL), and
``attempts`` how many attempts were made. Earlier attempts' failures are not reported.
Redirects are followed (``requests``' default) and the final answer's status is the one
that counts; any 2xx answer is a success.

A ``Downloader`` is not thread-safe (neither is ``requests.Session``): use one per thread.
It pickles without its session (a new one is opened on first use), so it can be shipped to
a worker process.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from time import monotonic, sleep
from typing import Any

import requests

RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
CHUNK_BYTES = 64 * 2**10

_URL = re.compile(r"https?://", re.IGNORECASE)


def is_url(uri: str) -> bool:
    """Whether ``uri`` is an ``http://`` or ``https://`` URL (scheme case-insensitive)."""
    return bool(_URL.match(uri))


class DownloadError(OSError):
    """A URL could not be downloaded.

    ``status``: the HTTP status of the last attempt's answer, ``None`` when the last attempt
    got none (network error, timeout, malformed URL). ``url``: the URL asked for.
    ``attempts``: how many attempts were made (1 when the failure was not retried)."""

    def __init__(
        self, message: str, status: int | None = None, url: str = "", attempts: int = 1
    ) -> None:
        super().__init__(message)  # one argument: OSError reads two as (errno, strerror)
        self.message = message
        self.status = status
        self.url = url
        self.attempts = attempts

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # keep status/url/attempts across pickling (Ray ships exceptions)
        return type(self), (self.message, self.status, self.url, self.attempts)


@dataclass(frozen=True)
class DownloadPolicy:
    """How :class:`Downloader` fetches one URL.

    ``timeout_s``: seconds one attempt may take: the connection, the wait for the answer's
    headers and the wait for each chunk of the body are each bounded by it, and the body's
    reading is abandoned once the attempt has run past it (reported as a timeout).

    ``retries``: extra attempts after the first for retryable failures (network errors,
    timeouts, HTTP 408/425/429/500/502/503/504); other statuses such as 404 or 403, and a
    body over ``max_bytes``, are never retried. 0 means a single attempt.

    ``backoff_s``: the sleep before retry ``k`` (k = 0, 1, ...) is ``backoff_s * 2**k``.

    ``max_bytes``: the largest body accepted; a larger one is refused with a
    :class:`DownloadError`, read in chunks so that a huge body is never held whole.

    ``max_retry_after_s``: the longest wait a retryable answer's ``Retry-After`` header
    (429, 503) is honoured for before the next attempt (the wait is the larger of it and the
    backoff).

    ``user_agent``: the ``User-Agent`` header sent with every request."""

    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.5
    max_retry_after_s: float = 30.0
    max_bytes: int = 64 * 2**20
    user_agent: str = "fld-engine (+https://github.com/fld-engine)"

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"DownloadPolicy.timeout_s must be positive, not {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"DownloadPolicy.retries must be >= 0, not {self.retries}")
        if self.backoff_s < 0:
            raise ValueError(f"DownloadPolicy.backoff_s must be >= 0, not {self.backoff_s}")
        if self.max_bytes < 0:
            raise ValueError(f"DownloadPolicy.max_bytes must be >= 0, not {self.max_bytes}")


class _Failure(Exception):
    """One failed attempt (internal): the error it would end as, whether to retry, and the
    seconds the server asked to wait first (``Retry-After``), if it did."""

    def __init__(
        self, message: str, status: int | None, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header's wait in seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime
    from time import time

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None


class Downloader:
    """Fetches URLs under a :class:`DownloadPolicy` through one lazily opened
    ``requests.Session``. Not thread-safe: one per thread. Usable as a context manager
    (closes its session on exit)."""

    def __init__(self, policy: DownloadPolicy | None = None) -> None:
        self.policy = policy if policy is not None else DownloadPolicy()
        self._session: requests.Session | None = None

    def fetch(self, url: str) -> bytes:
        """The body of ``url``, or :class:`DownloadError` (see the module docstring)."""
        policy = self.policy
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._attempt(url)
            except _Failure as failure:
                if not failure.retryable or attempts > policy.retries:
                    suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
                    raise DownloadError(
                        failure.message + suffix, failure.status, url, attempts
                    ) from None
                backoff = policy.backoff_s * 2 ** (attempts - 1)
                # A server that says when to come back (429/503 Retry-After) is believed, up
                # to max_retry_after_s: retrying sooner only meets the same refusal.
                sleep(max(backoff, min(failure.retry_after or 0.0, policy.max_retry_after_s)))

    def close(self) -> None:
        """Close the session (its pooled connections); a later ``fetch`` opens a new one."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"policy": self.policy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.policy = state["policy"]
        self._session = None

    def _open_session(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self.policy.user_agent
            self._session = session
        return self._session

    def _attempt(self, url: str) -> bytes:
        """One attempt: the body, or ``_Failure``."""
        policy = self.policy
        timed_out = _Failure(f"timed out after {policy.timeout_s} s: {url}", None, True)
        started = monotonic()
        try:
            with self._open_session().get(
                url, stream=True, timeout=(policy.timeout_s, policy.timeout_s)
            ) as response:
                status = response.status_code
                if not 200 <= status < 300:
                    wait = retry_after_seconds(response.headers.get("Retry-After"))
                    retryable = status in RETRYABLE_STATUSES
                    raise _Failure(f"HTTP {status} for {url}", status, retryable, wait)
                too_large = _Failure(
                    f"body over max_bytes ({policy.max_bytes} bytes): {url}", status, False
                )
                length = _content_length(response)
                if length is not None and length > policy.max_bytes:
                    raise too_large
                body = bytearray()
                for chunk in _body_chunks(response):
                    body += chunk
                    if len(body) > policy.max_bytes:
                        raise too_large
                    if monotonic() - started > policy.timeout_s:
                        raise timed_out
                return bytes(body)
        except requests.Timeout:
            raise timed_out from None
        except requests.TooManyRedirects as error:
            last = error.response.status_code if error.response is not None else None
            raise _Failure(f"TooManyRedirects: {url}: {error}", last, False) from None
        except requests.exceptions.SSLError as error:  # a bad certificate stays bad
            raise _Failure(f"SSLError: {url}: {error}", None, False) from None
        except requests.ConnectionError as error:
            # requests reports a read timeout of the body as a ConnectionError
            if _is_read_timeout(error):
                raise timed_out from None
            raise _Failure(f"ConnectionError: {url}: {error}", None, True) from None
        except requests.exceptions.ChunkedEncodingError as error:  # the body broke off
            raise _Failure(f"ChunkedEncodingError: {url}: {error}", None, True) from None
        except (requests.RequestException, ValueError) as error:  # malformed URL and the like
            raise _Failure(f"{type(error).__name__}: {url}: {error}", None, False) from None


def _content_length(response: requests.Response) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _body_chunks(response: requests.Response) -> Iterator[bytes]:
    """The (decoded) body in chunks of at most ``CHUNK_BYTES``, each given as soon as it has
    arrived, with urllib3's errors translated as ``iter_content`` translates them.

    Not ``iter_content`` itself where urllib3 offers ``read1`` (urllib3 >= 2.3): its reads
    block until a whole chunk has arrived, so a server trickling a few bytes at a time could
    hold one read far past ``timeout_s``, out of reach of the attempt's deadline."""
    raw = response.raw
    if not callable(getattr(raw, "read1", None)):
        yield from response.iter_content(CHUNK_BYTES)
        return
    from urllib3 import exceptions as urllib3_errors

    try:
        while chunk := raw.read1(CHUNK_BYTES, decode_content=True):
            yield chunk
    except urllib3_errors.ProtocolError as error:
        raise requests.exceptions.ChunkedEncodingError(error) from error
    except urllib3_errors.DecodeError as error:
        raise requests.exceptions.ContentDecodingError(error) from error
    except urllib3_errors.ReadTimeoutError as error:
        raise requests.ConnectionError(error) from error
    except urllib3_errors.SSLError as error:
        raise requests.exceptions.SSLError(error) from error


def _is_read_timeout(error: BaseException) -> bool:
    from urllib3.exceptions import ReadTimeoutError

    return any(isinstance(arg, ReadTimeoutError) for arg in error.args)
