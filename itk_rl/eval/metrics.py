"""The evaluation's outcomes and metrics: per-attempt/step/task outcomes, the metric ratios,
a task-level bootstrap for their confidence intervals, and the per-system summary.

Definitions of every metric are in `itk_rl.eval.testbed`'s module docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

_REVIEWED = ("accepted", "rejected", "unreadable", "failed")
"""Attempt reviews that count as critic calls (not `unreviewed`)."""

# --- outcomes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptOutcome:
    """One attempt: its judge score O, the judge's label, what the critic said of it
    (unreviewed, accepted, rejected, unreadable, failed), and whether the critic's reasoning
    described the after-image as it is (False where no critic was asked)."""

    score: float | None
    label: bool
    review: str
    reasoning_right: bool


@dataclass(frozen=True)
class StepOutcome:
    attempts: tuple[AttemptOutcome, ...]
    final: int | None
    scene_right: bool
    image: str | None = None
    """The final image, relative to the evaluation folder."""

    @property
    def final_score(self) -> float:
        chosen = self.attempts[self.final].score if self.final is not None else None
        return chosen or 0.0

    @property
    def first_score(self) -> float:
        return (self.attempts[0].score or 0.0) if self.attempts else 0.0


@dataclass(frozen=True)
class TaskOutcome:
    """One task's run: per plan step its outcome (missing steps of a stopped run are absent)."""

    request: str
    num_steps: int
    steps: tuple[StepOutcome, ...]
    run: str
    """The run folder, relative to the evaluation folder."""
    error: str | None = None


def _critic_calls(task: TaskOutcome) -> list[AttemptOutcome]:
    return [a for s in task.steps for a in s.attempts if a.review in _REVIEWED]


def _refinements(task: TaskOutcome) -> list[tuple[AttemptOutcome, AttemptOutcome]]:
    """(rejected attempt, the attempt after it) pairs."""
    return [
        (s.attempts[i - 1], s.attempts[i])
        for s in task.steps
        for i in range(1, len(s.attempts))
        if s.attempts[i - 1].review == "rejected"
    ]


def _raised(pair: tuple[AttemptOutcome, AttemptOutcome]) -> bool:
    before, after = pair
    return after.score is not None and after.score > (before.score or 0.0)


Ratio = tuple[Callable[[TaskOutcome], float], Callable[[TaskOutcome], float]]
METRICS: dict[str, Ratio] = {
    "final_score": (lambda t: sum(s.final_score for s in t.steps), lambda t: t.num_steps),
    "first_score": (lambda t: sum(s.first_score for s in t.steps), lambda t: t.num_steps),
    "scene_accuracy": (lambda t: sum(s.scene_right for s in t.steps), lambda t: t.num_steps),
    "task_accuracy": (
        lambda t: float(len(t.steps) == t.num_steps and t.steps[-1].scene_right),
        lambda t: 1.0,
    ),
    "verdict_accuracy": (
        lambda t: sum(
            a.review in ("accepted", "rejected") and (a.review == "accepted") == a.label
            for a in _critic_calls(t)
        ),
        lambda t: len(_critic_calls(t)),
    ),
    "reasoning_accuracy": (
        lambda t: sum(a.reasoning_right for a in _critic_calls(t)),
        lambda t: len(_critic_calls(t)),
    ),
    "improvement_rate": (
        lambda t: sum(map(_raised, _refinements(t))),
        lambda t: len(_refinements(t)),
    ),
    "steps_improved": (
        lambda t: sum(s.final_score > s.first_score for s in t.steps),
        lambda t: t.num_steps,
    ),
}
DELTA_METRICS = ("final_score", "scene_accuracy")
COMPARISON_METRICS = (
    "final_score",
    "scene_accuracy",
    "verdict_accuracy",
    "reasoning_accuracy",
    "improvement_rate",
)
"""Paired differences between two critics (`SystemResult.comparison`): every metric the two
share, where the deltas against the critic-less baseline have only the first two."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95 % CI; `n` is the denominator (steps, calls, …)."""

    value: float | None
    low: float | None
    high: float | None
    n: float


@dataclass(frozen=True)
class SystemResult:
    name: str
    description: str
    metrics: dict[str, Estimate]
    counts: dict[str, int]
    tasks: tuple[TaskOutcome, ...]
    deltas: dict[str, Estimate] = field(default_factory=dict)
    compared_with: str | None = None
    comparison: dict[str, Estimate] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalResult:
    """Every system on the same held-out tasks; `settings` says how they were run."""

    systems: tuple[SystemResult, ...]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "systems": [asdict(s) for s in self.systems]}

    def figures(self) -> dict[str, Any]:
        """The headline numbers, per system: [value, low, high] per metric, and the counts."""

        def triple(e: Estimate) -> list[float | None]:
            return [None if v is None else round(v, 4) for v in (e.value, e.low, e.high)]

        return {
            s.name: {
                **{k: triple(e) for k, e in s.metrics.items()},
                **{f"delta/{k}": triple(e) for k, e in s.deltas.items()},
                **{f"vs_{s.compared_with}/{k}": triple(e) for k, e in s.comparison.items()},
                "counts": s.counts,
            }
            for s in self.systems
        }


# --- statistics --------------------------------------------------------------------------------


def task_resamples(num_tasks: int, resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """[resamples, num_tasks] task indices drawn with replacement: the bootstrap of
    `evaluate_testbed` with that `seed` (so a later analysis can redraw the same resamples)."""
    return np.random.default_rng([seed, 1]).integers(num_tasks, size=(resamples, num_tasks))


def metric_arrays(outcomes: Sequence[TaskOutcome], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The numerator and denominator of `metric` (`METRICS`) per task: [tasks] each."""
    num_fn, den_fn = METRICS[metric]
    return (
        np.array([num_fn(t) for t in outcomes], float),
        np.array([den_fn(t) for t in outcomes], float),
    )


def bootstrap_ratio(
    num: np.ndarray, den: np.ndarray, resamples: np.ndarray, base: tuple | None = None
) -> Estimate:
    """sum(num)/sum(den) over tasks, with a percentile CI from `resamples` ([R, tasks] task
    indices). With `base` = (num, den) of another system, the paired difference instead.

    The interval is widened to include the point estimate where a skewed resample distribution
    would leave it outside (possible for ratios on few tasks).
    """

    def ratio(n: np.ndarray, d: np.ndarray, axis: int | None = None) -> np.ndarray:
        total = d.sum(axis=axis)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, n.sum(axis=axis) / np.where(total > 0, total, 1), np.nan)

    point, draws = ratio(num, den), ratio(num[resamples], den[resamples], axis=1)
    if base is not None:
        point = point - ratio(*base)
        draws = draws - ratio(base[0][resamples], base[1][resamples], axis=1)
    if np.isnan(point):
        return Estimate(None, None, None, float(den.sum()))
    value = float(point)
    if np.isnan(draws).all():  # every resample missed the tasks with a denominator
        return Estimate(value, value, value, float(den.sum()))
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return Estimate(value, min(float(low), value), max(float(high), value), float(den.sum()))


def summarise(
    name: str,
    description: str,
    tasks: Sequence[TaskOutcome],
    resamples: np.ndarray,
    baseline: Sequence[TaskOutcome] | None = None,
    compared_with: tuple[str, Sequence[TaskOutcome]] | None = None,
) -> SystemResult:
    """Metrics with CIs, counts, and paired deltas against `baseline` (same tasks, in order);
    with `compared_with` = (name, outcomes) of another system, the paired differences of
    `COMPARISON_METRICS` against it too."""

    metrics = {m: bootstrap_ratio(*metric_arrays(tasks, m), resamples) for m in METRICS}
    deltas = {}
    if baseline is not None:
        for m in DELTA_METRICS:
            deltas[m] = bootstrap_ratio(
                *metric_arrays(tasks, m), resamples, metric_arrays(baseline, m)
            )
    comparison = {}
    if compared_with is not None:
        other = compared_with[1]
        for m in COMPARISON_METRICS:
            comparison[m] = bootstrap_ratio(
                *metric_arrays(tasks, m), resamples, metric_arrays(other, m)
            )
    calls = [a for t in tasks for a in _critic_calls(t)]
    counts = {
        "tasks": len(tasks),
        "steps": sum(t.num_steps for t in tasks),
        "attempts": sum(len(s.attempts) for t in tasks for s in t.steps),
        "critic_calls": len(calls),
        "parse_failures": sum(a.review == "unreadable" for a in calls),
        "critic_errors": sum(a.review == "failed" for a in calls),
        "refinements": sum(len(_refinements(t)) for t in tasks),
        "stopped_runs": sum(t.error is not None for t in tasks),
    }
    return SystemResult(
        name,
        description,
        metrics,
        counts,
        tuple(tasks),
        deltas,
        compared_with[0] if compared_with is not None else None,
        comparison,
    )
