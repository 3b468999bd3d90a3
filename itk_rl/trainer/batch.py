"""From (chat + images, response tokens) to model inputs, and the response tokens' log-probs.

Each sample's prompt is built by the model's own processor with the chat template and
`add_generation_prompt=True` — exactly the prompt the rollout engine generated from — and the
response token ids are appended unchanged (re-tokenising decoded text could change them and
silently break the importance ratio). Samples are then right-padded: padding after the last
real token never affects the real tokens under causal attention, and Qwen-VL's rope positions
are computed from the real tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import PreTrainedTokenizerBase, ProcessorMixin

# Per-token inputs besides input_ids/attention_mask that the processors return: padded with 0
# ("text" token type) like the response tokens they do not cover.
_PER_TOKEN_KEYS = ("mm_token_type_ids",)
# Per-image inputs: concatenated over the batch in sample order.
_PER_IMAGE_KEYS = ("pixel_values", "image_grid_thw")


@dataclass(frozen=True, eq=False)
class TrainSample:
    """One training example as plain data (it crosses Ray boundaries).

    `messages` use the transformers multimodal chat format with `{"type": "image"}`
    placeholders, filled in order from `images` (uint8 `[H, W, 3]` arrays), as in
    `itk_rl.interfaces.engine.ChatRequest`. `response_ids` are the sampled tokens (with the end
    token if one was sampled), `[response_len]`.
    """

    messages: tuple[dict[str, Any], ...]
    response_ids: tuple[int, ...]
    images: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class ModelBatch:
    """A right-padded batch.

    input_ids, attention_mask: `[batch, seq]` (prompt, then response, then padding).
    response_ids, response_mask: `[batch, response_len]`; the mask is 1.0 on real tokens.
    response_positions: `[batch, response_len]`, the position whose logits predict each
        response token (one before it); padding entries point at a valid position and are masked.
    vision: pixel_values `[patches, patch_dim]`, image_grid_thw `[images, 3]`, and per-token
        extras such as mm_token_type_ids `[batch, seq]`; passed to the model as keywords.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    response_positions: torch.Tensor
    vision: dict[str, torch.Tensor]

    def to(self, device: torch.device | str) -> ModelBatch:
        fields = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "response_ids": self.response_ids,
            "response_mask": self.response_mask,
            "response_positions": self.response_positions,
        }
        moved = {k: v.to(device) for k, v in fields.items()}
        return replace(self, **moved, vision={k: v.to(device) for k, v in self.vision.items()})

    @property
    def num_tokens(self) -> int:
        """Real response tokens in the batch (what token-mean losses divide by)."""
        return int(self.response_mask.sum().item())


def response_ids_from_text(
    tokenizer: PreTrainedTokenizerBase, text: str, *, add_eos: bool = True
) -> tuple[int, ...]:
    """Token ids of a target response (SFT), ending with the end-of-turn token so the model
    learns to stop. RL responses use the sampled ids instead."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if add_eos:
        ids = [*ids, tokenizer.eos_token_id]
    return tuple(ids)


def _with_images(sample: TrainSample, index: int) -> list[dict[str, Any]]:
    """The chat with its `{"type": "image"}` placeholders holding the PIL images, in order."""
    parts = [p for m in sample.messages if isinstance(m.get("content"), list) for p in m["content"]]
    placeholders = sum(part.get("type") == "image" for part in parts)
    if placeholders != len(sample.images):
        raise ValueError(
            f"sample {index}: {placeholders} image placeholders but {len(sample.images)} images"
        )
    images = iter(sample.images)
    filled = []
    for message in sample.messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [
                {**part, "image": Image.fromarray(np.asarray(next(images), dtype=np.uint8))}
                if part.get("type") == "image"
                else part
                for part in content
            ]
            message = {**message, "content": content}
        filled.append(message)
    return filled


def _encode_prompt(processor: ProcessorMixin, sample: TrainSample, index: int) -> dict:
    encoded = processor.apply_chat_template(
        [_with_images(sample, index)],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    unknown = set(encoded) - {"input_ids", "attention_mask", *_PER_TOKEN_KEYS, *_PER_IMAGE_KEYS}
    if unknown:
        raise ValueError(f"processor returned inputs the trainer does not batch: {sorted(unknown)}")
    return dict(encoded)


def build_batch(processor: ProcessorMixin, samples: Sequence[TrainSample]) -> ModelBatch:
    """Encode prompts with the chat template, append the response ids, right-pad the batch."""
    if not samples:
        raise ValueError("build_batch needs at least one sample")
    pad_id = processor.tokenizer.pad_token_id
    prompts = [_encode_prompt(processor, s, i) for i, s in enumerate(samples)]
    for i, sample in enumerate(samples):
        if not sample.response_ids:
            raise ValueError(f"sample {i}: empty response_ids, nothing to train on")
    lengths = [
        p["input_ids"].shape[1] + len(s.response_ids) for p, s in zip(prompts, samples, strict=True)
    ]
    seq, resp = max(lengths), max(len(s.response_ids) for s in samples)
    batch = len(samples)
    input_ids = torch.full((batch, seq), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, seq), dtype=torch.long)
    response_ids = torch.full((batch, resp), pad_id, dtype=torch.long)
    response_mask = torch.zeros((batch, resp), dtype=torch.float32)
    response_positions = torch.zeros((batch, resp), dtype=torch.long)
    per_token = {k: torch.zeros((batch, seq), dtype=torch.long) for k in _PER_TOKEN_KEYS}
    for row, (prompt, sample, length) in enumerate(zip(prompts, samples, lengths, strict=True)):
        prompt_len, n = prompt["input_ids"].shape[1], len(sample.response_ids)
        ids = torch.tensor(sample.response_ids, dtype=torch.long)
        input_ids[row, :prompt_len] = prompt["input_ids"][0]
        input_ids[row, prompt_len:length] = ids
        attention_mask[row, :length] = 1
        response_ids[row, :n] = ids
        response_mask[row, :n] = 1.0
        response_positions[row] = prompt_len - 1
        response_positions[row, :n] = torch.arange(prompt_len - 1, prompt_len - 1 + n)
        for key in _PER_TOKEN_KEYS:
            if key in prompt:
                per_token[key][row, :prompt_len] = prompt[key][0]
    vision = {k: v for k, v in per_token.items() if any(k in p for p in prompts)}
    for key in _PER_IMAGE_KEYS:
        parts = [p[key] for p in prompts if key in p]
        if parts:
            vision[key] = torch.cat(parts, dim=0)
    return ModelBatch(
        input_ids, attention_mask, response_ids, response_mask, response_positions, vision
    )


def sequence_logprobs(
    model: nn.Module, batch: ModelBatch, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob and entropy of each response token: two `[batch, response_len]` float32 tensors.

    Logits are divided by the sampling temperature so the log-probs are those of the
    distribution the rollout sampled from (the importance ratio compares like with like).
    Only the response positions are gathered before the softmax: `[batch, response_len, vocab]`
    instead of `[batch, seq, vocab]`. Padding entries are finite and must be masked by the caller.
    """
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        use_cache=False,
        **batch.vision,
    )
    logits = out.logits  # [batch, seq, vocab]
    index = batch.response_positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    logits = logits.gather(1, index).float() / temperature  # [batch, response_len, vocab]
    log_probs = torch.log_softmax(logits, dim=-1)
    token_logprobs = log_probs.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
    return token_logprobs, entropy
