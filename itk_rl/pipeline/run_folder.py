"""A run folder, written as the run goes: an interrupted run keeps every finished step.

    RUN/index.html          the interleaved result (`itk_rl.pipeline.page`), with the run's status
    RUN/trajectory.json     `Trajectory.to_json_dict("images")`: load with
                            `Trajectory.from_json_dict(json.load(f), RUN / "images")`
    RUN/run.json            status: {"state": running|finished|stopped, "message", "step", …}
    RUN/images/*.png        every image, named by content hash
    RUN/planner_output.txt  only when the planner output was unusable: its raw text

Every file is rewritten after every attempt, atomically (a temporary file, then a rename), so a
reader — a browser refreshing the page, a batch resuming — never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from itk_rl.formats import Request, Trajectory
from itk_rl.formats.files import write_atomic
from itk_rl.formats.images import ImageFolder
from itk_rl.pipeline.loop import (
    InterleavePipeline,
    PipelineError,
    PlannerOutputError,
    Progress,
    StepFailedError,
)
from itk_rl.pipeline.page import FINISHED, RUNNING, STOPPED, RunStatus, render_page

PAGE, TRAJECTORY, STATUS, IMAGES = "index.html", "trajectory.json", "run.json", "images"
PLANNER_OUTPUT = "planner_output.txt"


def read_status(folder: str | os.PathLike[str]) -> RunStatus | None:
    """The status a run folder records, or None if it holds no (readable) run."""
    try:
        data = json.loads((Path(folder) / STATUS).read_text(encoding="utf-8"))
        return RunStatus(data["state"], data["message"], data.get("step"), data.get("num_steps"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RunFolder:
    """Writes one run's folder (layout in the module docstring).

    Args:
        path: the folder; created if missing.
        request_text: shown as the page title before any trajectory exists.
        notes: settings shown under the title (recipe, baselines, T_max…).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        request_text: str,
        notes: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.images = ImageFolder(self.path / IMAGES)
        self.request_text = request_text
        self.notes = dict(notes or {})

    @property
    def page(self) -> Path:
        return self.path / PAGE

    def write(self, trajectory: Trajectory | None, status: RunStatus) -> None:
        """Images first, then trajectory, page and status: each file points only at files
        already written."""
        if trajectory is not None:
            data = trajectory.to_json_dict(self.images)
            write_atomic(self.path / TRAJECTORY, json.dumps(data, ensure_ascii=False, indent=1))

        def image_name(image) -> str:
            return f"{IMAGES}/{self.images.put(image)}"

        page = render_page(trajectory, status, image_name, self.request_text, self.notes)
        write_atomic(self.page, page)
        write_atomic(self.path / STATUS, json.dumps(status.to_dict(), ensure_ascii=False) + "\n")

    def save_planner_output(self, raw: str) -> Path:
        path = self.path / PLANNER_OUTPUT
        write_atomic(path, raw)
        return path


def _num_steps(trajectory: Trajectory | None) -> int | None:
    plan = trajectory.plan if trajectory is not None else None
    return len(plan.steps) if plan is not None else None


def running_status(progress: Progress) -> RunStatus:
    total = _num_steps(progress.trajectory)
    if progress.step is None or total is None:
        return RunStatus(RUNNING, "running… planning", None, total)
    return RunStatus(RUNNING, f"running… step {progress.step} of {total}", progress.step, total)


def stopped_status(trajectory: Trajectory | None, reason: str) -> RunStatus:
    """'stopped at step k of n: reason', k the first step without a final image."""
    total = _num_steps(trajectory)
    if total is None:
        return RunStatus(STOPPED, f"stopped before any step: {reason}")
    assert trajectory is not None
    done = sum(1 for record in trajectory.steps if record.final is not None)
    step = min(done + 1, total)
    return RunStatus(STOPPED, f"stopped at step {step} of {total}: {reason}", step, total)


def run_into_folder(
    pipeline: InterleavePipeline,
    request: Request,
    folder: RunFolder,
    log: Callable[[str], None] = lambda line: None,
) -> Trajectory:
    """Run `pipeline` on `request`, keeping `folder` current after every event.

    On failure or interruption (Ctrl-C included) the folder keeps everything done so far and
    its page says where the run stopped; the error is re-raised. An unusable planner output is
    saved as raw text, and the `PlannerOutputError` names that file.
    """
    latest: list[Trajectory | None] = [None]

    def on_progress(progress: Progress) -> None:
        latest[0] = progress.trajectory
        log(progress.event)
        folder.write(progress.trajectory, running_status(progress))

    folder.write(None, RunStatus(RUNNING, "running… planning"))
    try:
        trajectory = pipeline.run(request, on_progress)
    except PlannerOutputError as error:
        trajectory = error.trajectory
        assert trajectory is not None
        folder.write(trajectory, stopped_status(trajectory, str(error)))
        if not trajectory.planner_output:  # the engine failed: there is no text to save
            raise
        saved = folder.save_planner_output(trajectory.planner_output)
        message = f"{error}; the raw planner output is saved in {saved}"
        raise PlannerOutputError(message, trajectory) from error
    except StepFailedError as error:
        last = error.trajectory.steps[-1].attempts[-1].error if error.trajectory else None
        reason = f"no attempt produced an image (last: {last})"
        folder.write(error.trajectory, stopped_status(error.trajectory, reason))
        raise
    except PipelineError as error:
        trajectory = error.trajectory or latest[0]
        folder.write(trajectory, stopped_status(trajectory, str(error)))
        raise
    except BaseException as error:
        reason = "interrupted" if isinstance(error, KeyboardInterrupt) else repr(error)
        folder.write(latest[0], stopped_status(latest[0], reason))
        raise
    total = _num_steps(trajectory)
    folder.write(trajectory, RunStatus(FINISHED, f"finished: {total} step(s)", None, total))
    return trajectory
