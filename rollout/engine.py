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
