"""A small client of Label Studio's HTTP API: what ``fld review`` and ``fld import-reviews``
need, over ``requests`` (no SDK: its dependencies are the server's, and four calls do).

Authentication takes either kind of token Label Studio gives:

- a **personal access token** (the default since 1.23: a JWT refresh token, made in the
  account settings): exchanged at ``POST /api/token/refresh/`` for a short-lived access
  token sent as ``Authorization: Bearer ...``, and exchanged again when that expires;
- a **legacy token** (``Authorization: Token ...``), where the organisation allows them.

The token comes from ``--token`` or ``LABEL_STUDIO_API_KEY``, the server from ``--url`` or
``LABEL_STUDIO_URL`` (the names Label Studio's own SDK reads). Every failure (a server that
does not answer, a refused token, an unexpected answer) is a ``LabelStudioError`` whose
message is one sentence naming the server; the commands turn it into exit code 2 before
they write anything.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator

TIMEOUT_S = 30.0
PAGE_SIZE = 100


class LabelStudioError(RuntimeError):
    """The server cannot be used as asked: down, a wrong token, or an unexpected answer."""


def is_personal_access_token(token: str) -> bool:
    """A personal access token is a JWT (three base64url parts, the first a JSON header);
    a legacy token is 40 hex digits."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and "alg" in header


def client_from(url: str | None, token: str | None) -> LabelStudioClient:
    """A client for ``url`` (else ``LABEL_STUDIO_URL``) with ``token`` (else
    ``LABEL_STUDIO_API_KEY``); a missing one is a ``LabelStudioError`` naming both ways."""
    url = url or os.environ.get("LABEL_STUDIO_URL")
    token = token or os.environ.get("LABEL_STUDIO_API_KEY")
    if not url:
        raise LabelStudioError("no Label Studio server: give --url or set LABEL_STUDIO_URL")
    if not token:
        raise LabelStudioError(
            "no Label Studio token: give --token or set LABEL_STUDIO_API_KEY (a personal "
            "access token from the account settings, or a legacy token)"
        )
    return LabelStudioClient(url, token)


class LabelStudioClient:
    """Args:
    url: the server's base URL, e.g. ``http://127.0.0.1:8080``.
    token: a personal access token or a legacy token (see the module docstring).
    """

    def __init__(self, url: str, token: str):
        import requests

        self.url = url.rstrip("/")
        self._token = token.strip()
        self._personal = is_personal_access_token(self._token)
        self._access: str | None = None
        self._session = requests.Session()

    # ------------------------------------------------------------------ transport

    def _authorization(self) -> str:
        if not self._personal:
            return f"Token {self._token}"
        if self._access is None:
            answer = self._send("POST", "/api/token/refresh/", {"refresh": self._token}, auth=False)
            access = answer.get("access") if isinstance(answer, dict) else None
            if not access:
                raise LabelStudioError(f"{self.url}: /api/token/refresh/ gave no access token")
            self._access = access
        return f"Bearer {self._access}"

    def _send(self, method: str, path: str, body=None, auth: bool = True, params=None):
        import requests

        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = self._authorization()
        try:
            response = self._session.request(
                method, self.url + path, json=body, params=params, headers=headers,
                timeout=TIMEOUT_S,
            )  # fmt: skip
        except requests.ConnectionError:
            raise LabelStudioError(
                f"Label Studio at {self.url} does not answer (connection refused or no such "
                "host): is the server running, and is --url / LABEL_STUDIO_URL right?"
            ) from None
        except requests.Timeout:
            raise LabelStudioError(
                f"Label Studio at {self.url} did not answer {method} {path} within {TIMEOUT_S:.0f} s"
            ) from None
        if response.status_code == 401 and auth and self._personal and self._access is not None:
            self._access = None  # the access token expired: exchange the token again, once
            headers["Authorization"] = self._authorization()
            response = self._session.request(
                method, self.url + path, json=body, params=params, headers=headers,
                timeout=TIMEOUT_S,
            )  # fmt: skip
        if response.status_code in (401, 403):
            raise LabelStudioError(
                f"Label Studio at {self.url} refused the token ({response.status_code}: "
                f"{detail_of(response)}); give a personal access token from the account "
                "settings, or a legacy token where the organisation allows them"
            )
        if response.status_code >= 400:
            raise LabelStudioError(
                f"Label Studio at {self.url}: {method} {path} failed with "
                f"{response.status_code}: {detail_of(response)}"
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise LabelStudioError(
                f"Label Studio at {self.url}: {method} {path} did not answer JSON"
            ) from None

    # ------------------------------------------------------------------ the calls

    def check(self) -> dict:
        """The user the token belongs to (``GET /api/current-user/whoami``): proves the
        server answers and takes the token, before anything is written."""
        who = self._send("GET", "/api/current-user/whoami")
        if not isinstance(who, dict):
            raise LabelStudioError(f"Label Studio at {self.url}: whoami gave {who!r}")
        return who

    def create_project(self, title: str, label_config: str, description: str = "") -> int:
        project = self._send(
            "POST", "/api/projects",
            {"title": title, "label_config": label_config, "description": description},
        )  # fmt: skip
        return int(project["id"])

    def project(self, project_id: int) -> dict:
        return self._send("GET", f"/api/projects/{int(project_id)}")

    def add_local_storage(self, project_id: int, path: str) -> None:
        """Let a project read local files under ``path`` (which must be under the server's
        ``LOCAL_FILES_DOCUMENT_ROOT``) at ``/data/local-files/?d=...``."""
        self._send(
            "POST", "/api/storages/localfiles",
            {"project": int(project_id), "title": "fld-engine inputs", "path": path, "use_blob_urls": True, "regex_filter": ""},
        )  # fmt: skip

    def import_tasks(self, project_id: int, tasks: list[dict]) -> dict:
        """``POST /api/projects/{id}/import`` of tasks with their predictions."""
        return self._send(
            "POST", f"/api/projects/{int(project_id)}/import", tasks, params={"return_task_ids": "true"}
        )  # fmt: skip

    def iter_tasks(self, project_id: int) -> Iterator[dict]:
        """Every task of a project with its annotations (``GET /api/tasks``, page by page)."""
        page = 1
        seen = 0
        while True:
            answer = self._send(
                "GET", "/api/tasks",
                params={"project": int(project_id), "page": page, "page_size": PAGE_SIZE, "fields": "all"},
            )  # fmt: skip
            tasks = answer.get("tasks", []) if isinstance(answer, dict) else answer
            total = answer.get("total") if isinstance(answer, dict) else None
            yield from tasks
            seen += len(tasks)
            if not tasks or len(tasks) < PAGE_SIZE or (total is not None and seen >= total):
                return
            page += 1


def detail_of(response) -> str:
    """The server's own words for a failed request."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason
    if isinstance(body, dict):
        detail = str(body.get("detail") or "")
        errors = body.get("validation_errors")
        return (f"{detail} {json.dumps(errors)}" if errors else detail or str(body))[:400]
    return str(body)[:300]
