"""Weight sync for real: FSDP trainer (2 gloo ranks) → object store → rollout workers.

After an update, a rollout worker's greedy outputs change, and equal those of an engine that
loads the trainer's exported weights: the workers hold exactly the trainer's weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ray

from itk_rl.formats import build_critic_messages, load_template
from itk_rl.interfaces.engine import ChatRequest, SamplingParams
from itk_rl.rollout.hf_engine import TransformersEngine
from itk_rl.rollout.workers import RolloutWorkers
from itk_rl.trainer.batch import TrainSample
from itk_rl.trainer.group import TrainerGroup

GREEDY = SamplingParams(max_new_tokens=10, temperature=0.0)


def _requests() -> list[ChatRequest]:
    template = load_template("critic_testbed")
    rng = np.random.default_rng(0)
    return [
        ChatRequest(
            tuple(build_critic_messages(template, f"draw a red circle {i}", "draw a disc")),
            tuple(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(2)),
        )
        for i in range(3)
    ]


def _token_ids(groups) -> list[tuple[int, ...]]:
    return [completion.token_ids for group in groups for completion in group]


@pytest.mark.usefixtures("ray_local")
def test_rollout_workers_hold_the_trainers_weights_after_sync(tiny_models, tmp_path: Path) -> None:
    model = str(tiny_models.qwen2_5_vl)
    engine_config = {"_target_": "itk_rl.rollout.hf_engine.TransformersEngine", "model": model}
    workers = RolloutWorkers(
        engine_config, num_actors=2, num_cpus=0.5, num_gpus=0, max_restarts=0, max_task_retries=0
    )
    trainer = TrainerGroup(model, {"world_size": 2, "lr": 0.05, "kl_coef": 0.0})
    try:
        requests = _requests()
        before = workers.generate(requests, GREEDY)
        # Push the sampled responses' log-probs up hard: the greedy outputs must move.
        sampled = workers.generate(requests, SamplingParams(max_new_tokens=10, n=2))
        samples = [
            TrainSample(requests[i].messages, c.token_ids, requests[i].images)
            for i, group in enumerate(sampled)
            for c in group
        ]
        advantages = np.array([1.0, -1.0] * len(requests), dtype=np.float32)
        trainer.update(samples, advantages)

        version = workers.update_weights(ray.put(trainer.state_dict_for_sync()))
        assert workers.worker_versions() == [version, version]
        after = workers.generate(requests, GREEDY)
        assert _token_ids(after) != _token_ids(before)

        exported = TransformersEngine(trainer.export(str(tmp_path / "export")))
        assert _token_ids(after) == _token_ids(exported.generate(requests, GREEDY))
    finally:
        trainer.shutdown()
        workers.shutdown()
