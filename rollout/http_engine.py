"""A `VLMEngine` over any OpenAI-compatible chat-completions server.

One engine class covers `vllm serve`, hosted APIs and teacher models, so a recipe swaps a local
model for a remote one by changing `_target_`. Images travel as PNG data URLs (lossless, so the
server sees exactly the pixels of the `[H, W, 3]` uint8 arrays). The API key is read from an
environment variable named in the config and kept out of `repr` and every error message.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from itk_rl.formats.images import encode_png
from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams, check_batch
from itk_rl.rollout.http_client import EngineHTTPError, OpenAICompatibleClient


class OpenAIChatEngine(OpenAICompatibleClient):
    """Sends each request of a batch as a `/chat/completions` call, `max_concurrency` at a time.

    Key, retries and backoff as in `OpenAICompatibleClient`. Servers that return fewer than `n`
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
        super().__init__(
            base_url,
            model,
            api_key_env,
            timeout_s,
            max_retries,
            backoff_s,
            max_backoff_s,
            max_concurrency,
        )
        self.logprobs = logprobs
        self.url = base_url.rstrip("/") + "/chat/completions"

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        """`params.n` completions per request, in input order. Validates all before sending."""
        check_batch(requests, params)
        return self._map(lambda request: self._complete(request, params), requests)

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
            choices = self._post(self.url, json=payload).get("choices")
            if not isinstance(choices, list) or not choices:
                raise EngineHTTPError(self.url, 200, "response has no choices", 1)
            choices = sorted(choices, key=lambda c: c.get("index", 0))
            completions.extend(_completion(self.url, choice) for choice in choices)
            call += 1
        return completions[: params.n]


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
