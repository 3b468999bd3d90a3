"""Held-out evaluation on the testbed: the same tasks through several pipeline configurations.

Systems. Every system gets the ground-truth plan from `TestbedScriptedPlanner`; they differ only
in the critic. "Generator alone" is that plan rendered once per step with no critic — not the
pipeline's literal generator-only baseline, which would render the whole multi-step request as
one text-to-image prompt: the testbed generator cannot parse that, so the baseline would score
a meaningless 0 on every step and the comparison would measure the planner, not the critic,
which is what SFT and GRPO train. With the plan fixed, every difference between systems is the
critic's doing. Attempt 1 of every step renders with the same seed in every system (seeds
depend on task, step and attempt only), so the systems are compared on paired renders.

Judging. Every attempt is scored by the exact judge against the step's *original* plan prompt,
with the previous step's *final* image as before-image (a white canvas for step 1) — what the
system actually built on. A step's scene is right when the decoded final image equals the
ground-truth scene after that step (errors accumulate: a wrong step 1 makes later scenes
wrong). A run that stops early scores 0 on its missing steps.

Metrics (each a ratio of per-task sums; 95 % CI by a seeded percentile bootstrap over tasks, so
correlated steps of one task move together):
    final_score        mean judge overall O (0–10) of each step's final image
    first_score        the same for each step's first attempt (what the generator did alone)
    scene_accuracy     share of steps whose final scene equals the ground truth
    task_accuracy      share of tasks whose last scene equals the ground truth
    verdict_accuracy   share of critic calls whose verdict equals the judge's label
                       (success = O ≥ success_threshold); unreadable outputs and failed calls
                       count as wrong
    reasoning_accuracy share of critic calls whose reasoning states the after-image's scene (and
                       smudge) as `describe_image` does, as a whole clause: how well the critic
                       sees. RL rewards only the verdict and the refinement, so the reasoning
                       can drift from what SFT taught; this shows it
    improvement_rate   share of refinements (attempts after a rejection) scoring higher than the
                       rejected attempt; undefined (None) without refinements
    steps_improved     share of steps whose final image scores higher than the first attempt
`deltas` hold each system's paired difference from the first (baseline) system.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from itk_rl.eval.lockstep import LockstepEngine
from itk_rl.eval.metrics import (
    AttemptOutcome,
    EvalResult,
    StepOutcome,
    SystemResult,
    TaskOutcome,
    summarise,
    task_resamples,
)
from itk_rl.formats import Attempt, Request, StepRecord, Trajectory
from itk_rl.interfaces.engine import SamplingParams
from itk_rl.interfaces.generator import ImageGenerator
from itk_rl.pipeline.loop import Agent, InterleavePipeline, PipelineError, seed_for
from itk_rl.pipeline.page import FINISHED, STOPPED, RunStatus
from itk_rl.pipeline.run_folder import RunFolder
from itk_rl.testbed import TestbedJudge, TestbedTask, decode
from itk_rl.testbed.agents import TestbedOracleCritic, TestbedScriptedPlanner
from itk_rl.testbed.render import describe_image

RUNS = "runs"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# --- systems -----------------------------------------------------------------------------------


@dataclass
class SystemSpec:
    """A named pipeline configuration: its critic (None: each step rendered once) and T_max.

    `compare_with` names a system listed before this one: the paired differences against it are
    reported too (the GRPO critic against the SFT critic, on the same renders).
    """

    critic: Agent | None = None
    description: str = ""
    max_attempts: int = 3
    accept_last_attempt_unreviewed: bool = True
    compare_with: str | None = None


def oracle_critic() -> Agent:
    """The exact critic: an upper bound for what a trained critic can reach."""
    return Agent(TestbedOracleCritic("critic_testbed"), "critic_testbed")


def checkpoint_critic(
    path: str | Path, device: str = "cpu", max_new_tokens: int = 96, max_batch_size: int = 16
) -> Agent:
    """A trained critic (SFT or GRPO export) prompted as it was trained, sampled greedily;
    `max_batch_size` should cover the evaluation's `concurrent_tasks`."""
    from itk_rl.rollout.hf_engine import TransformersEngine  # transformers: import when used

    engine = TransformersEngine(str(path), device=device, max_batch_size=max_batch_size)
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    return Agent(engine, "critic_testbed", sampling)


def heldout_systems(
    cfg: DictConfig,
    sft: str | Path | None,
    grpo: str | Path | None,
    *,
    oracle: bool = True,
    max_attempts: int = 3,
    device: str = "cpu",
) -> tuple[dict[str, SystemSpec], ImageGenerator]:
    """The systems the held-out evaluation compares, in order, and the world it renders them in,
    from `cfg`, the demo recipe composed (`recipes/demo.yaml`: `evaluation.generator`, its
    `world`, and `evaluation.concurrent_tasks`, which the critics' batches must cover).

    The main job (`itk_rl.demo`) and `benchmarks/testbed_eval.py` both build them here, so a
    benchmark of the job's checkpoints measures the job's world unless an override says
    otherwise. The baseline comes first; the GRPO critic is also compared with the SFT critic;
    a critic whose checkpoint is None is left out, and so is the oracle when `oracle` is False.
    """
    batch = cfg.evaluation.concurrent_tasks
    systems = {"generator_alone": SystemSpec(None, "the plan rendered once per step, no critic")}
    if sft is not None:
        critic = checkpoint_critic(sft, device, max_batch_size=batch)
        systems["sft_critic"] = SystemSpec(critic, "critic after SFT", max_attempts)
    if grpo is not None:
        critic = checkpoint_critic(grpo, device, max_batch_size=batch)
        versus = "sft_critic" if sft is not None else None
        systems["grpo_critic"] = SystemSpec(
            critic, "critic after SFT + GRPO", max_attempts, compare_with=versus
        )
    if oracle:
        systems["oracle_critic"] = SystemSpec(
            oracle_critic(), "oracle critic (exact judge): upper bound", max_attempts
        )
    return systems, instantiate(cfg.evaluation.generator)


# --- running -----------------------------------------------------------------------------------


def _review(record: StepRecord, index: int) -> str:
    attempt = record.attempts[index]
    if attempt.critic is not None:
        verdict = attempt.critic.value
        return "unreadable" if verdict is None else ("accepted" if verdict.success else "rejected")
    return "failed" if attempt.error and attempt.error.startswith("critic") else "unreviewed"


def _sees_right(attempt: Attempt) -> bool:
    """Whether the critic's reasoning states `describe_image` of the attempt's image as a
    clause of its own (the trained critic's whole reasoning is that description; the oracle's
    quotes it), not as the start of a longer one (a described scene followed by "; smudge")."""
    if attempt.critic is None or attempt.image is None:
        return False
    seen = re.escape(describe_image(attempt.image))
    return re.search(rf"(?<![\w;] ){seen}(?![\w;])", attempt.critic.think) is not None


def judge_trajectory(
    trajectory: Trajectory,
    task: TestbedTask,
    judge: TestbedJudge,
    success_threshold: float,
) -> tuple[Trajectory, list[StepOutcome]]:
    """Every attempt scored against its step's original prompt, from the previous final image;
    returns the trajectory with scores filled in (for its page) and the step outcomes."""
    records, outcomes, before = [], [], None
    for record, scene in zip(trajectory.steps, task.scenes, strict=False):
        attempts, results = [], []
        for index, attempt in enumerate(record.attempts):
            score = None
            if attempt.image is not None:
                score = judge.score(record.step.prompt, attempt.image, before)
                attempt = replace(attempt, score=score)
            attempts.append(attempt)
            overall = None if score is None else score.overall
            label = overall is not None and overall >= success_threshold
            sees = _sees_right(attempt)
            results.append(AttemptOutcome(overall, label, _review(record, index), sees))
        final = record.final
        right = final is not None and final.image is not None and decode(final.image) == scene
        records.append(replace(record, attempts=tuple(attempts)))
        outcomes.append(StepOutcome(tuple(results), record.final_attempt, right))
        before = final.image if final is not None else None
    return replace(trajectory, steps=tuple(records)), outcomes


def _run_task(
    index: int,
    task: TestbedTask,
    spec: SystemSpec,
    planner: Agent,
    critic: Agent | None,
    generator: ImageGenerator,
    seed: int,
) -> tuple[Trajectory, str | None]:
    """Task `index` through the pipeline: its trajectory, and the error that stopped it."""
    pipeline = InterleavePipeline(
        generator,
        planner,
        critic,
        max_attempts=spec.max_attempts,
        accept_last_attempt_unreviewed=spec.accept_last_attempt_unreviewed,
        seed=seed_for(seed, index, 0),
    )
    try:
        return pipeline.run(Request(task.request)), None
    except PipelineError as failure:
        if failure.trajectory is None:
            raise
        return failure.trajectory, str(failure)


def run_pipelines(
    spec: SystemSpec,
    tasks: Sequence[TestbedTask],
    generator: ImageGenerator,
    seed: int,
    concurrent_tasks: int = 1,
) -> Iterator[tuple[Trajectory, str | None]]:
    """Every task's trajectory and stopping error, in task order, yielded as soon as its wave
    is done (the caller writes them out as they come: a crash loses one wave at most).

    With a critic, tasks run `concurrent_tasks` at a time in threads whose critic calls are
    answered in lockstep rounds (`LockstepEngine`): one batched call per round instead of one
    call per step, and the same batches on every run, whatever the threads' timing.
    """
    if concurrent_tasks < 1:
        raise ValueError(f"concurrent_tasks must be >= 1, got {concurrent_tasks}")
    critic = spec.critic
    # Stateless, so one planner serves every task and thread of the system.
    planner = Agent(TestbedScriptedPlanner("planner"), "planner")
    numbered = list(enumerate(tasks))
    if critic is None or concurrent_tasks == 1:
        for index, task in numbered:
            yield _run_task(index, task, spec, planner, critic, generator, seed)
        return
    for start in range(0, len(tasks), concurrent_tasks):
        wave = numbered[start : start + concurrent_tasks]
        yield from _run_wave(wave, spec, planner, critic, generator, seed)


def _run_wave(
    wave: Sequence[tuple[int, TestbedTask]],
    spec: SystemSpec,
    planner: Agent,
    critic: Agent,
    generator: ImageGenerator,
    seed: int,
) -> list[tuple[Trajectory, str | None]]:
    """The (index, task) pairs of `wave` at once, one thread each, critic calls in lockstep."""
    shared = LockstepEngine(critic.engine, len(wave))
    agent = Agent(shared, critic.template, critic.sampling)

    def run(participant: int, index: int, task: TestbedTask) -> tuple[Trajectory, str | None]:
        shared.join(participant)
        try:
            return _run_task(index, task, spec, planner, agent, generator, seed)
        finally:
            shared.leave()

    with ThreadPoolExecutor(max_workers=len(wave)) as threads:
        futures = [
            threads.submit(run, participant, index, task)
            for participant, (index, task) in enumerate(wave)
        ]
        return [future.result() for future in futures]


def run_system(
    name: str,
    spec: SystemSpec,
    tasks: Sequence[TestbedTask],
    generator: ImageGenerator,
    judge: TestbedJudge,
    out_dir: Path,
    seed: int,
    success_threshold: float,
    concurrent_tasks: int = 1,
) -> list[TaskOutcome]:
    """Each task through the pipeline, judged, and written as a run folder under out_dir."""
    notes = {"system": name, "plan": "ground truth (scripted planner)"}
    notes["critic"] = spec.description or ("none" if spec.critic is None else "yes")
    outcomes = []
    runs = run_pipelines(spec, tasks, generator, seed, concurrent_tasks)
    for index, (task, (trajectory, error)) in enumerate(zip(tasks, runs, strict=True)):
        plan = trajectory.plan
        if plan is not None and len(plan.steps) != len(task.scenes):
            raise ValueError(
                f"task {index} ({task.request!r}): the planner wrote {len(plan.steps)} steps, "
                f"the ground truth has {len(task.scenes)}"
            )
        scored, steps = judge_trajectory(trajectory, task, judge, success_threshold)
        relative = f"{RUNS}/{name}/task_{index:03d}"
        folder = RunFolder(out_dir / relative, task.request, notes)
        status = RunStatus(STOPPED, error) if error else RunStatus(FINISHED, "finished")
        folder.write(scored, status)
        for i, record in enumerate(scored.steps):
            final = record.final
            if final is not None and final.image is not None:
                steps[i] = replace(
                    steps[i], image=f"{relative}/images/{folder.images.put(final.image)}"
                )
        outcomes.append(TaskOutcome(task.request, len(task.scenes), tuple(steps), relative, error))
    return outcomes


def evaluate_testbed(
    systems: Mapping[str, SystemSpec],
    tasks: Sequence[TestbedTask],
    generator: ImageGenerator,
    judge: TestbedJudge,
    out_dir: str | Path,
    seed: int = 0,
    success_threshold: float = 10.0,
    bootstrap_resamples: int = 2000,
    concurrent_tasks: int = 16,
) -> EvalResult:
    """Run every system on `tasks` (the first system is the baseline of the deltas); each run
    is written to `out_dir/runs/<system>/task_NNN/`. Names must be usable as folder names.
    `concurrent_tasks` batches critic calls across tasks (`run_pipelines`); the figures do not
    depend on it beyond the float noise of padded batches."""
    if not systems or not tasks:
        raise ValueError(f"need systems and tasks, got {len(systems)} and {len(tasks)}")
    for index, (name, spec) in enumerate(systems.items()):
        if not _NAME.fullmatch(name):
            raise ValueError(f"system name {name!r}: use letters, digits, '_', '.', '-'")
        if spec.compare_with is not None and spec.compare_with not in list(systems)[:index]:
            raise ValueError(
                f"system {name!r}: compare_with={spec.compare_with!r} must name a system "
                f"listed before it ({list(systems)[:index]})"
            )
    out = Path(out_dir)
    resamples = task_resamples(len(tasks), bootstrap_resamples, seed)
    results: list[SystemResult] = []
    for name, spec in systems.items():
        outcomes = run_system(
            name, spec, tasks, generator, judge, out, seed, success_threshold, concurrent_tasks
        )
        baseline = results[0].tasks if results else None
        other = next((r for r in results if r.name == spec.compare_with), None)
        compared = (other.name, other.tasks) if other is not None else None
        results.append(summarise(name, spec.description, outcomes, resamples, baseline, compared))
    settings = {
        "num_tasks": len(tasks),
        "seed": seed,
        "success_threshold": success_threshold,
        "bootstrap_resamples": bootstrap_resamples,
        "concurrent_tasks": concurrent_tasks,
        "baseline": results[0].name,
        "systems": {
            name: {
                "description": spec.description,
                "critic": spec.critic is not None,
                "max_attempts": spec.max_attempts,
                "accept_last_attempt_unreviewed": spec.accept_last_attempt_unreviewed,
                "compare_with": spec.compare_with,
            }
            for name, spec in systems.items()
        },
    }
    return EvalResult(tuple(results), settings)
