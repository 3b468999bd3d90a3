"""Checks every `VLMEngine` runs on its inputs before any work starts.

One place for them, so the transformers, vLLM and HTTP backends reject the same bad batches
with the same messages: a half-run batch wastes compute and hides the cause.
"""

from __future__ import annotations

from collections.abc import Sequence

from itk_rl.formats.images import check_image
from itk_rl.rollout.engine import ChatRequest, SamplingParams


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
