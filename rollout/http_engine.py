"""A `VLMEngine` over any OpenAI-compatible chat-completions server.

One engine class covers `vllm serve`, hosted APIs and teacher models, so a recipe swaps a local
model for a remote one by changing `_target_`. Images travel as PNG data URLs (lossless, so the
server sees exactly the pixels of the `[H, W, 3]` uint8 arrays). The API key is read from an
environment variable named in the config and kept out of `repr` and every error message.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import requests

from itk_rl.formats.images import encode_png
from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams, check_batch

_MAX_ERROR_CHARS = 500
# Failures worth another try: the server is busy, restarting or unreachable for a moment.
_RETRY_EXCEPTIONS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


class EngineHTTPError(RuntimeError):
    """A chat-completions call failed for good. `status` is None when no response came back."""

    def __init__(self, url: str, status: int | None, message: str, attempts: int) -> None:
        self.url, self.status, self.message, self.attempts = url, status, message, attempts
        where = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"POST {url} failed after {attempts} attempt(s), {where}: {message}")


class OpenAIChatEngine:
    """Sends each request of a batch as a `/chat/completions` call, `max_concurrency` at a time.

    `base_url` includes the API version, as OpenAI clients expect (`http://host:8000/v1`).
    `api_key_env` names the environment variable holding the key (None: send no key, e.g. a
    local `vllm serve`). `max_retries` counts the tries after the first; waits grow as
    `backoff_s * 2**k` with jitter, at most `max_backoff_s`. Servers that return fewer than `n`
    choices get further calls for the rest, each with the next seed so they do not repeat.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_concurrency: int = 8,
        logprobs: bool = False,
    ) -> None:
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError(
                f"OpenAIChatEngine: need max_concurrency >= 1, max_retries >= 0, timeout_s > 0; "
                f"got {max_concurrency}, {max_retries}, {timeout_s}"
            )
        self.base_url, self.model, self.api_key_env = base_url, model, api_key_env
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.max_concurrency, self.logprobs = max_concurrency, logprobs
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._init_runtime()

    def _init_runtime(self) -> None:
        """Key, threads and sessions: never pickled (Ray may ship the engine), rebuilt instead."""
        self._api_key: str | None = None
        if self.api_key_env is not None:
            self._api_key = os.environ.get(self.api_key_env)
            if not self._api_key:
                raise ValueError(
                    f"OpenAIChatEngine: environment variable {self.api_key_env!r} (api_key_env) "
                    "is unset or empty; set it, or set api_key_env to null for a keyless server"
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
            f"OpenAIChatEngine(base_url={self.base_url!r}, model={self.model!r}, "
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

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        """`params.n` completions per request, in input order. Validates all before sending."""
        check_batch(requests, params)
        pool = self._executor()
        futures = [pool.submit(self._complete, request, params) for request in requests]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_concurrency, "openai-chat-engine")
            return self._pool

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

    def _complete(self, request: ChatRequest, params: SamplingParams) -> list[Completion]:
        messages = _openai_messages(request)
        completions: list[Completion] = []
        call = 0
        while len(completions) < params.n:
            payload: dict[str, Any] = {
                "model": self.model,
                "messages": messages,
                "max_tokens": params.max_new_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "n": params.n - len(completions),
            }
            if request.seed is not None:
                payload["seed"] = request.seed + call
            if self.logprobs:
                payload["logprobs"] = True
            choices = self._post(payload).get("choices")
            if not isinstance(choices, list) or not choices:
                raise EngineHTTPError(self.url, 200, "response has no choices", 1)
            choices = sorted(choices, key=lambda c: c.get("index", 0))
            completions.extend(_completion(self.url, choice) for choice in choices)
            call += 1
        return completions[: params.n]

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One call with retries. Raises outside `except` so no requests object (which holds the
        headers, and so the key) hangs off the error as its context."""
        status: int | None = None
        message, wait, attempt = "", 0.0, 0
        for attempt in range(1, self.max_retries + 2):
            if attempt > 1:
                time.sleep(wait or self._backoff(attempt - 1))
            response = None
            try:
                response = self._session().post(self.url, json=payload, timeout=self.timeout_s)
            except _RETRY_EXCEPTIONS as exc:
                status, message, wait = None, f"{type(exc).__name__}: {exc}", 0.0
            if response is None:
                continue
            status = response.status_code
            if 200 <= status < 300:
                body = _json(response)
                if isinstance(body, dict):
                    return body
                message = f"response is not a JSON object: {response.text}"
                break
            message = _server_message(response)
            if status != 429 and status < 500:
                break
            wait = min(_retry_after(response), self.max_backoff_s)
        raise EngineHTTPError(self.url, status, self._redact(message), attempt)

    def _backoff(self, attempt: int) -> float:
        """Exponential with 'equal jitter': callers that failed together do not retry together."""
        cap = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return cap / 2 + random.uniform(0, cap / 2)

    def _redact(self, message: str) -> str:
        """Servers sometimes echo the key they rejected; cut it out, then truncate."""
        if self._api_key:
            message = message.replace(self._api_key, "<redacted>")
        if len(message) > _MAX_ERROR_CHARS:
            message = message[:_MAX_ERROR_CHARS] + "…"
        return message


def _openai_messages(request: ChatRequest) -> list[dict[str, Any]]:
    """transformers chat format -> OpenAI parts. Runs in the worker threads (PNG encoding)."""
    images = iter(request.images)
    out = []
    for message in request.messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [
                {"type": "image_url", "image_url": {"url": _data_url(next(images))}}
                if part["type"] == "image"
                else {"type": "text", "text": part["text"]}
                for part in content
            ]
        out.append({**message, "content": content})
    return out


def _data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def _completion(url: str, choice: dict[str, Any]) -> Completion:
    message = choice.get("message")
    if not isinstance(message, dict):
        raise EngineHTTPError(url, 200, f"choice has no message: {str(choice)[:200]}", 1)
    logprobs = None
    entries = (choice.get("logprobs") or {}).get("content")
    if entries:
        logprobs = tuple(float(entry["logprob"]) for entry in entries)
    # A null content (refusal, tool call) is an empty answer; the caller's parser counts it.
    return Completion(text=message.get("content") or "", logprobs=logprobs)


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _server_message(response: requests.Response) -> str:
    """The OpenAI (`{"error": {"message"}}`), vLLM (`{"message"}`) or FastAPI (`detail`) text."""
    body = _json(response)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if key in body:
                return body[key] if isinstance(body[key], str) else json.dumps(body[key])
    return response.text or response.reason or ""


def _retry_after(response: requests.Response) -> float:
    """Seconds from a numeric `Retry-After` header, else 0 (use our own backoff)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return 0.0
