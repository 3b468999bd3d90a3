"""Teacher trajectories: the pipeline run per prompt in Ray actors, every attempt judged, each
finished trajectory written at once so an interrupted build keeps it.

    OUT/trajectories/<id>/trajectory.json   {"prompt": Prompt, "trajectory": Trajectory JSON
                                             with every attempt's judge score}
    OUT/trajectories/<id>/images/*.png      every image of it (before/after of every attempt)
    OUT/trajectories/<id>/failure.json      instead, when the teacher or judge failed on it:
                                             {"prompt", "kind", "message"}

An id is done when either JSON file exists; both are written last and atomically (images
first), so a folder without one is a build interrupted mid-write and is cleared and redone.
Failures are kept out of the datasets and counted; `retry_failed` runs them again.

Failure kinds: `planner_output` (no usable plan, even after repairs), `step_failed` (a step
with no image), `teacher_error` (the teacher raised, or its actor died for good), `judge`
(an attempt the judge could not score: no score is made up). The teachers run in
`TeacherPool` actors (each builds its own pipeline — generator, planner, critic — from a plain
config, with the resources the recipe declares); the judge is a `JudgePool`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from itk_rl.data.prompts import Prompt
from itk_rl.formats import Attempt, JudgeScore, Request, StepRecord, Trajectory
from itk_rl.formats.files import write_atomic
from itk_rl.formats.images import ImageFolder
from itk_rl.pipeline.loop import (
    InterleavePipeline,
    PipelineError,
    PlannerOutputError,
    StepFailedError,
)
from itk_rl.rewards.judge_pool import JudgePool
from itk_rl.rollout.batching import BatchedActorGroup

TRAJECTORY, FAILURE, IMAGES = "trajectory.json", "failure.json", "images"
PLANNER_OUTPUT, STEP_FAILED, TEACHER_ERROR, JUDGE = (
    "planner_output",
    "step_failed",
    "teacher_error",
    "judge",
)


class Teacher:
    """The whole pipeline for one prompt at a time; built inside an actor by hydra.

    Returns plain data only: a trajectory as `Trajectory.to_row()` (JSON text and PNG bytes)
    or `{"failure": kind, "message": …}` for bad teacher output, which is expected and must
    not fail the actor call. Other errors raise (the pool gives that prompt's future the error).
    """

    def __init__(
        self,
        pipeline: Callable[..., InterleavePipeline],
        generator: Any,
        planner: Any = None,
        critic: Any = None,
    ) -> None:
        self.pipeline = pipeline(generator=generator, planner=planner, critic=critic)

    def run_batch(
        self, ids: Sequence[str], texts: Sequence[str], seeds: Sequence[int]
    ) -> list[dict[str, Any]]:
        return [self.run_one(*item) for item in zip(ids, texts, seeds, strict=True)]

    def run_one(self, prompt_id: str, text: str, seed: int) -> dict[str, Any]:
        self.pipeline.seed = seed  # every render and agent call of the prompt derives from it
        try:
            return self.pipeline.run(Request(text)).to_row()
        except PlannerOutputError as error:
            return {"failure": PLANNER_OUTPUT, "message": str(error)}
        except StepFailedError as error:
            return {"failure": STEP_FAILED, "message": str(error)}
        except PipelineError as error:
            return {"failure": TEACHER_ERROR, "message": str(error)}


class TeacherPool(BatchedActorGroup):
    """`num_actors` actors, each running one `Teacher` built from `teacher_config` (a plain
    dict: `_target_` Teacher, and the pipeline, generator, planner, critic configs).
    Resources, placement, restarts and time-outs (`call_timeout_s`: one prompt's whole
    trajectory) as in `GeneratorPool`."""

    def __init__(
        self,
        teacher_config: dict[str, Any],
        num_actors: int,
        num_cpus: float,
        num_gpus: float,
        max_restarts: int,
        max_task_retries: int,
        resources: Mapping[str, float] | None = None,
        label_selector: Mapping[str, str] | None = None,
        call_timeout_s: float | None = None,
    ) -> None:
        super().__init__(
            config=teacher_config,
            method="run_batch",
            num_actors=num_actors,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_restarts=max_restarts,
            max_task_retries=max_task_retries,
            max_batch_size=1,
            max_wait_s=0.0,
            resources=resources,
            label_selector=label_selector,
            call_timeout_s=call_timeout_s,
            group="teacher",
        )

    def submit(self, prompts: Sequence[Prompt]) -> list[Future[dict[str, Any]]]:
        return self._enqueue([(p.id, p.text, p.seed) for p in prompts])


class TrajectoryStore:
    """The trajectory folders of a build (layout in the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, prompt_id: str) -> Path:
        return self.root / prompt_id

    def is_done(self, prompt_id: str, retry_failed: bool = False) -> bool:
        folder = self.folder(prompt_id)
        return (folder / TRAJECTORY).is_file() or (
            not retry_failed and (folder / FAILURE).is_file()
        )

    def write(self, prompt: Prompt, trajectory: Trajectory) -> None:
        folder = self._fresh(prompt.id)
        data = {
            "prompt": prompt.to_dict(),
            "trajectory": trajectory.to_json_dict(ImageFolder(folder / IMAGES)),
        }
        write_atomic(folder / TRAJECTORY, json.dumps(data, ensure_ascii=False, indent=1))

    def write_failure(self, prompt: Prompt, kind: str, message: str) -> None:
        folder = self._fresh(prompt.id)
        data = {"prompt": prompt.to_dict(), "kind": kind, "message": message}
        write_atomic(folder / FAILURE, json.dumps(data, ensure_ascii=False, indent=1))

    def _fresh(self, prompt_id: str) -> Path:
        """An empty folder: leftovers of an interrupted write (or a retried failure) go."""
        folder = self.folder(prompt_id)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def load(self, prompt_id: str) -> Trajectory:
        folder = self.folder(prompt_id)
        path = folder / TRAJECTORY
        data = json.loads(path.read_text(encoding="utf-8"))
        return Trajectory.from_json_dict(data["trajectory"], folder / IMAGES, where=str(path))

    def failure(self, prompt_id: str) -> dict[str, Any] | None:
        path = self.folder(prompt_id) / FAILURE
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))


def step_befores(trajectory: Trajectory) -> list[np.ndarray | None]:
    """Each step's before-image for the judge: None for text-to-image (step 1 without input
    images), the user's first image, or the previous step's final image."""
    images = trajectory.request.images
    befores: list[np.ndarray | None] = [images[0] if images else None]
    for record in trajectory.steps[:-1]:
        final = record.final
        befores.append(final.image if final is not None else None)
    return befores


def with_scores(trajectory: Trajectory, scores: dict[tuple[int, int], JudgeScore]) -> Trajectory:
    """`trajectory` with `scores[(step index, attempt index)]` set on those attempts."""
    records = []
    for s, record in enumerate(trajectory.steps):
        attempts: list[Attempt] = [
            replace(a, score=scores[(s, i)]) if (s, i) in scores else a
            for i, a in enumerate(record.attempts)
        ]
        records.append(StepRecord(record.step, tuple(attempts), record.final_attempt))
    return replace(trajectory, steps=tuple(records))


@dataclass
class TeacherReport:
    """What one run of the teachers did."""

    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: int = 0
    pending: int = 0


@dataclass
class _Judging:
    prompt: Prompt
    trajectory: Trajectory
    futures: dict[tuple[int, int], Future] = field(default_factory=dict)


def run_teachers(
    prompts: Sequence[Prompt],
    store: TrajectoryStore,
    teachers: TeacherPool,
    judges: JudgePool,
    max_new: int | None = None,
    retry_failed: bool = False,
    log: Callable[[str], None] = lambda line: None,
    progress: Callable[[bool], None] = lambda ok: None,
) -> TeacherReport:
    """Run every prompt not yet done (at most `max_new` of them), judge every attempt, write.

    Teachers run in parallel; as each trajectory arrives its attempts go to the judges, and
    it is written the moment its last score is in, so an interrupt loses only work in flight.
    `progress(ok)` is called once per prompt done; each failure is also logged with its cause.
    """
    todo = [p for p in prompts if not store.is_done(p.id, retry_failed)]
    report = TeacherReport(skipped=len(prompts) - len(todo))
    if max_new is not None:
        report.pending = max(0, len(todo) - max_new)
        todo = todo[:max_new]
    running: dict[Future, Prompt] = dict(zip(teachers.submit(todo), todo, strict=True))
    judging: dict[str, _Judging] = {}
    owner: dict[Future, str] = {}
    waiting: set[Future] = set(running)

    def fail(prompt: Prompt, kind: str, message: str) -> None:
        store.write_failure(prompt, kind, message)
        report.failed[prompt.id] = kind
        log(f"{prompt.id}: {kind}: {message}")
        progress(False)

    while waiting:
        done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
        for future in done:
            if future in running:
                prompt = running.pop(future)
                if future.exception() is not None:
                    fail(prompt, TEACHER_ERROR, repr(future.exception()))
                    continue
                result = future.result()
                if "failure" in result:
                    fail(prompt, result["failure"], result["message"])
                    continue
                trajectory = Trajectory.from_row(result, where=f"teacher output {prompt.id}")
                job = _Judging(prompt, trajectory)
                befores = step_befores(trajectory)
                for s, record in enumerate(trajectory.steps):
                    for i, attempt in enumerate(record.attempts):
                        if attempt.image is not None:
                            job.futures[(s, i)] = judges.submit(
                                record.step.prompt, attempt.image, befores[s]
                            )
                judging[prompt.id] = job
                owner.update(dict.fromkeys(job.futures.values(), prompt.id))
                waiting |= set(job.futures.values())
                done_now = not job.futures
            else:
                found = judging.get(owner.pop(future))
                if found is None:  # finished already, with an earlier future of this batch
                    continue
                job = found
                done_now = all(f.done() for f in job.futures.values())
            if done_now:
                _finish(judging.pop(job.prompt.id), store, report, fail, progress)
    return report


def _finish(
    job: _Judging,
    store: TrajectoryStore,
    report: TeacherReport,
    fail: Callable[[Prompt, str, str], None],
    progress: Callable[[bool], None],
) -> None:
    scores: dict[tuple[int, int], JudgeScore] = {}
    for key, future in job.futures.items():
        error = future.exception()
        score = None if error is not None else future.result()
        if score is None:
            why = repr(error) if error is not None else "the judgement was unreadable"
            fail(job.prompt, JUDGE, f"step {key[0] + 1} attempt {key[1] + 1}: {why}")
            return
        scores[key] = score
    store.write(job.prompt, with_scores(job.trajectory, scores))
    report.finished.append(job.prompt.id)
    progress(True)
