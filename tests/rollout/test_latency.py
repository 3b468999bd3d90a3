"""Latency-modelled components: the models' arithmetic, seeded jitter, service times that keep to
the model, the inner components' results passed through unchanged, and a modelled generator
behind the real generator pool."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from itk_rl.interfaces.engine import ChatRequest, SamplingParams
from itk_rl.interfaces.generator import RenderRequest
from itk_rl.rollout.actors import build_component
from itk_rl.rollout.latency import (
    EngineLatencyModel,
    LatencyEngine,
    LatencyGenerator,
    LatencyModel,
    jitter,
    stream,
)
from itk_rl.rollout.pool import GeneratorPool
from itk_rl.testbed import TestbedGenerator, TestbedJudge

TESTBED = {"_target_": "itk_rl.testbed.TestbedGenerator", "image_size": 32}
MODEL = "itk_rl.rollout.latency.LatencyModel"
EDITS = ["make the circle green", "make the circle blue", "move the circle to the right"]


def requests(count: int, offset: int = 0) -> list[RenderRequest]:
    """`count` distinct text-to-image requests, seeds from `offset`."""
    return [
        RenderRequest("draw a red circle on the left", seed=i)
        for i in range(offset, offset + count)
    ]


def test_latency_model_arithmetic() -> None:
    model = LatencyModel(per_call_s=0.1, per_item_s=0.2, batch_exponent=0.5)
    assert model.mean_seconds(4) == pytest.approx(0.1 + 0.2 * 2)
    assert model.mean_seconds(1) == pytest.approx(0.3)
    assert model.mean_seconds(0) == pytest.approx(0.1)  # no items: the per-call part
    assert LatencyModel(0.1, 0.2).mean_seconds(3) == pytest.approx(0.7)  # exponent 1: linear
    assert LatencyModel(0.1, 0.2, batch_exponent=0.0).mean_seconds(5) == pytest.approx(0.3)
    # no jitter: every draw is the mean, and nothing is drawn from the stream
    rng = stream(0, 0)
    assert model.seconds(4, rng) == model.mean_seconds(4)
    assert rng.random() == stream(0, 0).random()


def test_engine_model_arithmetic() -> None:
    model = EngineLatencyModel(
        per_call_s=0.5, per_prompt_token_s=0.01, per_output_token_s=0.1, batch_exponent=0.5
    )
    # rows of 1, 3, 3 and 8 tokens: 1 step with 4 rows running, 2 with 3, none with 2, 5 with 1
    decode = 0.1 * (1 * math.sqrt(4) + 2 * math.sqrt(3) + 0 * math.sqrt(2) + 5 * 1)
    assert model.decode_seconds([3, 8, 1, 3]) == pytest.approx(decode)
    assert model.mean_seconds([100, 50], [3, 8, 1, 3]) == pytest.approx(0.5 + 1.5 + decode)
    # equal rows: length × the step time at that many rows
    assert model.decode_seconds([6] * 9) == pytest.approx(0.1 * 6 * 3)
    assert model.decode_seconds([]) == 0.0
    assert model.weight_load_seconds(stream(0, 0)) == 0.0


def test_invalid_models_fail_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"LatencyModel\.per_item_s must be >= 0"):
        LatencyModel(per_call_s=0.0, per_item_s=-1.0)
    with pytest.raises(ValueError, match=r"batch_exponent must be in \[0, 1\]"):
        LatencyModel(per_call_s=0.0, per_item_s=1.0, batch_exponent=1.5)
    with pytest.raises(ValueError, match=r"EngineLatencyModel\.jitter_sigma"):
        EngineLatencyModel(0.0, 0.0, 0.0, jitter_sigma=float("nan"))
    with pytest.raises(TypeError, match=r"_target_: itk_rl\.rollout\.latency\.LatencyModel"):
        LatencyGenerator(TestbedGenerator(), latency={"per_call_s": 0.1, "per_item_s": 0.1})


def test_jitter_has_mean_one_and_streams_are_seeded() -> None:
    draws = [jitter(0.5, stream(3, 1)) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]  # same (seed, instance): same draws
    assert stream(3, 1).random() != stream(3, 2).random() != stream(4, 1).random()
    rng = stream(0, 0)
    assert np.mean([jitter(0.5, rng) for _ in range(20_000)]) == pytest.approx(1.0, rel=0.02)


def test_wrappers_are_seeded_per_instance() -> None:
    model = LatencyModel(per_call_s=0.001, per_item_s=0.0, jitter_sigma=0.5, seed=11)

    def modelled(instance: int | None) -> float:
        generator = LatencyGenerator(TestbedGenerator(image_size=16), model, instance=instance)
        for _ in range(5):
            generator(requests(1))
        return generator.stats()["render"]["modelled_s"]

    assert modelled(2) == modelled(2)
    assert modelled(2) != modelled(3)
    assert modelled(None) != modelled(None)  # unnamed instances of one process differ


def test_mean_service_time_keeps_to_the_model() -> None:
    """300 calls of 4 renders, each modelled at 4 + 2·√4 = 8 ms with 20 % jitter: the measured
    mean wall time is within 10 % of the model's mean."""
    model = LatencyModel(per_call_s=0.004, per_item_s=0.002, batch_exponent=0.5, jitter_sigma=0.2)
    generator = LatencyGenerator(TestbedGenerator(image_size=32), model, instance=0)
    batch, walls = requests(4), []
    for _ in range(300):
        start = time.perf_counter()
        generator(batch)
        walls.append(time.perf_counter() - start)
    stats = generator.stats()["render"]
    assert model.mean_seconds(4) == pytest.approx(0.008)
    assert np.mean(walls) == pytest.approx(0.008, rel=0.10), stats
    assert stats["calls"] == 300
    assert stats["modelled_s"] / 300 == pytest.approx(0.008, rel=0.10)


def test_an_inner_slower_than_the_model_is_an_overrun() -> None:
    generator = LatencyGenerator(TESTBED, LatencyModel(0.0, 0.0))  # inner built from its config
    batch = requests(3)
    images = generator(batch)
    stats = generator.stats()["render"]
    for got, want in zip(images, TestbedGenerator(image_size=32)(batch), strict=True):
        np.testing.assert_array_equal(got, want)
    assert stats["overruns"] == stats["calls"] == 1
    assert stats["slept_s"] == 0.0 and stats["overrun_s"] == pytest.approx(stats["inner_s"])


def test_generator_and_judge_return_the_inner_results() -> None:
    latency = {"_target_": MODEL, "per_call_s": 0.001, "per_item_s": 0.0005}
    generator = build_component(
        {
            "_target_": "itk_rl.rollout.latency.LatencyGenerator",
            "inner": TESTBED,
            "latency": latency,
        }
    )
    judge = build_component(
        {
            "_target_": "itk_rl.rollout.latency.LatencyJudge",
            "inner": {"_target_": "itk_rl.testbed.TestbedJudge"},
            "latency": latency,
        }
    )
    reference = TestbedGenerator(image_size=32)
    befores = reference(requests(3))
    edits = [
        RenderRequest(text, (before,), seed=i)
        for i, (text, before) in enumerate(zip(EDITS, befores, strict=True))
    ]
    afters = generator(edits)
    for got, want in zip(afters, reference(edits), strict=True):
        np.testing.assert_array_equal(got, want)
    assert list(judge.score_batch(EDITS, afters, befores)) == TestbedJudge().score_batch(
        EDITS, afters, befores
    )
    assert generator.stats()["render"]["calls"] == judge.stats()["score"]["calls"] == 1


def test_engine_returns_the_inner_completions_and_loads_weights(tiny_models) -> None:
    from itk_rl.rollout.hf_engine import TransformersEngine  # transformers: import when used

    inner = TransformersEngine(str(tiny_models.qwen3_vl), max_batch_size=8)
    model = EngineLatencyModel(
        per_call_s=0.001, per_prompt_token_s=1e-6, per_output_token_s=1e-4, weight_load_s=0.01
    )
    engine = LatencyEngine(inner, model, tokens_per_image=1024, output_token_scale=2.0)
    image = np.random.default_rng(0).integers(0, 256, (48, 48, 3), np.uint8)
    request = ChatRequest(
        messages=(
            {"role": "system", "content": "You are a critic."},  # 17 characters
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": "is there a red circle? "}],
            },  # 23 characters
        ),
        images=(image,),
        seed=5,
    )
    params = SamplingParams(max_new_tokens=6, n=2)
    got = engine.generate([request], params)
    assert got == inner.generate([request], params)
    prompt = engine.counts.prompt(request.messages, len(request.images))
    assert prompt == (17 + 23) / 4 + 1024
    outputs = [engine.counts.output(len(c.token_ids), c.text) for c in got[0]]
    assert outputs[0] == 2.0 * len(got[0][0].token_ids)
    assert engine.counts.output(None, "twelve chars") == 2.0 * 12 / 4  # no ids: characters

    state = {name: tensor.clone() for name, tensor in inner.model.state_dict().items()}
    assert engine.update_weights(state) == inner.update_weights(state) == len(state)
    stats = engine.stats()
    assert stats["update_weights"]["calls"] == 1
    assert stats["update_weights"]["modelled_s"] == 0.01  # no jitter: exactly weight_load_s
    assert stats["generate"]["modelled_s"] == pytest.approx(model.mean_seconds([prompt], outputs))


def test_modelled_generator_behind_the_pool(ray_local: None) -> None:
    """Two actors, batches of up to 4: the images are the testbed's, and each actor was busy at
    least its modelled time (no jitter, exponent 1: batches × 20 ms + renders × 5 ms)."""
    config = {
        "_target_": "itk_rl.rollout.latency.LatencyGenerator",
        "inner": TESTBED,
        "latency": {"_target_": MODEL, "per_call_s": 0.02, "per_item_s": 0.005},
    }
    batch = requests(12, offset=100)
    with GeneratorPool(
        generator_config=config,
        num_actors=2,
        num_cpus=0.5,
        num_gpus=0,
        max_batch_size=4,
        max_wait_s=0.0,
        max_restarts=0,
        max_task_retries=0,
    ) as pool:
        images = pool.render(batch, timeout=60)
        stats = pool.stats()
    for got, want in zip(images, TestbedGenerator(image_size=32)(batch), strict=True):
        np.testing.assert_array_equal(got, want)
    assert stats["served"] == 12
    for actor in stats["actors"]:
        assert actor["busy_s"] >= 0.02 * actor["batches"] + 0.005 * actor["items"]
    assert sum(actor["items"] for actor in stats["actors"]) == 12
