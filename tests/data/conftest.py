"""Hand-made trajectories for the data tests: steps with chosen attempt scores."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from itk_rl.formats import (
    Attempt,
    JudgeScore,
    ParseResult,
    Plan,
    Request,
    Step,
    StepRecord,
    Trajectory,
)


def _image(value: int) -> np.ndarray:
    return np.full((6, 6, 3), value % 256, dtype=np.uint8)


def make_trajectory(*steps: list[float]) -> Trajectory:
    """One step per list, one attempt per overall score O (SC = O²/10, PQ = 10, so
    O = sqrt(SC·PQ)); attempt a > 0 of step s uses the prompt "prompt s refined a"; the last
    attempt is the kept one; the planner reasoned "plan it"."""
    plan = Plan(tuple(Step(i + 1, f"s{i}", f"do {i}", f"prompt {i}") for i in range(len(steps))))
    records = []
    for s, overall in enumerate(steps):
        attempts = [
            Attempt(
                prompt=f"prompt {s}" if a == 0 else f"prompt {s} refined {a}",
                seed=a,
                image=_image(10 * s + a + 1),
                score=JudgeScore(o * o / 10.0, 10.0),
            )
            for a, o in enumerate(overall)
        ]
        records.append(StepRecord(plan.steps[s], tuple(attempts), len(attempts) - 1))
    return Trajectory(Request("a request"), ParseResult(plan, True, think="plan it"), records)


def seen_think(attempt: Attempt, before: np.ndarray, after: np.ndarray) -> str:
    return f"seen {attempt.prompt}"


@pytest.fixture
def made_trajectory() -> Callable[..., Trajectory]:
    """`make_trajectory`, as a fixture (test modules cannot import each other here)."""
    return make_trajectory


@pytest.fixture
def think_fn() -> Callable[[Attempt, np.ndarray, np.ndarray], str]:
    """A think function that names the attempt's prompt."""
    return seen_think
