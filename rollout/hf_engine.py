"""A `VLMEngine` over a transformers image-text-to-text model: the CPU and small-GPU backend.

What RL relies on, and how this engine provides it:
- **Log-probs of the distribution actually sampled from.** Each sampled token's log-prob is
  `log_softmax(logits / temperature)` after top-p truncation (renormalized over the kept
  tokens), in float32; for greedy (temperature 0) it is `log_softmax(logits)`, the untempered
  model. At temperature 1 and top_p 1 that is exactly what a training forward pass computes
  on prompt + response (tested). vLLM's `logprobs_mode="processed_logprobs"` means the same.
- **Sampling settings come only from `SamplingParams`.** The checkpoint's own sampling defaults
  (`generation_config.json`: top_k, repetition_penalty, …) are dropped at load, so no hidden
  logits processor shifts the distribution away from the one the trainer scores.
- **Seeds per request, independent of the batch.** Sample k of a request draws from its own
  `torch.Generator` seeded from `(ChatRequest.seed, k)`, so a request gives the same tokens
  alone, in any batch, at any `max_batch_size` (up to float noise of padded batching, which
  could flip a draw only when it lands within ~1e-6 of a probability boundary).

The sampling happens in `_Sampler`, the last logits processor of `model.generate` (run
greedy), which draws the token itself and hands generate a one-hot choice: transformers keeps
its batching, KV cache and multimodal position handling, we own the randomness.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PretrainedConfig,
)

from itk_rl.formats.dtypes import torch_dtype
from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams, check_batch

_VISION_TOKEN_ATTRS = (
    "image_token_id",
    "video_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
)


def vision_token_ids(config: PretrainedConfig) -> list[int]:
    """The image/video placeholder and boundary token ids of a Qwen-VL model config: a response
    holding one would be read as an image slot when fed back (RL training, a multi-turn chat),
    so no engine samples them."""
    return sorted(
        {
            token_id
            for name in _VISION_TOKEN_ATTRS
            if (token_id := getattr(config, name, None)) is not None
        }
    )


class TransformersEngine:
    """Loads `model` (a local folder or a hub id) once and continues batches of chats.

    `max_batch_size` bounds the rows of one `generate` call (a request with `n` samples is `n`
    rows). `update_weights` takes new weights from a trainer (RL weight sync).
    """

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str = "float32",
        max_batch_size: int = 8,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        weights_dtype = torch_dtype(dtype, "TransformersEngine dtype")
        if max_batch_size < 1:
            raise ValueError(
                f"TransformersEngine: max_batch_size must be >= 1, got {max_batch_size}"
            )
        self.model_name, self.device, self.dtype = str(model), torch.device(device), dtype
        self.max_batch_size = max_batch_size
        _check_local_path(self.model_name)
        try:
            self.processor = AutoProcessor.from_pretrained(
                self.model_name, trust_remote_code=trust_remote_code
            )
            self.model = AutoModelForImageTextToText.from_pretrained(
                self.model_name,
                dtype=weights_dtype,
                attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code,
            )
        except (OSError, ValueError, KeyError) as exc:
            raise OSError(
                f"TransformersEngine: cannot load model {self.model_name!r} with "
                f"AutoModelForImageTextToText/AutoProcessor: {exc}"
            ) from exc
        self.model.to(self.device).eval()
        self.tokenizer = self.processor.tokenizer
        self.eos_ids = _eos_ids(self.model.generation_config, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.eos_ids[0]
        # Image/video placeholders in a response would be read as image slots when the response
        # is fed back (RL training, a multi-turn chat): never sample them.
        self.blocked_ids = vision_token_ids(self.model.config)
        # Token ids only: the checkpoint's sampling defaults must not add logits processors.
        self.model.generation_config = GenerationConfig(
            bos_token_id=self.model.generation_config.bos_token_id,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
        )

    def __repr__(self) -> str:
        return (
            f"TransformersEngine(model={self.model_name!r}, device={str(self.device)!r}, "
            f"dtype={self.dtype!r}, max_batch_size={self.max_batch_size})"
        )

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        """`params.n` completions per request, in input order. Validates all before running."""
        check_batch(requests, params)
        # One row per (request, sample); rows are cut into chunks of max_batch_size.
        rows = [(i, k) for i in range(len(requests)) for k in range(params.n)]
        seeds = [_base_seed(request) for request in requests]
        out: list[list[Completion]] = [[] for _ in requests]
        for start in range(0, len(rows), self.max_batch_size):
            chunk = rows[start : start + self.max_batch_size]
            chunk_requests = [requests[i] for i, _ in chunk]
            chunk_seeds = [_sample_seed(seeds[i], k) for i, k in chunk]
            for (i, _), completion in zip(
                chunk, self._generate_rows(chunk_requests, chunk_seeds, params), strict=True
            ):
                out[i].append(completion)
        return out

    def _generate_rows(
        self, requests: Sequence[ChatRequest], seeds: Sequence[int], params: SamplingParams
    ) -> list[Completion]:
        """One left-padded `model.generate` call; row r samples with `seeds[r]`."""
        inputs = self._encode(requests)
        sampler = _Sampler(params, seeds, self.device, self.blocked_ids)
        config = GenerationConfig(
            do_sample=False,  # _Sampler has already chosen; generate's argmax takes its choice
            max_new_tokens=params.max_new_tokens,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
        )
        with torch.inference_mode():
            self.model.generate(
                **inputs, generation_config=config, logits_processor=LogitsProcessorList([sampler])
            )
        completions = []
        for tokens, logprobs in zip(sampler.tokens, sampler.logprobs, strict=True):
            end = next((t + 1 for t, tok in enumerate(tokens) if tok in self.eos_ids), len(tokens))
            tokens, logprobs = tokens[:end], logprobs[:end]
            text_ids = tokens[:-1] if tokens and tokens[-1] in self.eos_ids else tokens
            text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
            completions.append(Completion(text, tuple(tokens), tuple(logprobs)))
        return completions

    def _encode(self, requests: Sequence[ChatRequest]) -> dict[str, torch.Tensor]:
        """Chat template with the generation prompt, images in placeholder order, left padding.

        Returns the processor's tensors: `input_ids`/`attention_mask` `[rows, prompt_len]`,
        plus the family's vision inputs (`pixel_values`, `image_grid_thw`, …).
        """
        texts = [
            self.processor.apply_chat_template(
                list(request.messages), tokenize=False, add_generation_prompt=True
            )
            for request in requests
        ]
        images = [Image.fromarray(image) for request in requests for image in request.images]
        inputs = self.processor(
            text=texts,
            images=images or None,
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        return {key: value.to(self.device) for key, value in inputs.items()}

    def update_weights(
        self, named_tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
    ) -> int:
        """Copy new weights in place (RL weight sync); returns how many tensors were loaded.

        Names are the model's `state_dict()` keys; a subset is fine (e.g. a frozen vision tower
        left out). Unknown names or wrong shapes raise before anything is copied.
        """
        items = list(named_tensors.items() if isinstance(named_tensors, Mapping) else named_tensors)
        targets = self.model.state_dict(keep_vars=True)
        unknown = [name for name, _ in items if name not in targets]
        if unknown:
            raise KeyError(
                f"TransformersEngine.update_weights: {len(unknown)} name(s) not in the state dict "
                f"of {self.model_name!r}, e.g. {unknown[:3]}"
            )
        for name, tensor in items:
            if tuple(tensor.shape) != tuple(targets[name].shape):
                raise ValueError(
                    f"TransformersEngine.update_weights: {name!r} has shape {list(tensor.shape)}, "
                    f"the model expects {list(targets[name].shape)}"
                )
        with torch.no_grad():
            for name, tensor in items:
                targets[name].data.copy_(tensor.detach())
        return len(items)


class _Sampler(LogitsProcessor):
    """Draws each row's next token with the row's own generator and records its log-prob.

    Called by `generate` once per step with `scores` `[rows, vocab]` (float32 logits of the
    last position, no other processor before it); returns scores whose argmax is the draw.
    Rows that already finished keep drawing (generate pads them); callers cut at the first eos.
    `blocked_ids` are never drawn (their logits are set to -inf before anything else).
    """

    def __init__(
        self,
        params: SamplingParams,
        seeds: Sequence[int],
        device: torch.device,
        blocked_ids: Sequence[int] = (),
    ) -> None:
        self.temperature, self.top_p = params.temperature, params.top_p
        self.blocked_ids = list(blocked_ids)
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.tokens: list[list[int]] = [[] for _ in seeds]
        self.logprobs: list[list[float]] = [[] for _ in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()
        if self.blocked_ids:
            blocked = torch.tensor(self.blocked_ids, device=scores.device)
            scores = scores.index_fill(-1, blocked, -float("inf"))
        if self.temperature == 0:
            logprobs = torch.log_softmax(scores, dim=-1)
            chosen = logprobs.argmax(dim=-1)
        else:
            logprobs = torch.log_softmax(_top_p(scores / self.temperature, self.top_p), dim=-1)
            probs = logprobs.exp()
            chosen = torch.cat(
                [
                    torch.multinomial(probs[r], 1, generator=self.generators[r])
                    for r in range(probs.shape[0])
                ]
            )
        picked = logprobs.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
        for r, (token, logprob) in enumerate(zip(chosen.tolist(), picked.tolist(), strict=True)):
            self.tokens[r].append(token)
            self.logprobs[r].append(logprob)
        onehot = torch.full_like(scores, -float("inf"))
        return onehot.scatter_(-1, chosen.unsqueeze(-1), 0.0)


def _top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches `top_p`; others -inf.

    `logits` `[rows, vocab]`. The most likely token is always kept.
    """
    if top_p >= 1:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, -float("inf"))


def _base_seed(request: ChatRequest) -> int:
    """The request's seed, or one drawn from torch's global RNG (so `torch.manual_seed`
    upstream still makes a whole run reproducible)."""
    if request.seed is not None:
        return request.seed
    return int(torch.randint(0, 2**62, ()).item())


def _sample_seed(seed: int, k: int) -> int:
    """A well-mixed 64-bit seed for sample k: (seed, k) pairs never share a stream, unlike
    `seed + k` (request seed 0's second sample would equal request seed 1's first)."""
    state = np.random.SeedSequence([seed % 2**64, k]).generate_state(1, np.uint64)
    return int(state[0])


def _eos_ids(generation_config: GenerationConfig, tokenizer) -> list[int]:
    """Every token that ends a response: the checkpoint's eos list, else the tokenizer's."""
    eos = generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if not ids:
        raise ValueError("TransformersEngine: neither generation_config nor tokenizer names an eos")
    return ids


def _check_local_path(model: str) -> None:
    """A path-looking name that does not exist fails here, instead of as a hub lookup."""
    looks_local = model.startswith(("/", "./", "../", "~")) or Path(model).is_absolute()
    if looks_local and not Path(model).expanduser().exists():
        raise FileNotFoundError(f"TransformersEngine: model folder {model!r} does not exist")
