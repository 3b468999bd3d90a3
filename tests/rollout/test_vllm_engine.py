"""VLLMEngine's translation to and from vLLM's offline API, against a stand-in `vllm` module.

vLLM cannot run here (no CPU wheel), so `FakeLLM` and `FakeSamplingParams` replace `vllm.LLM`
and `vllm.SamplingParams` in `sys.modules`: they record what the engine passes and answer with
scripted outputs shaped like vLLM's `RequestOutput`. These tests check our side of the calls
only; that vLLM accepts them is checked on a GPU host.
"""

from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams
from itk_rl.rollout.vllm_engine import (
    VLLMEngine,
    WeightSyncExtension,
    chunk_by_bytes,
    from_vllm_outputs,
)


@dataclass
class FakeSamplingParams:
    """Mimics only the `vllm.SamplingParams` constructor arguments VLLMEngine uses."""

    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    logprobs: int | None


@dataclass
class FakeLogprob:
    """Mimics `vllm.logprobs.Logprob`: only `.logprob` is read."""

    logprob: float


@dataclass
class FakeSample:
    """Mimics the fields of `vllm.outputs.CompletionOutput` that VLLMEngine reads."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, FakeLogprob]] | None


@dataclass
class FakeRequestOutput:
    """Mimics `vllm.outputs.RequestOutput.outputs`."""

    outputs: list[FakeSample]


class FakeLLM:
    """Mimics only the call surface of `vllm.LLM` that VLLMEngine uses: the constructor,
    `chat`, `collective_rpc` and `reset_prefix_cache`. Records every call.

    `chat` answers sample k of request i with tokens `[100 i + k, 100 i + k + 1]`, log-probs
    `-(i + 1) / 10, -(k + 1) / 10`, samples listed in reverse `index` order (vLLM does not
    promise an order inside `outputs`).
    """

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.chat_calls: list[dict[str, Any]] = []
        self.rpc_calls: list[tuple[str, tuple]] = []
        self.events: list[str] = []

    def chat(self, messages, sampling_params, use_tqdm=True, add_generation_prompt=True):
        self.chat_calls.append(
            {
                "messages": messages,
                "sampling_params": sampling_params,
                "use_tqdm": use_tqdm,
                "add_generation_prompt": add_generation_prompt,
            }
        )
        outputs = []
        for i, params in enumerate(sampling_params):
            samples = []
            for k in reversed(range(params.n)):
                tokens = [100 * i + k, 100 * i + k + 1]
                logprobs = [-(i + 1) / 10, -(k + 1) / 10]
                entries = [{t: FakeLogprob(lp)} for t, lp in zip(tokens, logprobs, strict=True)]
                samples.append(FakeSample(k, f"r{i}s{k}", tokens, entries))
            outputs.append(FakeRequestOutput(samples))
        return outputs

    def collective_rpc(self, method: str, args: tuple = ()) -> list[Any]:
        self.rpc_calls.append((method, args))
        self.events.append("rpc")
        return [len(args[0])]

    def reset_prefix_cache(self) -> bool:
        self.events.append("reset_prefix_cache")
        return True


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def two_requests() -> list[ChatRequest]:
    rng = np.random.default_rng(0)
    return [
        ChatRequest(
            messages=(
                {"role": "system", "content": "You are a critic."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "before:"},
                        {"type": "image"},
                        {"type": "text", "text": "after:"},
                        {"type": "image"},
                    ],
                },
            ),
            images=(
                rng.integers(0, 256, (8, 6, 3), np.uint8),
                rng.integers(0, 256, (4, 5, 3), np.uint8),
            ),
            seed=11,
        ),
        ChatRequest(messages=({"role": "user", "content": "plan a cat"},), seed=None),
    ]


def test_missing_vllm_names_the_gpu_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match=r"pip install -e \.\[gpu\]"):
        VLLMEngine("Qwen/Qwen3-VL-8B-Instruct")


def test_constructor_passes_documented_llm_arguments(fake_vllm, tiny_models) -> None:
    engine = VLLMEngine(
        str(tiny_models.qwen3_vl),
        tensor_parallel_size=2,
        gpu_memory_utilization=0.5,
        max_model_len=4096,
        limit_mm_per_prompt={"image": 2},
        enforce_eager=True,
    )
    kwargs = engine.llm.kwargs
    extension = kwargs.pop("worker_extension_cls")
    assert kwargs == {
        "model": str(tiny_models.qwen3_vl),
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.5,
        "dtype": "bfloat16",
        "logprobs_mode": "processed_logprobs",
        "max_model_len": 4096,
        "limit_mm_per_prompt": {"image": 2},
        "enforce_eager": True,
    }
    module, name = extension.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is WeightSyncExtension
    defaults = VLLMEngine("m").llm.kwargs
    assert "max_model_len" not in defaults and "limit_mm_per_prompt" not in defaults


def test_requests_and_outputs_are_translated_in_order(fake_vllm) -> None:
    engine = VLLMEngine("m")
    requests = two_requests()
    params = SamplingParams(max_new_tokens=33, temperature=0.7, top_p=0.9, n=3)
    out = engine.generate(requests, params)

    (call,) = engine.llm.chat_calls
    assert call["use_tqdm"] is False and call["add_generation_prompt"] is True
    first, second = call["messages"]
    assert first[0] == {"role": "system", "content": "You are a critic."}
    parts = first[1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_pil", "text", "image_pil"]
    assert parts[0] == {"type": "text", "text": "before:"}
    for part, image in zip([parts[1], parts[3]], requests[0].images, strict=True):
        np.testing.assert_array_equal(np.asarray(part["image_pil"]), image)  # order and pixels
    assert second == [{"role": "user", "content": "plan a cat"}]
    assert call["sampling_params"] == [
        FakeSamplingParams(n=3, temperature=0.7, top_p=0.9, max_tokens=33, seed=11, logprobs=0),
        FakeSamplingParams(n=3, temperature=0.7, top_p=0.9, max_tokens=33, seed=None, logprobs=0),
    ]
    assert out == [
        [
            Completion(f"r{i}s{k}", (100 * i + k, 100 * i + k + 1), (-(i + 1) / 10, -(k + 1) / 10))
            for k in range(3)
        ]
        for i in range(2)
    ]


def test_malformed_outputs_are_errors_not_guesses() -> None:
    good = FakeSample(0, "a", [1, 2], [{1: FakeLogprob(-0.1)}, {2: FakeLogprob(-0.2)}])
    with pytest.raises(RuntimeError, match="request 0 got 1 sample"):
        from_vllm_outputs([FakeRequestOutput([good])], n=2)
    no_logprobs = FakeSample(0, "a", [1, 2], None)
    with pytest.raises(RuntimeError, match="None log-prob entries for 2 tokens"):
        from_vllm_outputs([FakeRequestOutput([no_logprobs])], n=1)


def test_invalid_requests_fail_before_vllm_is_called(fake_vllm) -> None:
    engine = VLLMEngine("m")
    good = two_requests()[0]
    bad = ChatRequest(messages=good.messages, images=good.images[:1])
    with pytest.raises(ValueError, match=r"request 1: 2 image placeholder\(s\).* 1 image\(s\)"):
        engine.generate([good, bad], SamplingParams())
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        engine.generate([good], SamplingParams(top_p=0.0))
    assert engine.llm.chat_calls == []


def test_update_weights_goes_through_the_worker_extension(fake_vllm) -> None:
    engine = VLLMEngine("m", weight_sync_chunk_bytes=64)
    weights = {
        "model.language_model.embed_tokens.weight": torch.ones(4, 4),  # 64 bytes
        "model.language_model.norm.weight": torch.ones(4),  # 16 bytes
        "lm_head.weight": torch.ones(2, 4, requires_grad=True),  # 32 bytes
    }
    assert engine.update_weights(weights) == 3
    assert [method for method, _ in engine.llm.rpc_calls] == ["itk_load_weights"] * 2
    chunks = [args[0] for _, args in engine.llm.rpc_calls]
    assert [[name for name, _ in chunk] for chunk in chunks] == [
        ["model.language_model.embed_tokens.weight"],
        ["model.language_model.norm.weight", "lm_head.weight"],
    ]
    assert all(not t.requires_grad and t.device.type == "cpu" for c in chunks for _, t in c)
    assert engine.llm.events[-1] == "reset_prefix_cache"  # no KV from the old weights reused

    class Worker(WeightSyncExtension):
        """A vLLM worker as the extension sees it: `self.model_runner.model.load_weights`."""

        def __init__(self) -> None:
            self.loaded: list[tuple[str, torch.Tensor]] = []
            model = types.SimpleNamespace(load_weights=lambda weights: self.loaded.extend(weights))
            self.model_runner = types.SimpleNamespace(model=model)

    worker = Worker()
    assert worker.itk_load_weights(chunks[1]) == 2
    assert [name for name, _ in worker.loaded] == [name for name, _ in chunks[1]]


def test_chunk_by_bytes_keeps_order_and_oversized_tensors_alone() -> None:
    tensors = [("a", torch.zeros(10)), ("b", torch.zeros(100)), ("c", torch.zeros(1))]
    chunks = list(chunk_by_bytes(tensors, max_bytes=80))
    assert [[name for name, _ in chunk] for chunk in chunks] == [["a"], ["b"], ["c"]]
    assert [[n for n, _ in c] for c in chunk_by_bytes(tensors, 1 << 20)] == [["a", "b", "c"]]
