"""Whether a reward reads re-renders is the reward's to declare (`needs_rerender`)."""

from __future__ import annotations

from functools import partial

from itk_rl.interfaces.reward import RewardInputs, RewardOutput, needs_rerender
from itk_rl.rewards.critic import CriticReward


def verdict_reward(inputs: RewardInputs, *, weight: float) -> RewardOutput:
    """A user's reward that never looks at `inputs.rerender`, and says so below."""
    success = inputs.parsed.value is not None and inputs.parsed.value.success
    return RewardOutput(weight * (success == inputs.sample.evaluation.success))


verdict_reward.needs_rerender = False  # type: ignore[attr-defined]


def length_reward(inputs: RewardInputs) -> RewardOutput:
    return RewardOutput(float(len(inputs.response)))


def test_the_critic_reward_needs_rerenders_unless_it_is_verdict_only() -> None:
    assert needs_rerender(CriticReward())
    assert needs_rerender(CriticReward(alpha=0.99))
    assert not needs_rerender(CriticReward(alpha=1.0))


def test_a_function_declares_it_on_itself_and_one_that_declares_nothing_gets_rerenders() -> None:
    # Hydra's `_partial_: true` gives a functools.partial: the declaration is on its function.
    assert not needs_rerender(partial(verdict_reward, weight=1.0))
    assert not needs_rerender(verdict_reward)
    assert needs_rerender(length_reward)
    assert needs_rerender(partial(length_reward))
