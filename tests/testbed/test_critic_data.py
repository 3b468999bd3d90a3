"""Testbed critic records: labels agree with the exact judge and with the vocabulary gap."""

from __future__ import annotations

import numpy as np

from itk_rl.testbed import TaskSampler, TestbedGenerator, TestbedJudge, decode
from itk_rl.testbed.critic_data import critic_samples
from itk_rl.testbed.lexicon import CORE_LEXICON


def test_labels_follow_the_vocabulary_gap_and_steps_start_from_the_true_scene() -> None:
    tasks = TaskSampler(seed=3, synonym_rate=0.4).sample(20)
    samples = list(critic_samples(tasks, TestbedGenerator(), TestbedJudge()))
    assert len(samples) == sum(len(task.plan.steps) for task in tasks)
    labels = [sample.evaluation.success for sample in samples]
    assert 0 < sum(labels) < len(labels)  # both kinds present
    index = 0
    for task in tasks:
        for step_index, step in enumerate(task.plan.steps):
            sample = samples[index]
            index += 1
            # Core wording renders right at misrender_prob=1; a misrender needs unknown words.
            if CORE_LEXICON.is_core_text(step.prompt):
                assert sample.evaluation.success
            expected_before = task.scenes[step_index - 1] if step_index else None
            assert sample.text_to_image == (expected_before is None)
            if expected_before is None:
                assert (sample.origin_image == 255).all()
            else:
                assert decode(sample.origin_image) == expected_before
    assert all(np.isfinite(s.evaluation.semantics) for s in samples)
