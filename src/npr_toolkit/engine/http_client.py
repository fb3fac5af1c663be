"""A small JSON-over-HTTP client for the server backends (``sglang_engine.py``, ``openai_engine.py``).

Standard library only (``urllib``), so the client backends need nothing beyond the base install. A
busy server (503, or a connection dropped under load) is retried with backoff: every call the
backends make is safe to repeat. Any other failure is one ``ServerError`` with the server's message,
read from any of the error shapes SGLang, vLLM and ``npr serve`` answer with.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any


class ServerError(RuntimeError):
    """The server cannot be reached, or it refused or aborted a request (``status``: its HTTP status)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def error_message(body: bytes) -> str:
    """The message of an error answer: ``{"error": "..."}``, ``{"error": {"message": ...}}``,
    ``{"message": ...}`` (SGLang's and OpenAI's shapes), or the raw body."""
    try:
        value = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:500]
    if isinstance(value, dict):
        error = value.get("error", value)
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error if "error" in value else value.get("message", value))
    return str(value)


class JSONClient:
    """GET and POST JSON to ``url`` (``what`` names the server in error messages)."""

    def __init__(
        self,
        url: str,
        *,
        what: str = "server",
        timeout: float = 600.0,
        busy_retries: int = 8,
        error: type[ServerError] = ServerError,
        headers: dict[str, str] | None = None,
    ):
        self.url = url.rstrip("/")
        self.what = what
        self.timeout = timeout
        self.busy_retries = busy_retries
        self.error = error
        self.headers = {"Content-Type": "application/json", **(headers or {})}

    def get(self, path: str, timeout: float = 60.0) -> bytes:
        return self._open(urllib.request.Request(f"{self.url}{path}", headers=self.headers), timeout)

    def post(self, path: str, payload: dict[str, Any]) -> Any:
        body = json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=body, headers=self.headers, method="POST")
        return json.loads(self._open(request, self.timeout))

    def _open(self, request: urllib.request.Request, timeout: float) -> bytes:
        attempt = 0
        while True:
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return response.read()
            except urllib.error.HTTPError as error:
                message = error_message(error.read())
                if error.code != 503 or attempt == self.busy_retries:
                    raise self.error(f"{self.url} answered {error.code}: {message}", error.code) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
                reason = getattr(error, "reason", error)
                dropped = isinstance(reason, ConnectionResetError | http.client.RemoteDisconnected)
                if not dropped or attempt == self.busy_retries:
                    raise self.error(f"cannot reach the {self.what} at {self.url}: {reason}") from None
            time.sleep(min(0.05 * 2**attempt, 5.0))
            attempt += 1
