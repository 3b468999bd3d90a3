"""Task sampling: deterministic ground truth that the generator and judge agree on."""

from __future__ import annotations

import numpy as np
import pytest

from itk_rl.interfaces.generator import RenderRequest
from itk_rl.testbed.edits import Add, apply
from itk_rl.testbed.generator import TestbedGenerator
from itk_rl.testbed.judge import TestbedJudge
from itk_rl.testbed.lexicon import CORE_LEXICON, FULL_LEXICON, GRAMMAR_WORDS
from itk_rl.testbed.parser import parse_instruction
from itk_rl.testbed.render import decode, render
from itk_rl.testbed.scene import Scene, describe
from itk_rl.testbed.tasks import TaskSampler, corpus

judge = TestbedJudge()


def make_request(prompt: str, before: np.ndarray | None = None, seed: int = 0) -> RenderRequest:
    """Text-to-image if `before` is None, else an edit of `before`."""
    return RenderRequest(prompt, () if before is None else (before,), seed)


def test_tasks_are_deterministic_per_seed_and_index() -> None:
    sampler = TaskSampler(seed=7, synonym_rate=0.5)
    assert sampler.sample(10) == TaskSampler(seed=7, synonym_rate=0.5).sample(10)
    assert sampler.task(4) == sampler.sample(10)[4]
    assert sampler.sample(10) != TaskSampler(seed=8, synonym_rate=0.5).sample(10)
    assert len({task.request for task in sampler.sample(10)}) == 10


def test_synonym_rate_changes_words_not_scenes() -> None:
    plain = TaskSampler(seed=2, synonym_rate=0.0).sample(30)
    rich = TaskSampler(seed=2, synonym_rate=0.7).sample(30)
    assert [t.scenes for t in plain] == [t.scenes for t in rich]
    assert all(
        step.prompt == canonical and CORE_LEXICON.is_core_text(step.prompt)
        for task in plain
        for step, canonical in zip(task.plan.steps, task.canonical_prompts, strict=True)
    )
    assert sum(not CORE_LEXICON.is_core_text(s.prompt) for t in rich for s in t.plan.steps) > 30


@pytest.mark.parametrize(("min_steps", "max_steps"), [(1, 1), (2, 4), (3, 5)])
def test_plans_have_the_requested_length_and_format(min_steps: int, max_steps: int) -> None:
    for task in TaskSampler(seed=0, min_steps=min_steps, max_steps=max_steps).sample(20):
        steps = task.plan.steps
        assert min_steps <= len(steps) <= max_steps
        assert [s.step_number for s in steps] == list(range(1, len(steps) + 1))
        assert all(isinstance(op, Add) for op in parse_instruction(steps[0].prompt).ops)
        assert all(s.step_name and s.instruction and s.auxiliary_text for s in steps)
        assert [s.auxiliary_text for s in steps] == [describe(scene) for scene in task.scenes]
        assert all(s.prompt in task.request for s in steps)
        assert task.final_scene == task.scenes[-1] != Scene.empty()


def test_ground_truth_scenes_follow_from_the_prompts() -> None:
    for task in TaskSampler(seed=4, synonym_rate=0.5).sample(30):
        scene = Scene.empty()
        for step, expected in zip(task.plan.steps, task.scenes, strict=True):
            scene = apply(parse_instruction(step.prompt), scene)
            assert scene == expected


def test_canonical_plan_renders_and_scores_ten_every_step() -> None:
    generator = TestbedGenerator(misrender_prob=1.0)
    for index, task in enumerate(TaskSampler(seed=5, synonym_rate=0.6).sample(25)):
        before = None
        for step, prompt, scene in zip(
            task.plan.steps, task.canonical_prompts, task.scenes, strict=True
        ):
            [after] = generator([make_request(prompt, before, seed=index)])
            score = judge.score(step.prompt, after, before)
            assert (score.semantics, score.quality) == (10.0, 10.0), (task.request, step)
            assert decode(after) == scene
            before = after


def test_raw_prompts_with_synonyms_misrender_exactly_where_they_have_unknown_words() -> None:
    generator = TestbedGenerator(misrender_prob=1.0)
    failed = 0
    for index, task in enumerate(TaskSampler(seed=6, synonym_rate=0.5).sample(25)):
        previous = Scene.empty()
        for step, scene in zip(task.plan.steps, task.scenes, strict=True):
            before = render(previous) if step.step_number > 1 else None
            [after] = generator([make_request(step.prompt, before, seed=index)])
            semantics = judge.score(step.prompt, after, before).semantics
            has_unknown = bool(parse_instruction(step.prompt).unknown)
            assert (semantics < 10.0) == has_unknown, step.prompt
            failed += has_unknown
            previous = scene
    assert failed > 10


def test_corpus_covers_the_vocabulary() -> None:
    texts = list(corpus(num_tasks=20))
    assert texts == list(corpus(num_tasks=20))
    words = {word for text in texts for word in text.lower().replace(";", " ").split()}
    assert set(FULL_LEXICON.words) <= words
    assert set(GRAMMAR_WORDS) <= words
    assert any(text.startswith("left ") and "; centre " in text for text in texts)
