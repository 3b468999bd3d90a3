"""What a critic reward reads and returns: any callable `RewardInputs -> RewardOutput` is one.

The paper's reward is `itk_rl.rewards.critic.CriticReward`; a user's own is a function with this
signature in their own module, named in the recipe's `reward._target_` (with `_partial_: true`).
Whether a GRPO step re-renders refinements is the reward's to say (`needs_rerender`), not a
recipe key of its own: a recipe that skipped the renders its reward reads would fail every step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from itk_rl.formats.critic import CriticVerdict
from itk_rl.formats.envelope import ParseResult
from itk_rl.formats.records import CriticSample
from itk_rl.formats.score import JudgeScore


@dataclass(frozen=True, eq=False)
class RewardInputs:
    """Everything a critic reward may look at for one response.

    `rerender` is the judge's score of the refined prompt's re-render, against the sample's
    original prompt; None when nothing was rendered (the label says success, or the reward
    does not read it: `needs_rerender`).
    """

    sample: CriticSample
    response: str
    parsed: ParseResult[CriticVerdict]
    rerender: JudgeScore | None = None


@dataclass(frozen=True)
class RewardOutput:
    """The reward used for the advantage (`total`) and its named parts, logged one by one."""

    total: float
    components: dict[str, float] = field(default_factory=dict)


RewardFn = Callable[[RewardInputs], RewardOutput]


def needs_rerender(reward_fn: RewardFn) -> bool:
    """Whether `reward_fn` reads `RewardInputs.rerender` for a failed step, so the step must
    re-render the critic's refinement and judge it first.

    A reward declares it with a `needs_rerender` attribute (`CriticReward`: not at alpha = 1;
    a user's function named with `_partial_`: on the function itself). One that declares
    nothing gets its re-renders: a render too many costs time, one too few fails every step.
    """
    declared = reward_fn.func if isinstance(reward_fn, partial) else reward_fn
    return bool(getattr(declared, "needs_rerender", True))
