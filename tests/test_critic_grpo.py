"""Pieces of one GRPO step that need no cluster (the whole step runs in test_train.py)."""

from __future__ import annotations

from itk_rl.critic_grpo import render_seed_for
from itk_rl.rollout.generator import RenderRequest
from itk_rl.testbed import TestbedGenerator
from itk_rl.testbed.render import unexplained_pixels


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
        RenderRequest("draw a large red circle on the left", seed=render_seed_for(0, 1, record))
        for record in range(200)
    ]
    smudged = sum(unexplained_pixels(image) > 0 for image in generator(requests))
    assert 20 <= smudged <= 60  # 200 draws at 0.2: 40 expected, 20–60 is beyond 3.5 sigma
