"""The rewards phase of a GRPO step: re-render seeds, and the rewards on real generator and judge
pools (the whole step runs in test_train.py)."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import ray

from itk_rl.critic_grpo import StepSettings
from itk_rl.critic_grpo_rewards import (
    Response,
    render_seed_for,
    rerender_inputs,
    reward_metrics,
    score_responses,
)
from itk_rl.formats import (
    CriticSample,
    CriticVerdict,
    Evaluation,
    format_critic_answer,
    parse_critic_output,
)
from itk_rl.interfaces.engine import Completion, SamplingParams
from itk_rl.interfaces.generator import RenderRequest
from itk_rl.rewards.critic import CriticReward
from itk_rl.rewards.judge_pool import JudgePool
from itk_rl.rollout.pool import GeneratorPool
from itk_rl.testbed import TestbedGenerator
from itk_rl.testbed.render import decode, render, unexplained_pixels
from itk_rl.testbed.scene import Scene, ShapeObject

# BrokenOnMelt goes to the Ray actors as a class: workers cannot import test modules by name.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

CORE_PROMPT = "draw a large red circle on the left"
CANVAS = np.full((48, 48, 3), 255, dtype=np.uint8)
ACTORS = {"num_actors": 1, "num_cpus": 0.5, "num_gpus": 0, "max_batch_size": 16}
ACTORS |= {"max_wait_s": 0.01, "max_restarts": 0, "max_task_retries": 0}


class BrokenOnMelt(TestbedGenerator):
    """The testbed generator, failing on prompts that say "melt" as a real one fails on an
    out-of-memory error."""

    def render_one(self, request: RenderRequest) -> np.ndarray:
        if "melt" in request.prompt:
            raise RuntimeError(f"out of memory rendering {request.prompt!r}")
        return super().render_one(request)


def _responses(batch_size: int, refinements: list[str], per_record: int = 2) -> list[Response]:
    """`per_record` critic answers per record, each rejecting the step with its refinement."""
    answers = [format_critic_answer(CriticVerdict(False, r, "left none")) for r in refinements]
    return [
        Response(record, Completion(answers[record]), parse_critic_output(answers[record]))
        for record in range(batch_size)
        for _ in range(per_record)
    ]


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
    failed = CriticSample(
        CORE_PROMPT, "draw a crimson disc", CANVAS, CANVAS, Evaluation(0, 10, False), True
    )
    batch = [failed] * 40
    answer = format_critic_answer(CriticVerdict(False, CORE_PROMPT, "left none"))
    responses = [
        Response(record, Completion(answer), parse_critic_output(answer))
        for record in range(len(batch))
        for _ in range(2)
    ]
    world = {"_target_": "itk_rl.testbed.TestbedGenerator", "misrender_prob": 0.7}
    with (
        GeneratorPool({**world, "artifact_prob": 0.2}, **ACTORS) as generators,
        JudgePool({"_target_": "itk_rl.testbed.TestbedJudge"}, **ACTORS) as judges,
    ):
        settings = StepSettings(SamplingParams())
        score_responses(generators, judges, CriticReward(), batch, responses, settings, step=3)
    qualities = [r.rerender.quality for r in responses]
    assert all(r.reward is not None for r in responses)
    assert qualities[0::2] == qualities[1::2]  # the two responses of each record
    assert all(r.rerender.semantics == 10.0 for r in responses)  # core words render right
    assert 0 < sum(q < 10.0 for q in qualities[0::2]) < len(batch)  # some records smudged


def test_failed_renders_and_judgings_are_counted_and_logged_once_per_kind_and_step(
    ray_local: None, caplog: pytest.LogCaptureFixture
) -> None:
    # Three failed text-to-image steps, two responses each: the judge cannot parse the first
    # step's prompt (ValueError), the generator breaks on the second's refinement
    # (RuntimeError), the third renders and is judged. Every response tries 1 + 2 retries.
    failed = Evaluation(0, 10, False)
    batch = [
        CriticSample("paint it like Monet", "paint it", CANVAS, CANVAS, failed, True),
        CriticSample(CORE_PROMPT, "draw a crimson disc", CANVAS, CANVAS, failed, True),
        CriticSample(CORE_PROMPT, "draw a crimson disc", CANVAS, CANVAS, failed, True),
    ]
    refinements = [CORE_PROMPT, "melt a large red circle on the left", CORE_PROMPT]
    settings = StepSettings(SamplingParams(), render_retries=2)
    generator = {"_target_": BrokenOnMelt, "misrender_prob": 0.7}
    caplog.set_level(logging.WARNING, logger="itk_rl.critic_grpo_rewards")
    with (
        GeneratorPool(generator, **ACTORS) as generators,
        JudgePool({"_target_": "itk_rl.testbed.TestbedJudge"}, **ACTORS) as judges,
    ):
        steps = {}
        for step in (3, 4):
            responses = _responses(len(batch), refinements)
            score_responses(generators, judges, CriticReward(), batch, responses, settings, step)
            steps[step] = (responses, reward_metrics(batch, responses))

    for responses, metrics in steps.values():
        assert metrics["reward/failures/ValueError"] == 2 * 3
        assert metrics["reward/failures/RuntimeError"] == 2 * 3
        assert metrics["reward/render_or_judge_failures"] == 4
        assert [r.reward is not None for r in responses] == [False] * 4 + [True] * 2
    lines = [r.getMessage() for r in caplog.records if r.name == "itk_rl.critic_grpo_rewards"]
    for step in (3, 4):
        judged = [m for m in lines if m.startswith(f"step {step}:") and "ValueError" in m]
        rendered = [m for m in lines if m.startswith(f"step {step}:") and "RuntimeError" in m]
        assert len(judged) == 1 and "Monet" in judged[0]
        assert len(rendered) == 1 and "out of memory rendering 'melt a large" in rendered[0]
    assert len(lines) == 4


def test_a_first_step_whose_before_image_is_not_white_rerenders_from_nothing(
    ray_local: None,
) -> None:
    # A step-1 record whose stored before-image is a picture, not a blank canvas: its
    # refinement renders from nothing and is judged as text-to-image (right: SC 10). As an edit
    # of that picture it would replace the square and be judged wrong (SC 0).
    picture = render(Scene.of(right=ShapeObject("square", "blue", "large")), 48)
    prompt = "draw a large red circle on the right"
    failed = CriticSample(prompt, prompt, picture, CANVAS, Evaluation(0, 10, False), True)
    responses = _responses(1, [prompt])
    request, before = rerender_inputs(failed, prompt, seed=0)
    assert request.references == () and before is None
    assert decode(TestbedGenerator()([request])[0]) == Scene.of(
        right=ShapeObject("circle", "red", "large")
    )
    with (
        GeneratorPool({"_target_": "itk_rl.testbed.TestbedGenerator"}, **ACTORS) as generators,
        JudgePool({"_target_": "itk_rl.testbed.TestbedJudge"}, **ACTORS) as judges,
    ):
        settings = StepSettings(SamplingParams())
        score_responses(generators, judges, CriticReward(), [failed], responses, settings, step=1)
    assert [r.rerender.semantics for r in responses] == [10.0, 10.0]


def test_an_edit_of_a_white_image_rerenders_as_an_edit_of_it() -> None:
    # Step 2 after a step that left the canvas empty: the refinement edits that image (rendered
    # at its size, 36×36, not the generator's 48×48) and is judged against it.
    white = np.full((36, 36, 3), 255, dtype=np.uint8)
    failed = CriticSample(CORE_PROMPT, CORE_PROMPT, white, white, Evaluation(0, 10, False), False)
    request, before = rerender_inputs(failed, CORE_PROMPT, seed=0)
    assert len(request.references) == 1 and request.references[0] is white and before is white
    assert TestbedGenerator(image_size=48)([request])[0].shape == (36, 36, 3)
