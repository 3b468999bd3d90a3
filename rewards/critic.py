"""Critic GRPO rewards (DESIGN §1, "Rewards for critic GRPO"), the math in one tested place.

Per response of the critic to a `CriticSample`:

- format ∈ {0, 1}: the parser's `format_valid` — `<think>` precedes `<answer>`, the answer is
  strict JSON, `previous_step_success` a bool and `refine_prompt` a string. (The parser is a
  little stricter than that sentence: stray text outside the tags or a code fence around the
  JSON also makes it 0, because they were repaired.)
- accuracy ∈ {0, 1}: the predicted `previous_step_success` equals the label; 0 when no verdict
  could be read.
- step-wise (sem, qual) ∈ [0, 1]²: only where the label says the step failed, the refined
  prompt is re-rendered from the same before-image and judged against the *original* prompt;
  the gain over the recorded scores, mapped from [−10, 10] to [0, 1]. A successful label gives
  0.5 each and needs no render.

The render and the judge call happen elsewhere (generator pool, judge actors); these functions
only do arithmetic on their results, so they are cheap, pure and run anywhere (STYLE 11, 12).
A render or judge call that fails for good is not papered over with 0.5 here: the driver drops
that sample from the update and counts it (`stepwise_reward` raises if asked without a score).

A reward is any callable `RewardInputs -> RewardOutput` (`itk_rl.interfaces.reward`). A recipe
picks one with Hydra:

    reward:
      _target_: itk_rl.rewards.critic.CriticReward
      alpha: 0.2

and a user's own reward is a function with the same signature in their own module, named the
same way with `_partial_: true`. Whether refinements are re-rendered at all is the reward's to
say (`itk_rl.interfaces.reward.needs_rerender`), so no recipe can skip the renders a reward reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from itk_rl.formats.critic import CriticVerdict
from itk_rl.formats.envelope import ParseResult
from itk_rl.formats.records import CriticSample
from itk_rl.formats.score import JudgeScore
from itk_rl.interfaces.reward import RewardInputs, RewardOutput

SCORE_MAX = 10.0  # judge scores are on 0–10


def format_reward(parsed: ParseResult[CriticVerdict]) -> float:
    """1.0 when the response has the strict format, else 0.0 (see the module docstring)."""
    return 1.0 if parsed.format_valid else 0.0


def accuracy_reward(parsed: ParseResult[CriticVerdict], sample: CriticSample) -> float:
    """1.0 when the verdict matches the label; a verdict that could not be read scores 0.0.

    A verdict read after repairs still counts here: the format reward already charges for the
    repairs, and the verdict is what the critic meant.
    """
    if parsed.value is None:
        return 0.0
    return 1.0 if parsed.value.success == sample.evaluation.success else 0.0


def needs_render(sample: CriticSample) -> bool:
    """Whether the step-wise reward needs the refined prompt rendered and judged: only where
    the label says the step failed."""
    return not sample.evaluation.success


def refined_prompt_to_render(sample: CriticSample, parsed: ParseResult[CriticVerdict]) -> str:
    """The prompt to re-render: the critic's `refine_prompt`, or the prompt the attempt used
    (`sample.rewritten_prompt`) when the refinement is empty or the verdict unreadable.

    The refinement is used whatever the verdict says (DESIGN: "the refined prompt, or if empty,
    the prompt used before"); a critic that wrongly says "success" writes none, so it is
    rewarded for re-rolling the same prompt, which earns about 0.5.
    """
    refined = parsed.value.refine_prompt.strip() if parsed.value is not None else ""
    return refined or sample.rewritten_prompt


def stepwise_reward(sample: CriticSample, rerender: JudgeScore | None) -> tuple[float, float]:
    """(sem, qual) ∈ [0, 1]²: the re-render's gain over the recorded scores.

        sem  = ((SC_new − SC_old) / 10 + 1) / 2
        qual = ((PQ_new − PQ_old) / 10 + 1) / 2

    with SC_old, PQ_old = `sample.evaluation.semantics` / `.quality`. No change gives 0.5,
    10 points better 1.0, 10 points worse 0.0. A successful label gives (0.5, 0.5) and ignores
    `rerender`. Raises ValueError for a failed label without a score (the caller must render,
    or drop the sample), and for scores outside 0–10.
    """
    if sample.evaluation.success:
        return 0.5, 0.5
    if rerender is None:
        raise ValueError(
            "stepwise_reward: the label says the step failed, so the refined prompt's re-render "
            f"must be judged first (rerender is None; origin_prompt {sample.origin_prompt!r}); "
            "drop the sample if rendering or judging failed"
        )
    for name in ("semantics", "quality"):
        value = getattr(rerender, name)
        if not (math.isfinite(value) and 0.0 <= value <= SCORE_MAX):
            raise ValueError(f"stepwise_reward: rerender.{name} must be within 0–10, got {value}")
    sem = ((rerender.semantics - sample.evaluation.semantics) / SCORE_MAX + 1.0) / 2.0
    qual = ((rerender.quality - sample.evaluation.quality) / SCORE_MAX + 1.0) / 2.0
    return sem, qual


@dataclass(frozen=True)
class CriticReward:
    """The paper's critic reward, R = w·R_format + (1 − w)·(α·R_acc + (1 − α)·R_step).

    R_step = s·sem + (1 − s)·qual, with w = `format_weight`, α = `alpha`, s = `sem_share`. At
    the defaults (w = 0.5, α = 0.2, s = 0.75):

        R = 0.5·format + 0.5·(0.2·acc + 0.8·(0.75·sem + 0.25·qual))
          = 0.5·format + 0.5·(0.2·acc + 0.6·sem + 0.2·qual)

    which is DESIGN §1's "overall" exactly. Each weight is in [0, 1], so R is in [0, 1].

    Verdict-only variant: `alpha=1` gives R = w·format + (1 − w)·acc; then no render is
    needed (`needs_rerender` is False, `rerender` may be None for any label) and `sem_share`
    does not matter. (DESIGN §5's prototype reward 0.2·format + verdict is
    `format_weight=1/6, alpha=1` scaled by 1.2, which group-normalised advantages do not see.)

    A class rather than a function because whether it reads re-renders depends on `alpha`: the
    GRPO driver reads `needs_rerender` and renders exactly when the reward needs it.

    Components: format, accuracy, sem, qual, step (R_step); sem/qual/step are left out when
    alpha = 1.
    """

    format_weight: float = 0.5
    alpha: float = 0.2
    sem_share: float = 0.75

    def __post_init__(self) -> None:
        for name in ("format_weight", "alpha", "sem_share"):
            weight = getattr(self, name)
            if not 0.0 <= weight <= 1.0:
                raise ValueError(f"CriticReward: {name} must be within [0, 1], got {weight}")

    @property
    def needs_rerender(self) -> bool:
        """Whether the step-wise term (weight 1 − alpha) reads the re-render of a failed step."""
        return self.alpha < 1.0

    def __call__(self, inputs: RewardInputs) -> RewardOutput:
        fmt = format_reward(inputs.parsed)
        acc = accuracy_reward(inputs.parsed, inputs.sample)
        components = {"format": fmt, "accuracy": acc}
        task = self.alpha * acc
        if self.needs_rerender:
            sem, qual = stepwise_reward(inputs.sample, inputs.rerender)
            step = self.sem_share * sem + (1.0 - self.sem_share) * qual
            components |= {"sem": sem, "qual": qual, "step": step}
            task += (1.0 - self.alpha) * step
        total = self.format_weight * fmt + (1.0 - self.format_weight) * task
        return RewardOutput(total, components)
