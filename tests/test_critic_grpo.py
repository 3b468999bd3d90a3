"""Pieces of one GRPO step: re-render seeds, and the rewards phase on real generator and judge
pools (the whole step runs in test_train.py)."""

from __future__ import annotations

import numpy as np

from itk_rl.critic_grpo import Response, StepSettings, render_seed_for, score_responses
from itk_rl.formats import (
    CriticSample,
    CriticVerdict,
    Evaluation,
    format_critic_answer,
    parse_critic_output,
)
from itk_rl.rewards.critic import critic_reward
from itk_rl.rewards.judge_pool import JudgePool
from itk_rl.rollout.engine import Completion, SamplingParams
from itk_rl.rollout.generator import RenderRequest
from itk_rl.rollout.pool import GeneratorPool
from itk_rl.testbed import TestbedGenerator
from itk_rl.testbed.render import unexplained_pixels

CORE_PROMPT = "draw a large red circle on the left"


def test_render_seeds_are_shared_by_a_group_and_new_for_each_record_and_step() -> None:
    assert render_seed_for(0, 3, 5) == render_seed_for(0, 3, 5)
    seeds = {render_seed_for(0, step, record) for step in range(1, 21) for record in range(16)}
    assert len(seeds) == 20 * 16
    assert render_seed_for(1, 3, 5) != render_seed_for(0, 3, 5)


def test_rerenders_meet_the_generators_chance_of_a_smudge() -> None:
    # A prompt in core words is smudged with probability artifact_prob, as the pipeline's
    # retries are; one seed for every re-render would show the reward the same draw each time.
    generator = TestbedGenerator(image_size=48, misrender_prob=0.7, artifact_prob=0.2)
    requests = [
        RenderRequest(CORE_PROMPT, seed=render_seed_for(0, 1, record)) for record in range(200)
    ]
    smudged = sum(unexplained_pixels(image) > 0 for image in generator(requests))
    assert 20 <= smudged <= 60  # 200 draws at 0.2: 40 expected, 20–60 is beyond 3.5 sigma


def test_rewards_phase_renders_a_group_with_one_seed_and_records_with_their_own(
    ray_local: None,
) -> None:
    # 40 failed text-to-image records, 2 responses each refining to the same core-word prompt:
    # a group's two re-renders are the same image; across records some are smudged and some
    # not (one seed for all would give every record the same draw).
    canvas = np.full((48, 48, 3), 255, dtype=np.uint8)
    failed = CriticSample(
        CORE_PROMPT, "draw a crimson disc", canvas, canvas, Evaluation(0, 10, False)
    )
    batch = [failed] * 40
    answer = format_critic_answer(CriticVerdict(False, CORE_PROMPT, "left none"))
    responses = [
        Response(record, Completion(answer), parse_critic_output(answer))
        for record in range(len(batch))
        for _ in range(2)
    ]
    world = {"_target_": "itk_rl.testbed.TestbedGenerator", "misrender_prob": 0.7}
    actors = {"num_actors": 1, "num_cpus": 0.5, "num_gpus": 0, "max_batch_size": 16}
    actors |= {"max_wait_s": 0.01, "max_restarts": 0, "max_task_retries": 0}
    with (
        GeneratorPool({**world, "artifact_prob": 0.2}, **actors) as generators,
        JudgePool({"_target_": "itk_rl.testbed.TestbedJudge"}, **actors) as judges,
    ):
        settings = StepSettings(SamplingParams())
        score_responses(generators, judges, critic_reward, batch, responses, settings, step=3)
    qualities = [r.rerender.quality for r in responses]
    assert all(r.reward is not None for r in responses)
    assert qualities[0::2] == qualities[1::2]  # the two responses of each record
    assert all(r.rerender.semantics == 10.0 for r in responses)  # core words render right
    assert 0 < sum(q < 10.0 for q in qualities[0::2]) < len(batch)  # some records smudged
