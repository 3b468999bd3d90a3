"""`run_teachers` when a teacher raises or a judge fails: the prompt is recorded as failed with
its kind and reason, the others are written, and `retry_failed` runs the failed ones again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from itk_rl.data.prompts import Prompt
from itk_rl.data.teacher import JUDGE, TEACHER_ERROR, TrajectoryStore, run_teachers
from itk_rl.formats import JudgeScore, Trajectory


def _done(result: Any = None, error: BaseException | None = None) -> Future:
    future: Future = Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return future


class StandInTeachers:
    """Answers each prompt with `trajectory`, except those in `raising`, whose call raises."""

    def __init__(self, trajectory: Trajectory, raising: set[str]) -> None:
        self.trajectory, self.raising = trajectory, raising

    def submit(self, prompts: Sequence[Prompt]) -> list[Future]:
        return [
            _done(error=RuntimeError(f"actor died on {p.text}"))
            if p.id in self.raising
            else _done(self.trajectory.to_row())
            for p in prompts
        ]


class StandInJudges:
    """Scores every attempt 10/10, except that attempts rendered as `failing_image` fail."""

    def __init__(self, failing_image: np.ndarray | None) -> None:
        self.failing_image = failing_image

    def submit(self, instruction: str, after: np.ndarray, before: np.ndarray | None) -> Future:
        if self.failing_image is not None and np.array_equal(after, self.failing_image):
            return _done(error=TimeoutError("judge timed out"))
        return _done(JudgeScore(10.0, 10.0))


def _prompts(*ids: str) -> list[Prompt]:
    return [
        Prompt(i, f"request {i}", "shapes", "one", "template", seed=n) for n, i in enumerate(ids)
    ]


def _run(
    store: TrajectoryStore,
    trajectory: Trajectory,
    prompts: list[Prompt],
    raising: set[str],
    judge_fails: bool,
    retry_failed: bool = False,
    log: Callable[[str], None] = lambda line: None,
):
    failing = trajectory.steps[1].attempts[0].image if judge_fails else None
    return run_teachers(
        prompts,
        store,
        StandInTeachers(trajectory, raising),  # type: ignore[arg-type]
        StandInJudges(failing),  # type: ignore[arg-type]
        retry_failed=retry_failed,
        log=log,
    )


def test_failures_are_recorded_and_retried_on_request(tmp_path: Path, made_trajectory) -> None:
    trajectory = made_trajectory([10.0], [5.0, 10.0])
    store = TrajectoryStore(tmp_path)
    prompts = _prompts("000000", "000001")
    lines: list[str] = []

    report = _run(store, trajectory, prompts, {"000000"}, judge_fails=True, log=lines.append)
    # The teacher of 000000 raised; 000001's step 2 attempt 1 could not be judged.
    assert report.failed == {"000000": TEACHER_ERROR, "000001": JUDGE}
    assert report.finished == []
    raised = store.failure("000000")
    assert raised is not None and "actor died on request 000000" in raised["message"]
    unjudged = store.failure("000001")
    assert unjudged is not None and unjudged["kind"] == JUDGE
    assert "step 2 attempt 1" in unjudged["message"] and "timed out" in unjudged["message"]
    assert any("000000: teacher_error" in line for line in lines)

    # A plain rerun skips them: they are done (as failures).
    again = _run(store, trajectory, prompts, set(), judge_fails=False)
    assert again.skipped == 2 and not again.finished and not again.failed

    # retry_failed runs them again; with healthy teachers and judges both are written.
    retried = _run(store, trajectory, prompts, set(), judge_fails=False, retry_failed=True)
    assert sorted(retried.finished) == ["000000", "000001"] and not retried.failed
    for prompt_id in ("000000", "000001"):
        assert store.failure(prompt_id) is None
        written = store.load(prompt_id)
        assert [len(r.attempts) for r in written.steps] == [1, 2]
        assert all(a.score == JudgeScore(10.0, 10.0) for r in written.steps for a in r.attempts)
