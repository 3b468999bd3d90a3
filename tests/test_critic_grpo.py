"""Pieces of one GRPO step without actors: dynamic sampling's draw size and group selection
(the whole step runs in test_train.py, its rewards phase in test_critic_grpo_rewards.py)."""

from __future__ import annotations

import pytest

from itk_rl.critic_grpo import records_per_step, select_groups
from itk_rl.critic_grpo_rewards import Response
from itk_rl.formats import parse_critic_output
from itk_rl.interfaces.engine import Completion
from itk_rl.interfaces.reward import RewardOutput


def _group(record: int, rewards: list[float | None]) -> list[Response]:
    """A record's responses with these rewards (None: every render/judge try failed)."""
    responses = [Response(record, Completion("x"), parse_critic_output("x")) for _ in rewards]
    for response, reward in zip(responses, rewards, strict=True):
        response.reward = None if reward is None else RewardOutput(reward)
        response.render_failed = reward is None
    return responses


# Record 0 varies; 1 is flat; 2 varies among the responses that got a reward; 3 has one reward
# left (no baseline: flat); 4 got none; 5 and 6 vary.
GROUPS = [[0.0, 1.0], [0.5, 0.5], [0.2, None, 0.7], [None, 0.3], [None, None], [1.0, 0.0], [0, 1]]
RESPONSES = [r for record, rewards in enumerate(GROUPS) for r in _group(record, rewards)]


@pytest.mark.parametrize(
    ("train_groups", "trained", "unused"),
    [(2, [0, 2], 2), (3, [0, 2, 5], 1), (4, [0, 2, 5, 6], 0), (8, [0, 2, 5, 6], 0)],
)
def test_dynamic_sampling_trains_the_first_groups_whose_rewards_vary_in_record_order(
    train_groups: int, trained: list[int], unused: int
) -> None:
    kept, metrics = select_groups(len(GROUPS), RESPONSES, train_groups)
    assert sorted({r.record for r in kept}) == trained
    assert kept == [r for r in RESPONSES if r.record in trained]  # every response of each group
    assert metrics == {
        "data/groups_drawn": 7.0,
        "data/groups_with_signal": 4.0,
        "data/groups_filtered": 3.0,  # flat, one reward left, none rewarded
        "data/groups_unused": float(unused),
    }


def test_without_dynamic_sampling_every_group_is_kept_and_counted() -> None:
    kept, metrics = select_groups(len(GROUPS), RESPONSES, None)
    assert kept == RESPONSES
    assert (metrics["data/groups_with_signal"], metrics["data/groups_unused"]) == (4.0, 0.0)


def test_a_draw_with_no_reward_at_all_keeps_nothing_and_filters_every_group() -> None:
    responses = _group(0, [None]) + _group(1, [None, None])
    kept, metrics = select_groups(2, responses, 2)
    assert kept == [] and metrics["data/groups_filtered"] == 2.0


@pytest.mark.parametrize(
    ("batch_size", "oversample", "drawn"),
    [(4, 1.0, 4), (4, 2.0, 8), (10, 1.1, 11), (16, 1.25, 20), (3, 1.5, 5), (2, 1.01, 3)],
)
def test_records_drawn_per_step_are_the_oversampled_batch_rounded_up(
    batch_size: int, oversample: float, drawn: int
) -> None:
    assert records_per_step(batch_size, oversample) == drawn
