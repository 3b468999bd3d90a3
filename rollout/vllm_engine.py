"""A `VLMEngine` over vLLM's offline API (`vllm.LLM`): the GPU rollout backend.

NOT RUN HERE. vLLM has no CPU wheel (DESIGN §5), so this module has never executed against a
real vLLM on this machine. What is tested (tests/rollout/test_vllm_engine.py, with a stand-in
exposing only the call surface used) is our side: messages, images and sampling parameters
become the documented structures, and outputs come back as `Completion`s in order. The vLLM
calls follow its documented offline API (v0.10.2 and later):
- `LLM(model, tensor_parallel_size, gpu_memory_utilization, dtype, max_model_len,
  limit_mm_per_prompt, logprobs_mode, worker_extension_cls, ...)`;
- `LLM.chat(conversations, sampling_params=[one per conversation], use_tqdm=False,
  add_generation_prompt=True)`, images as `{"type": "image_pil", "image_pil": PIL.Image}` parts,
  so vLLM applies the checkpoint's own chat template and expands the image placeholders;
- `SamplingParams(n, temperature, top_p, max_tokens, seed, logprobs=0)`: `logprobs=0` returns
  the sampled token's log-prob only; `RequestOutput.outputs[*]` has `index`, `text`,
  `token_ids` and `logprobs` (one `{token_id: Logprob}` per generated token);
- weight sync as in vLLM's RLHF examples: a worker extension (`worker_extension_cls`) whose
  method calls `self.model_runner.model.load_weights(weights=...)`, reached through
  `LLM.collective_rpc`, then `LLM.reset_prefix_cache()` so no KV cached under the old weights
  is reused.

Log-probs are requested with `logprobs_mode="processed_logprobs"`: after temperature and top-p,
the distribution actually sampled from, as `TransformersEngine` reports them (greedy: vLLM
divides by 1, so the untempered model). vLLM's default would be the raw, untempered model.
Seeds: a seeded request's `n` samples are derived from the seed by vLLM itself; tokens differ
from `TransformersEngine`'s for the same seed (other kernels, other RNG use).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams, check_batch

_LOAD_METHOD = "itk_load_weights"  # the WeightSyncExtension method collective_rpc calls


class VLLMEngine:
    """Loads `model` into a `vllm.LLM` once and continues batches of chats.

    `max_model_len` None lets vLLM take the checkpoint's; `limit_mm_per_prompt`
    (e.g. `{"image": 2}`) None keeps vLLM's default. `llm_kwargs` go to `vllm.LLM` unchanged
    (e.g. `enforce_eager`, `seed`). `weight_sync_chunk_bytes` bounds one weight-sync message.
    """

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "bfloat16",
        max_model_len: int | None = None,
        limit_mm_per_prompt: Mapping[str, int] | None = None,
        weight_sync_chunk_bytes: int = 1 << 30,
        **llm_kwargs: Any,
    ) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise ImportError(
                "VLLMEngine needs vLLM (CUDA only), which is not installed: run "
                "`pip install -e .[gpu]` on a GPU host, or use "
                "itk_rl.rollout.hf_engine.TransformersEngine on CPU"
            ) from exc
        self.model_name = str(model)
        self.weight_sync_chunk_bytes = weight_sync_chunk_bytes
        self._sampling_params_cls = vllm.SamplingParams
        kwargs = llm_engine_kwargs(
            self.model_name,
            tensor_parallel_size,
            gpu_memory_utilization,
            dtype,
            max_model_len,
            limit_mm_per_prompt,
        )
        try:
            self.llm = vllm.LLM(**kwargs, **llm_kwargs)
        except (OSError, ValueError) as exc:
            raise OSError(f"VLLMEngine: cannot load model {self.model_name!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"VLLMEngine(model={self.model_name!r})"

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        """`params.n` completions per request, in input order. Validates all before running."""
        check_batch(requests, params)
        conversations = [to_vllm_conversation(request) for request in requests]
        sampling = [
            self._sampling_params_cls(**to_vllm_sampling_kwargs(request, params))
            for request in requests
        ]
        outputs = self.llm.chat(
            conversations, sampling_params=sampling, use_tqdm=False, add_generation_prompt=True
        )
        return from_vllm_outputs(outputs, params.n)

    def update_weights(
        self, named_tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
    ) -> int:
        """Load new weights into every worker (RL weight sync); returns how many tensors.

        Names are the trainer's (Hugging Face) parameter names; the model's `load_weights`
        maps them and shards them for tensor parallelism. Tensors travel by value through
        `collective_rpc` in chunks of `weight_sync_chunk_bytes`; for large models on separate
        GPUs vLLM's NCCL/IPC weight transfer is the faster path (not wired here).
        """
        items = named_tensors.items() if isinstance(named_tensors, Mapping) else named_tensors
        count = 0
        for chunk in chunk_by_bytes(items, self.weight_sync_chunk_bytes):
            self.llm.collective_rpc(_LOAD_METHOD, args=(chunk,))
            count += len(chunk)
        self.llm.reset_prefix_cache()
        return count


class WeightSyncExtension:
    """Mixed into each vLLM worker through `worker_extension_cls` (runs in the worker process,
    where `self.model_runner` is the worker's): loads weights sent by `update_weights`."""

    def itk_load_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        self.model_runner.model.load_weights(weights=named_tensors)  # type: ignore[attr-defined]
        return len(named_tensors)


def llm_engine_kwargs(
    model: str,
    tensor_parallel_size: int,
    gpu_memory_utilization: float,
    dtype: str,
    max_model_len: int | None,
    limit_mm_per_prompt: Mapping[str, int] | None,
) -> dict[str, Any]:
    """Keyword arguments of `vllm.LLM`; unset optional ones are left to vLLM's defaults."""
    kwargs: dict[str, Any] = {
        "model": model,
        "tensor_parallel_size": tensor_parallel_size,
        "gpu_memory_utilization": gpu_memory_utilization,
        "dtype": dtype,
        "logprobs_mode": "processed_logprobs",
        "worker_extension_cls": f"{WeightSyncExtension.__module__}.{WeightSyncExtension.__name__}",
    }
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if limit_mm_per_prompt is not None:
        kwargs["limit_mm_per_prompt"] = dict(limit_mm_per_prompt)
    return kwargs


def to_vllm_conversation(request: ChatRequest) -> list[dict[str, Any]]:
    """transformers chat format -> vLLM chat parts: each image placeholder, in order, becomes
    `{"type": "image_pil", "image_pil": PIL.Image}`; text parts and string contents are kept."""
    images = iter(request.images)
    conversation = []
    for message in request.messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [
                {"type": "image_pil", "image_pil": Image.fromarray(next(images))}
                if part["type"] == "image"
                else {"type": "text", "text": part["text"]}
                for part in content
            ]
        conversation.append({**message, "content": content})
    return conversation


def to_vllm_sampling_kwargs(request: ChatRequest, params: SamplingParams) -> dict[str, Any]:
    """Arguments of `vllm.SamplingParams` for one request (temperature 0 is greedy in vLLM)."""
    return {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_new_tokens,
        "seed": request.seed,
        "logprobs": 0,
    }


def from_vllm_outputs(outputs: Sequence[Any], n: int) -> list[list[Completion]]:
    """`RequestOutput`s (one per request, in order) -> `n` `Completion`s each.

    Samples are ordered by their `index`. `token_ids` keep a final eos as vLLM returns it
    (the trainer learns when to stop); `text` is vLLM's, without it.
    """
    result = []
    for request_index, output in enumerate(outputs):
        samples = sorted(output.outputs, key=lambda sample: sample.index)
        if len(samples) != n:
            raise RuntimeError(
                f"VLLMEngine: request {request_index} got {len(samples)} sample(s), expected {n}"
            )
        result.append([_completion(request_index, sample) for sample in samples])
    return result


def _completion(request_index: int, sample: Any) -> Completion:
    token_ids = tuple(int(t) for t in sample.token_ids)
    if sample.logprobs is None or len(sample.logprobs) != len(token_ids):
        got = None if sample.logprobs is None else len(sample.logprobs)
        raise RuntimeError(
            f"VLLMEngine: request {request_index}, sample {sample.index}: {got} log-prob "
            f"entries for {len(token_ids)} tokens (SamplingParams.logprobs must be 0)"
        )
    # Each entry maps token id -> Logprob; with logprobs=0 it holds the sampled token.
    logprobs = tuple(
        float(entry[token].logprob) for entry, token in zip(sample.logprobs, token_ids, strict=True)
    )
    return Completion(text=sample.text, token_ids=token_ids, logprobs=logprobs)


def chunk_by_bytes(
    named_tensors: Iterable[tuple[str, torch.Tensor]], max_bytes: int
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Groups of (name, CPU tensor) of at most `max_bytes` each (a bigger tensor goes alone),
    so one RPC message never holds the whole model."""
    chunk: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named_tensors:
        tensor = tensor.detach().to("cpu").contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if chunk and size + nbytes > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append((name, tensor))
        size += nbytes
    if chunk:
        yield chunk
