"""What every client of an OpenAI-compatible HTTP API shares (chat engine, images generator).

Both must treat the key and the server the same way: the key read from an environment variable
and kept out of `repr`, pickles and error messages; one `requests` session per worker thread;
the same retry rules (connection errors, time-outs, 429 and 5xx, the server's Retry-After else
jittered exponential backoff). Keeping that in one base means a fix to any of it reaches both.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests

T = TypeVar("T")
R = TypeVar("R")

MAX_ERROR_CHARS = 500
# Failures worth another try: the server is busy, restarting or unreachable for a moment.
RETRY_EXCEPTIONS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


class EngineHTTPError(RuntimeError):
    """An API call failed for good. `status` is None when no response came back."""

    def __init__(self, url: str, status: int | None, message: str, attempts: int) -> None:
        self.url, self.status, self.message, self.attempts = url, status, message, attempts
        where = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"POST {url} failed after {attempts} attempt(s), {where}: {message}")


class OpenAICompatibleClient:
    """Key, per-thread sessions, worker pool and retried POSTs for an OpenAI-compatible API.

    `base_url` includes the API version, as OpenAI clients expect (`http://host:8000/v1`).
    `api_key_env` names the environment variable holding the key (None: send no key, e.g. a
    local server). `max_retries` counts the tries after the first; waits are the server's
    Retry-After or grow as `backoff_s * 2**k` with jitter, at most `max_backoff_s`. Subclasses
    send their calls through `_map` (`max_concurrency` at a time) and `_post`.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None,
        timeout_s: float,
        max_retries: int,
        backoff_s: float,
        max_backoff_s: float,
        max_concurrency: int,
    ) -> None:
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError(
                f"{type(self).__name__}: need max_concurrency >= 1, max_retries >= 0, "
                f"timeout_s > 0; got {max_concurrency}, {max_retries}, {timeout_s}"
            )
        self.base_url, self.model, self.api_key_env = base_url, model, api_key_env
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.max_concurrency = max_concurrency
        self._init_runtime()

    def _init_runtime(self) -> None:
        """Key, threads and sessions: never pickled (Ray may ship the client), rebuilt instead."""
        self._api_key: str | None = None
        if self.api_key_env is not None:
            self._api_key = os.environ.get(self.api_key_env)
            if not self._api_key:
                raise ValueError(
                    f"{type(self).__name__}: environment variable {self.api_key_env!r} "
                    "(api_key_env) is unset or empty; set it, or set api_key_env to null for a "
                    "keyless server"
                )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:
        runtime = {"_api_key", "_local", "_lock", "_sessions", "_pool"}
        return {k: v for k, v in self.__dict__.items() if k not in runtime}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, max_concurrency={self.max_concurrency})"
        )

    def close(self) -> None:
        """Stops the worker threads and closes their connections."""
        with self._lock:
            pool, self._pool = self._pool, None
            sessions, self._sessions = self._sessions, []
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        for session in sessions:
            session.close()

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """`fn` over `items` on the worker threads, results in input order; on the first failure
        the calls not yet started are cancelled and the error raised."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_concurrency, type(self).__name__)
            pool = self._pool
        futures = [pool.submit(fn, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    def _session(self) -> requests.Session:
        """One session per worker thread: connections are reused, nothing is shared."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            if self._api_key is not None:
                session.headers["Authorization"] = f"Bearer {self._api_key}"
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _post(self, url: str, **kwargs: Any) -> dict[str, Any]:
        """One call with retries; `kwargs` go to `requests.post` (`json=`, or `data=`/`files=`).
        Raises outside `except` so no requests object (which holds the headers, and so the key)
        hangs off the error as its context."""
        status: int | None = None
        message, wait, attempt = "", 0.0, 0
        for attempt in range(1, self.max_retries + 2):
            if attempt > 1:
                time.sleep(wait or self._backoff(attempt - 1))
            response = None
            try:
                response = self._session().post(url, timeout=self.timeout_s, **kwargs)
            except RETRY_EXCEPTIONS as exc:
                status, message, wait = None, f"{type(exc).__name__}: {exc}", 0.0
            if response is None:
                continue
            status = response.status_code
            if 200 <= status < 300:
                body = response_json(response)
                if isinstance(body, dict):
                    return body
                message = f"response is not a JSON object: {response.text}"
                break
            message = server_message(response)
            if status != 429 and status < 500:
                break
            wait = min(retry_after(response), self.max_backoff_s)
        raise EngineHTTPError(url, status, self._redact(message), attempt)

    def _backoff(self, attempt: int) -> float:
        """Exponential with 'equal jitter': callers that failed together do not retry together."""
        cap = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return cap / 2 + random.uniform(0, cap / 2)

    def _redact(self, message: str) -> str:
        """Servers sometimes echo the key they rejected; cut it out, then truncate."""
        if self._api_key:
            message = message.replace(self._api_key, "<redacted>")
        if len(message) > MAX_ERROR_CHARS:
            message = message[:MAX_ERROR_CHARS] + "…"
        return message


def response_json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def server_message(response: requests.Response) -> str:
    """The OpenAI (`{"error": {"message"}}`), vLLM (`{"message"}`) or FastAPI (`detail`) text."""
    body = response_json(response)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if key in body:
                return body[key] if isinstance(body[key], str) else json.dumps(body[key])
    return response.text or response.reason or ""


def retry_after(response: requests.Response) -> float:
    """Seconds from a numeric `Retry-After` header, else 0 (use our own backoff)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return 0.0
