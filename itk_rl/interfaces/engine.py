"""The one interface every VLM engine implements: transformers, vLLM and OpenAI-compatible HTTP.

Planner, critic, judge and RL rollout all talk to a model through `VLMEngine.generate`, so a
backend can be swapped in a recipe without touching the code that uses it.

Conversations use the transformers multimodal chat format: `messages` is a list of
`{"role": ..., "content": [{"type": "image"}, {"type": "text", "text": ...}, ...]}` where each
`{"type": "image"}` is a placeholder, filled in order from `ChatRequest.images` (uint8
`[H, W, 3]` numpy arrays, as everywhere in itk_rl).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from itk_rl.formats.images import check_image


@dataclass(frozen=True, eq=False)
class ChatRequest:
    """One conversation to continue. `seed` makes sampling reproducible where the backend can."""

    messages: tuple[dict[str, Any], ...]
    images: tuple[np.ndarray, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. `n` responses per request (the GRPO group size during rollout)."""

    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1


@dataclass(frozen=True)
class Completion:
    """One sampled response.

    `token_ids` and `logprobs` (per sampled token, `[num_tokens]`) are filled where the backend
    gives them (transformers, vLLM); an HTTP backend may leave them None.
    """

    text: str
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None


class VLMEngine(Protocol):
    """Continues a batch of conversations: `n` completions per request, requests in order."""

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]: ...


# --- input checks every engine runs before any work (one place, so the transformers, vLLM and
# HTTP backends reject the same bad batches with the same messages) ---------------------------


def check_batch(requests: Sequence[ChatRequest], params: SamplingParams) -> None:
    """Every request of the batch and the sampling parameters; raises ValueError naming them."""
    for index, request in enumerate(requests):
        check_request(index, request)
    check_params(params)


def check_request(index: int, request: ChatRequest) -> None:
    """Message parts are text or bare image placeholders, one image per placeholder."""
    placeholders = 0
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, (list, tuple)):
            raise ValueError(f"request {index}: message content must be a str or a list of parts")
        for part in content:
            kind = part.get("type")
            if kind == "image":
                if set(part) != {"type"}:
                    raise ValueError(
                        f"request {index}: image parts must be bare placeholders "
                        f"{{'type': 'image'}} filled from ChatRequest.images, got keys {set(part)}"
                    )
                placeholders += 1
            elif kind != "text":
                raise ValueError(f"request {index}: unsupported content part type {kind!r}")
    if placeholders != len(request.images):
        raise ValueError(
            f"request {index}: {placeholders} image placeholder(s) in messages but "
            f"{len(request.images)} image(s) in ChatRequest.images"
        )
    for k, image in enumerate(request.images):
        check_image(image, f"request {index}, image {k}")


def check_params(params: SamplingParams) -> None:
    """Values every backend can honour: n >= 1, max_new_tokens >= 1, temperature >= 0,
    0 < top_p <= 1."""
    if params.n < 1:
        raise ValueError(f"SamplingParams.n must be >= 1, got {params.n}")
    if params.max_new_tokens < 1:
        raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {params.max_new_tokens}")
    if params.temperature < 0:
        raise ValueError(f"SamplingParams.temperature must be >= 0, got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {params.top_p}")
