"""InterleaveThinker's inference loop: plan, then per step render → critic → re-render.

DESIGN §1, exactly:

1. The planner turns the request into a plan (`<think>…</think><answer>{"execution_plan"…}`).
2. Step 1 renders text-to-image (or edits the user's input images); every later step edits the
   previous step's final image, and only that image.
3. After each render the critic sees the before-image (a white canvas of the render's size for
   step 1 without input images, else the user's first image), the after-image, the planner's
   original prompt and the prompt used. On `false` the step is rendered again from the same
   before-image with the critic's `refine_prompt` (the prompt used before, if it is empty).
4. At most `max_attempts` (T_max) attempts per step. With `accept_last_attempt_unreviewed`
   (the reference code's rule) the last attempt is kept without a critic call.

Which attempt is a step's final image: the first one the critic accepts; one it could not
review (its engine failed for good, or its output had no readable verdict — nothing to refine
with) counts as accepted and says so in the record; when every attempt was rejected, the last
attempt that rendered (the most refined prompt). A step where no attempt rendered stops the run
(`StepFailedError`): every later step would edit an image that does not exist.

Baselines the paper compares: generator only (`planner=None, critic=None`: the request text
is the single step's prompt, rendered once) and planner without critic (`critic=None`: every
step is rendered once). The switches are independent.

Seeds: attempt `a` (0-based) of step `s` renders with `seed_for(seed, s, a)`, the critic of that
attempt samples with `seed_for(seed, s, a, role=CRITIC)` and the planner with
`seed_for(seed, 0, 0, role=PLANNER)` — the same run twice gives the same trajectory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from itk_rl.formats import (
    Attempt,
    ParseResult,
    Plan,
    PromptTemplate,
    Request,
    Step,
    StepRecord,
    Trajectory,
    build_critic_messages,
    build_planner_messages,
    load_template,
    parse_critic_output,
    parse_planner_output,
    white_canvas,
)
from itk_rl.formats.envelope import failure
from itk_rl.formats.images import check_image
from itk_rl.interfaces.engine import ChatRequest, SamplingParams, VLMEngine
from itk_rl.interfaces.generator import ImageGenerator, RenderRequest

T = TypeVar("T")

RENDER, CRITIC, PLANNER = 0, 1, 2
"""Seed streams: the same (step, attempt) gives unrelated seeds to the generator and critic."""


def seed_for(base: int, step: int, attempt: int, role: int = RENDER) -> int:
    """A seed in [0, 2**31) that depends only on (base, step, attempt, role).

    Hashed through numpy's SeedSequence rather than `base + 100·step + attempt`, so no choice of
    T_max or plan length can make two attempts share a seed.
    """
    state = np.random.SeedSequence([base, step, attempt, role]).generate_state(1)[0]
    return int(state) & 0x7FFFFFFF


@dataclass
class Agent:
    """A VLM engine playing one role: the engine, the prompt template the checkpoint was
    trained with (a packaged name such as "critic", or a file path) and how to sample."""

    engine: VLMEngine
    template: str | PromptTemplate
    sampling: SamplingParams = field(default_factory=SamplingParams)

    def __post_init__(self) -> None:
        if not isinstance(self.template, PromptTemplate):
            self.template = load_template(self.template)

    def ask(self, messages: list[dict[str, Any]], images: Sequence[np.ndarray], seed: int) -> str:
        """One completion's text for one conversation."""
        request = ChatRequest(messages=tuple(messages), images=tuple(images), seed=seed)
        completions = self.engine.generate([request], self.sampling)
        if len(completions) != 1 or not completions[0]:
            raise RuntimeError(
                f"{type(self.engine).__name__}.generate returned {len(completions)} result "
                "lists for 1 request, or an empty one"
            )
        return completions[0][0].text


@dataclass(frozen=True)
class Progress:
    """What the pipeline reports after every event, for writers and terminal progress.

    `trajectory` holds everything so far (the last step record may be in progress); `step` is
    the step being worked on (1-based; None before the plan and after the last step).
    """

    trajectory: Trajectory
    event: str
    step: int | None = None


class PipelineError(RuntimeError):
    """The run could not go on. `trajectory` holds what was done up to that point (None if
    nothing was)."""

    def __init__(self, message: str, trajectory: Trajectory | None = None) -> None:
        super().__init__(message)
        self.trajectory = trajectory


class PlannerOutputError(PipelineError):
    """The planner's output has no usable plan, even after repairs (raw text in the record)."""


class StepFailedError(PipelineError):
    """No attempt of `step` produced an image."""

    def __init__(self, message: str, trajectory: Trajectory, step: int) -> None:
        super().__init__(message, trajectory)
        self.step = step


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class InterleavePipeline:
    """Planner → generator → critic for one request; see the module docstring for the rules.

    Args:
        generator: renders prompts (text-to-image without references, edits with them).
        planner: the planner agent; None is the generator-only baseline.
        critic: the critic agent; None renders every step once (planner without critic).
        max_attempts: T_max, attempts per step (reference code 3, paper 5).
        accept_last_attempt_unreviewed: keep the last attempt without asking the critic.
        seed: base of every seed (see `seed_for`).
        retries: further tries of a generator or engine call that raised, before the failure
            is recorded in the trajectory.
    """

    def __init__(
        self,
        generator: ImageGenerator,
        planner: Agent | None = None,
        critic: Agent | None = None,
        max_attempts: int = 3,
        accept_last_attempt_unreviewed: bool = True,
        seed: int = 0,
        retries: int = 1,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"pipeline.max_attempts must be >= 1, got {max_attempts}")
        if retries < 0:
            raise ValueError(f"pipeline.retries must be >= 0, got {retries}")
        for role, agent in (("planner", planner), ("critic", critic)):
            if agent is not None and agent.template.role != role:
                raise ValueError(
                    f"{role}.template {agent.template.source} is a {agent.template.role} "
                    f"template, expected a {role} one"
                )
        self.generator = generator
        self.planner = planner
        self.critic = critic
        self.max_attempts = max_attempts
        self.accept_last_attempt_unreviewed = accept_last_attempt_unreviewed
        self.seed = seed
        self.retries = retries

    def run(
        self, request: Request, on_progress: Callable[[Progress], None] | None = None
    ) -> Trajectory:
        """Run the whole loop for `request`; `on_progress` is called after every event.

        Raises `PlannerOutputError` when the plan is unusable and `StepFailedError` when a step
        has no image; both carry the trajectory so far.
        """
        report = on_progress or (lambda progress: None)
        planned = self._plan(request)
        trajectory = Trajectory(request=request, planner=planned)
        if planned.value is None:
            report(Progress(trajectory, f"planner output unusable: {planned.error}"))
            raise PlannerOutputError(
                f"the planner output has no usable plan: {planned.error}", trajectory
            )
        steps = planned.value.steps
        report(Progress(trajectory, f"plan: {len(steps)} step(s)", step=1))
        records: list[StepRecord] = []
        previous: np.ndarray | None = None
        for step in steps:
            references = (previous,) if previous is not None else request.images

            def update(record: StepRecord, event: str, number: int = step.step_number) -> None:
                report(Progress(Trajectory(request, planned, (*records, record)), event, number))

            record = self._run_step(step, references, update)
            records.append(record)
            trajectory = Trajectory(request=request, planner=planned, steps=tuple(records))
            final = record.final
            if final is None or final.image is None:
                errors = "; ".join(a.error or "no image" for a in record.attempts)
                raise StepFailedError(
                    f"step {step.step_number} of {len(steps)} produced no image in "
                    f"{len(record.attempts)} attempt(s): {errors}",
                    trajectory,
                    step.step_number,
                )
            previous = final.image
        report(Progress(trajectory, f"all {len(steps)} step(s) done"))
        return trajectory

    # Phases, one method each.

    def _plan(self, request: Request) -> ParseResult[Plan]:
        """The planner's parsed output, or the generator-only plan of one step."""
        if self.planner is None:
            step = Step(1, "Image", instruction=request.text, prompt=request.text)
            return ParseResult(Plan((step,)), format_valid=True)
        messages = build_planner_messages(request.text, len(request.images), self.planner.template)
        seed = seed_for(self.seed, 0, 0, PLANNER)
        text, error = self._call(lambda: self.planner.ask(messages, request.images, seed))
        if error is not None:
            return failure("", f"planner engine failed: {error}")
        return parse_planner_output(text)

    def _run_step(
        self,
        step: Step,
        references: tuple[np.ndarray, ...],
        update: Callable[[StepRecord, str], None],
    ) -> StepRecord:
        """All attempts of one step, reported one by one; the record names the final one."""
        attempts: list[Attempt] = []
        prompt = step.prompt
        final: int | None = None
        label = f"step {step.step_number}"
        for index in range(self.max_attempts):
            seed = seed_for(self.seed, step.step_number, index)
            tag = f"{label} attempt {index + 1}/{self.max_attempts}"
            render = RenderRequest(prompt=prompt, references=references, seed=seed)
            image, error = self._call(lambda render=render: self._render(render))
            if image is None:
                attempts.append(Attempt(prompt=prompt, seed=seed, error=f"render failed: {error}"))
                update(StepRecord(step, attempts), f"{tag}: render failed: {error}")
                continue
            last = index == self.max_attempts - 1
            if self.critic is None or (last and self.accept_last_attempt_unreviewed):
                attempts.append(Attempt(prompt=prompt, seed=seed, image=image))
                final = index
                why = "no critic" if self.critic is None else "last attempt, kept unreviewed"
                update(StepRecord(step, attempts, final), f"{tag}: rendered ({why})")
                break
            before = references[0] if references else white_canvas(*image.shape[:2])
            attempt, refined = self._review(step, index, prompt, seed, before, image)
            attempts.append(attempt)
            if refined is None:
                final = index
                update(StepRecord(step, attempts, final), f"{tag}: {_verdict_text(attempt)}")
                break
            update(StepRecord(step, attempts), f"{tag}: {_verdict_text(attempt)}")
            prompt = refined or prompt
        if final is None:
            rendered = [i for i, a in enumerate(attempts) if a.image is not None]
            final = rendered[-1] if rendered else None
        record = StepRecord(step, attempts, final)
        kept = "no image" if final is None else f"kept attempt {final + 1}"
        update(record, f"{label}: done, {kept}")
        return record

    def _render(self, request: RenderRequest) -> np.ndarray:
        images = self.generator([request])
        if len(images) != 1:
            raise RuntimeError(f"the generator returned {len(images)} images for 1 request")
        return check_image(images[0], "generated image")

    def _review(
        self,
        step: Step,
        index: int,
        prompt: str,
        seed: int,
        before: np.ndarray,
        after: np.ndarray,
    ) -> tuple[Attempt, str | None]:
        """The critic's attempt record and, on rejection, the next prompt ("" = reuse)."""
        assert self.critic is not None
        critic = self.critic
        messages = build_critic_messages(critic.template, step.prompt, prompt)
        critic_seed = seed_for(self.seed, step.step_number, index, CRITIC)
        text, error = self._call(lambda: critic.ask(messages, (before, after), critic_seed))
        if error is not None:
            attempt = Attempt(prompt, seed, after, error=f"critic failed: {error}")
            return attempt, None
        parsed = parse_critic_output(text)
        attempt = Attempt(prompt=prompt, seed=seed, image=after, critic=parsed)
        verdict = parsed.value
        if verdict is None or verdict.success:
            return attempt, None
        return attempt, verdict.refine_prompt.strip()

    def _call(self, fn: Callable[[], T]) -> tuple[T | None, str | None]:
        """`fn()` with `retries` further tries; (result, None) or (None, the last error)."""
        tries = self.retries + 1
        error = ""
        for _ in range(tries):
            try:
                return fn(), None
            except Exception as exc:  # a failed call is retried, then recorded, never hidden
                error = _describe(exc)
        return None, f"{error} (after {tries} tries)"


def _verdict_text(attempt: Attempt) -> str:
    """One line for the terminal: what the critic said about an attempt."""
    if attempt.error:
        return f"{attempt.error}; kept unreviewed"
    parsed = attempt.critic
    if parsed is None:
        return "not reviewed"
    if parsed.value is None:
        return f"critic output unreadable ({parsed.error}); kept unreviewed"
    if parsed.value.success:
        return "critic accepted"
    return f"critic rejected; refined prompt: {parsed.value.refine_prompt!r}"
