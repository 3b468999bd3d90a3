"""Critic records from testbed tasks: each plan step rendered once from its true before-image.

This is the teacher's first attempt at every step, judged exactly: a step written with
out-of-vocabulary words is usually misrendered (label `success=False`, and the step-wise reward
has something to improve), a step in core words renders right (`success=True`). Each step
starts from the *ground-truth* scene of the previous step, so later instructions always refer
to objects that exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from itk_rl.formats import Attempt
from itk_rl.formats.images import white_canvas
from itk_rl.formats.records import CriticSample, Evaluation
from itk_rl.interfaces.generator import ImageGenerator, RenderRequest
from itk_rl.testbed.judge import TestbedJudge
from itk_rl.testbed.render import describe_image, render
from itk_rl.testbed.tasks import TestbedTask


def critic_samples(
    tasks: Iterable[TestbedTask],
    generator: ImageGenerator,
    judge: TestbedJudge,
    *,
    image_size: int = 48,
    seed: int = 0,
    success_threshold: float = 10.0,
) -> Iterator[CriticSample]:
    """One record per plan step. `success` = the judge's overall score ≥ `success_threshold`
    (10 on the exact testbed judge: the step is right in every checked attribute)."""
    for task_index, task in enumerate(tasks):
        before = white_canvas(image_size, image_size)
        for step_index, (step, scene) in enumerate(zip(task.plan.steps, task.scenes, strict=True)):
            text_to_image = step_index == 0
            references = () if text_to_image else (before,)
            request_seed = seed + 1000 * task_index + step_index
            (after,) = generator([RenderRequest(step.prompt, references, seed=request_seed)])
            score = judge.score(step.prompt, after, None if text_to_image else before)
            evaluation = Evaluation(
                semantics=score.semantics,
                quality=score.quality,
                success=score.overall >= success_threshold,
            )
            yield CriticSample(step.prompt, step.prompt, before, after, evaluation, text_to_image)
            before = render(scene, image_size)


def scene_think(attempt: Attempt, before: np.ndarray, after: np.ndarray) -> str:
    """The testbed critic's reasoning: the whole after-image described slot by slot, and its
    smudge if any (`itk_rl.testbed.render.describe_image`)."""
    return describe_image(after)
