"""The judge pool on a local Ray cluster, with the testbed judge."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from itk_rl.interfaces.generator import RenderRequest
from itk_rl.rewards.judge_pool import JudgePool
from itk_rl.testbed import TestbedGenerator, TestbedJudge
from itk_rl.testbed.render import render
from itk_rl.testbed.scene import Scene, ShapeObject

BEFORE = render(Scene.of(left=ShapeObject("circle", "red", "large")), (32, 32))
CASES = [
    ("draw a blue square on the right", None),
    ("draw a crimson disc in the middle", None),
    ("make the circle green", BEFORE),
    ("move the circle to the right", BEFORE),
    ("add a yellow triangle on the right", BEFORE),
]


def renders() -> tuple[list[str], list[np.ndarray], list[np.ndarray | None]]:
    """Instructions, testbed renders of them (some misrendered, some noisy), before-images."""
    generator = TestbedGenerator(image_size=32, artifact_prob=0.5)
    instructions = [text for text, _ in CASES]
    befores = [before for _, before in CASES]
    requests = [
        RenderRequest(text, () if before is None else (before,), seed=i)
        for i, (text, before) in enumerate(CASES)
    ]
    return instructions, generator(requests), befores


def make_pool(**overrides: object) -> JudgePool:
    options = {
        "judge_config": {"_target_": "itk_rl.testbed.TestbedJudge"},
        "num_actors": 2,
        "num_cpus": 0.5,
        "num_gpus": 0,
        "max_restarts": 0,
        "max_task_retries": 0,
    }
    return JudgePool(**{**options, **overrides})


@pytest.fixture(scope="module")
def pool(ray_local: None) -> Iterator[JudgePool]:
    with make_pool(max_batch_size=len(CASES), max_wait_s=0.2) as pool:
        yield pool


def test_judge_pool_scores_like_the_local_judge(pool: JudgePool) -> None:
    instructions, afters, befores = renders()
    expected = TestbedJudge().score_batch(instructions, afters, befores)
    pool.reset_stats()
    assert pool.score_batch(instructions, afters, befores) == expected
    futures = [pool.submit(*case) for case in zip(instructions, afters, befores, strict=True)]
    assert [future.result(timeout=60) for future in futures] == expected
    stats = pool.stats()
    assert stats["served"] == 2 * len(CASES) and stats["failed"] == 0
    assert len({score.semantics for score in expected}) > 1  # the renders differ in quality


def test_a_failing_item_fails_alone(pool: JudgePool) -> None:
    instructions, afters, befores = renders()
    instructions[2] = "paint it like Monet"  # does not parse: TestbedJudge raises
    expected = TestbedJudge().score_batch(
        instructions[:2] + instructions[3:], afters[:2] + afters[3:], befores[:2] + befores[3:]
    )
    pool.reset_stats()
    # all five fill one batch, which raises; each item is then scored alone
    futures = [pool.submit(*case) for case in zip(instructions, afters, befores, strict=True)]
    with pytest.raises(ValueError, match="Monet"):
        futures[2].result(timeout=60)
    assert [futures[i].result(timeout=60) for i in (0, 1, 3, 4)] == expected
    stats = pool.stats()
    assert (stats["failed"], stats["served"]) == (1, 4)
    with pytest.raises(ValueError, match="Monet"):
        pool.score_batch(instructions, afters, befores)
