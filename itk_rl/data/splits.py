"""From judged teacher trajectories to the three datasets: Critic-SFT, Critic-RL, Planner-SFT.

Trajectories are first assigned to `train` or `eval` by id (a seeded hash, so the same id
always lands on the same side and a larger build extends a smaller one); each side is then
built on its own, so no trajectory feeds both.

Critic records (`critic_candidates`): every judged attempt of a step the filters keep
(`itk_rl.data.filters`), as a `CriticSample` — origin prompt = the planner's prompt for the
step, rewritten prompt = the prompt the attempt used, origin image = the image before the step
(a white canvas of the render's size for text-to-image), edited image = the attempt's image,
evaluation = the judge's SC and PQ and `success = O ≥ success_threshold`, text_to_image = the
step had no before-image (step 1 of a request without images: `step_befores`).

Critic-SFT targets: `format_critic_answer(CriticVerdict(success, refine_prompt, think))`.
- success: `refine_prompt` is "".
- failure: `refine_prompt` is the prompt of the first *later* attempt of the same step that
  the judge scores a success — the teacher's successful refinement. A failed attempt with no
  successful refinement has no target worth learning and is left out of Critic-SFT (counted).
- `think` comes from the recipe's `think` function: `itk_rl.testbed.critic_data.scene_think`
  (the testbed: the whole after-scene described, which makes the critic look) or
  `teacher_think` (the teacher critic's own reasoning).

Planner-SFT pairs (`planner_pairs`) come from every finished trajectory, unfiltered.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from itk_rl.data.filters import (
    RL,
    SFT,
    FilterConfig,
    balance_labels,
    balance_labels_within,
    classify_step,
    enforce_ratio,
    is_success,
)
from itk_rl.data.planner_records import PlannerPair
from itk_rl.data.teacher import step_befores
from itk_rl.formats import (
    Attempt,
    CriticSample,
    CriticVerdict,
    Evaluation,
    Plan,
    Trajectory,
    format_critic_answer,
    format_planner_answer,
    white_canvas,
)

ThinkFn = Callable[[Attempt, np.ndarray, np.ndarray], str]
"""`(attempt, before image, after image) -> think text` of a Critic-SFT target."""

TRAIN, EVAL = "train", "eval"


def teacher_think(attempt: Attempt, before: np.ndarray, after: np.ndarray) -> str:
    """The teacher critic's own reasoning for the attempt ("" when it gave none)."""
    return attempt.critic.think if attempt.critic is not None else ""


def id_seed(seed: int, trajectory_id: str) -> list[int]:
    """Seed material for one trajectory's random choices: independent of every other id."""
    return [seed, zlib.crc32(trajectory_id.encode())]


def side_of(trajectory_id: str, eval_fraction: float, seed: int) -> str:
    """`eval` for about `eval_fraction` of ids, by a seeded hash of the id."""
    draw = np.random.default_rng([*id_seed(seed, trajectory_id), 1]).random()
    return EVAL if draw < eval_fraction else TRAIN


@dataclass(frozen=True, eq=False)
class CriticCandidate:
    """One judged attempt of a kept step: its record, its bin, its SFT target (None: none)."""

    trajectory_id: str
    step: int
    attempt: int
    bin: str
    sample: CriticSample
    target: str | None

    @property
    def label(self) -> bool:
        return self.sample.evaluation.success


@dataclass(frozen=True)
class StepOutcome:
    """A step's attempt scores (overall, in order) and the filters' bin for it."""

    trajectory_id: str
    step: int
    scores: tuple[float, ...]
    bin: str


def critic_candidates(
    trajectory_id: str, trajectory: Trajectory, config: FilterConfig, think: ThinkFn
) -> tuple[list[StepOutcome], list[CriticCandidate]]:
    """Every step's outcome, and the critic records of the steps kept (rules in the docstring)."""
    outcomes, candidates = [], []
    for record, before in zip(trajectory.steps, step_befores(trajectory), strict=True):
        scored = [
            (i, a)
            for i, a in enumerate(record.attempts)
            if a.image is not None and a.score is not None
        ]
        if not scored:
            continue
        scores = tuple(a.score.overall for _, a in scored)
        bin_ = classify_step(scores, config)
        number = record.step.step_number
        outcomes.append(StepOutcome(trajectory_id, number, scores, bin_))
        if bin_ not in (SFT, RL):
            continue
        labels = [is_success(score, config) for score in scores]
        for k, (i, attempt) in enumerate(scored):
            after = attempt.image
            text_to_image = before is None
            origin = white_canvas(*after.shape[:2]) if text_to_image else before
            score = attempt.score
            evaluation = Evaluation(score.semantics, score.quality, labels[k])
            sample = CriticSample(
                record.step.prompt, attempt.prompt, origin, after, evaluation, text_to_image
            )
            target = None
            if bin_ == SFT:
                refine = (
                    "" if labels[k] else _successful_refinement(scored[k + 1 :], labels[k + 1 :])
                )
                if refine is not None:
                    verdict = CriticVerdict(labels[k], refine, think(attempt, origin, after))
                    target = format_critic_answer(verdict)
            candidates.append(CriticCandidate(trajectory_id, number, i + 1, bin_, sample, target))
    return outcomes, candidates


def _successful_refinement(
    later: Sequence[tuple[int, Attempt]], labels: Sequence[bool]
) -> str | None:
    for (_, attempt), success in zip(later, labels, strict=True):
        if success:
            return attempt.prompt
    return None


def planner_pairs(
    trajectory_id: str, trajectory: Trajectory, cuts: int, seed: int
) -> list[PlannerPair]:
    """`cuts` distinct random truncations (all of them if the plan is shorter), in order.

    A cut at k keeps the request and steps 1..k (text and final image) as input; the target is
    the planner's answer for steps k+1..n with the teacher planner's reasoning.
    """
    plan = trajectory.plan
    if plan is None or not plan.steps:
        return []
    if len(trajectory.steps) != len(plan.steps):
        raise ValueError(
            f"trajectory {trajectory_id}: {len(trajectory.steps)} step records for a plan of "
            f"{len(plan.steps)} steps (only finished trajectories make planner pairs)"
        )
    n = len(plan.steps)
    rng = np.random.default_rng([*id_seed(seed, trajectory_id), 2])
    chosen = sorted(int(k) for k in rng.choice(n, size=min(cuts, n), replace=False))
    think = trajectory.planner.think
    pairs = []
    for k in chosen:
        done = trajectory.steps[:k]
        pairs.append(
            PlannerPair(
                id=trajectory_id,
                cut=k,
                num_steps=n,
                request=trajectory.request.text,
                request_images=trajectory.request.images,
                prefix_texts=tuple(r.step.display_text for r in done),
                prefix_images=tuple(r.final.image for r in done),
                target=format_planner_answer(Plan(plan.steps[k:]), think),
            )
        )
    return pairs


@dataclass(frozen=True)
class SplitConfig:
    """How records become datasets (recipe `splits.*`)."""

    sft_to_rl_ratio: float = 2.0
    balance: str = "down"
    balance_per_attempt: bool = False
    eval_fraction: float = 0.1
    truncations_per_trajectory: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"splits.eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.truncations_per_trajectory < 1:
            raise ValueError(
                "splits.truncations_per_trajectory must be >= 1, got "
                f"{self.truncations_per_trajectory}"
            )
        if not isinstance(self.balance_per_attempt, bool):  # a YAML "false" string is truthy
            raise ValueError(
                "splits.balance_per_attempt must be true or false, got "
                f"{self.balance_per_attempt!r}"
            )


@dataclass
class Side:
    """One side's datasets (train or eval) and what happened on the way."""

    critic_sft: list[CriticCandidate] = field(default_factory=list)
    critic_rl: list[CriticCandidate] = field(default_factory=list)
    planner_sft: list[PlannerPair] = field(default_factory=list)
    outcomes: list[StepOutcome] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)


def _labels(items: Sequence[CriticCandidate]) -> dict[str, int]:
    yes = sum(c.label for c in items)
    return {"rows": len(items), "true": yes, "false": len(items) - yes}


def _balance(
    candidates: Sequence[CriticCandidate], splits: SplitConfig, rng: np.random.Generator
) -> tuple[list[CriticCandidate], list[bool]]:
    labels = [c.label for c in candidates]
    if splits.balance_per_attempt:
        attempts = [c.attempt for c in candidates]
        return balance_labels_within(candidates, labels, attempts, rng, splits.balance)
    return balance_labels(candidates, labels, rng, splits.balance)


def build_side(
    name: str,
    trajectories: Sequence[tuple[str, Trajectory]],
    filters: FilterConfig,
    splits: SplitConfig,
    think: ThinkFn,
) -> Side:
    """Filter, balance and split one side's trajectories (sorted by id for determinism)."""
    side = Side()
    sft: list[CriticCandidate] = []
    rl: list[CriticCandidate] = []
    without_target = 0
    for trajectory_id, trajectory in sorted(trajectories, key=lambda item: item[0]):
        outcomes, candidates = critic_candidates(trajectory_id, trajectory, filters, think)
        side.outcomes += outcomes
        for candidate in candidates:
            if candidate.bin == RL:
                rl.append(candidate)
            elif candidate.target is not None:
                sft.append(candidate)
            else:
                without_target += 1
        cuts = splits.truncations_per_trajectory
        side.planner_sft += planner_pairs(trajectory_id, trajectory, cuts, splits.seed)
    rng = np.random.default_rng([splits.seed, zlib.crc32(name.encode())])
    before = {"critic_sft": _labels(sft), "critic_rl": _labels(rl)}
    sft_items, sft_labels = _balance(sft, splits, rng)
    rl_items, rl_labels = _balance(rl, splits, rng)
    (side.critic_sft, _), (side.critic_rl, _) = enforce_ratio(
        sft_items, sft_labels, rl_items, rl_labels, splits.sft_to_rl_ratio, rng
    )
    bins: dict[str, int] = {}
    for outcome in side.outcomes:
        bins[outcome.bin] = bins.get(outcome.bin, 0) + 1
    side.counts = {
        "trajectories": len(trajectories),
        "steps_by_bin": dict(sorted(bins.items())),
        "candidates_before_balancing": before,
        "sft_failures_without_successful_refinement": without_target,
        "critic_sft": _labels(side.critic_sft),
        "critic_rl": _labels(side.critic_rl),
        "planner_sft": {"rows": len(side.planner_sft)},
    }
    return side
