"""Faults during a GRPO run on the testbed recipe, and what each cost (not a timed test).

    python benchmarks/chaos.py [--steps 6] [--fault-step 3] [--only NAME ...]

Runs `testbed_critic_grpo` (2 rollout workers, 2 generators, 2 judges, 2 FSDP ranks) once
without faults and once per fault, each injected while step `--fault-step` runs:
- `kill_generator`, `kill_judge`, `kill_rollout`: one actor of the group killed by Ray (as a
  crashed process; Ray restarts it);
- `hang_generator`: one render call never returns (the pool's `call_timeout_s` restarts the
  actor and re-sends the batch);
- `kill_trainer_rank`: one FSDP rank killed (the driver rebuilds the group from the last
  checkpoint and redoes the steps since).
Prints one JSON object as its last line: per fault, whether the run finished, samples lost
(responses left out of an update because their render or judging failed for good, and
rollout chunks that failed), samples trained twice (steps logged more than once), steps
redone, recovery seconds (the faulted step's time over the fault-free run's; for the trainer, the
rebuild's), and whether
every step after the fault has the fault-free run's metrics (rewards, advantages, losses).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray

from itk_rl.interfaces.reward import RewardInputs, RewardOutput
from itk_rl.job import compose_recipe
from itk_rl.rewards.critic import CriticReward
from itk_rl.train import train

SHAPE = (
    "rollout.num_actors=2",
    "rollout.num_cpus=0.1",
    "generator.num_actors=2",
    "generator.num_cpus=0.1",
    "judge.num_actors=2",
    "judge.num_cpus=0.1",
    "rollout.chunk_records=2",
    "generator.call_timeout_s=10",
    "checkpoint_every=2",
    "resume=never",
    "prepare.num_tasks=24",
)


class VaryingCriticReward(CriticReward):
    """The paper's reward plus a term that varies within every group (the answer's length
    modulo 5, / 5): the random tiny critic alone earns one reward in a group, so no update
    would run; with it every step updates, and a fault has training to lose. Re-renders are
    read as by `CriticReward`, so generator and judge faults matter."""

    def __call__(self, inputs: RewardInputs) -> RewardOutput:
        paper = super().__call__(inputs)
        length = (len(inputs.response) % 5) / 5
        return RewardOutput(paper.total + length, paper.components | {"length": length})


def named(prefix: str) -> ray.actor.ActorHandle:
    """The first live actor whose name starts with `prefix` (itk_rl names its actors)."""
    names = sorted(n for n in ray.util.list_named_actors() if n.startswith(prefix))
    if not names:
        raise RuntimeError(f"no actor named {prefix}*")
    return ray.get_actor(names[0])


def kill(prefix: str) -> Callable[[Path], None]:
    def inject(_: Path) -> None:
        ray.kill(named(prefix), no_restart=False)

    return inject


def hang(trigger: Path) -> None:
    trigger.touch()


def kill_rank(_: Path) -> None:
    ray.kill(named("itk-trainer-"), no_restart=True)


FAULTS: dict[str, Callable[[Path], None]] = {
    "kill_generator": kill("itk-generator-"),
    "kill_judge": kill("itk-judge-"),
    "kill_rollout": kill("itk-rollout-"),
    "hang_generator": hang,
    "kill_trainer_rank": kill_rank,
}


def metrics_of(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def run(folder: Path, name: str, steps: int, fault_step: int, inputs: Path) -> dict[str, Any]:
    """One run; `name` a fault of FAULTS (or "none"), injected once step `fault_step - 1` is
    logged. Returns its metrics per step and whether it finished."""
    out, trigger = folder / name, folder / f"{name}.trigger"
    overrides = [
        *SHAPE,
        f"output_dir={out}",
        f"total_steps={steps}",
        f"prepare.tiny_models_dir={inputs / 'tiny_models'}",
        f"data.train_path={inputs / 'critic_rl.parquet'}",
        "reward._target_=__main__.VaryingCriticReward",
        "generator.component._target_=itk_rl.testbed.faults.HangingGenerator",
        f"+generator.component.trigger={trigger}",
    ]
    cfg = compose_recipe("testbed_critic_grpo", overrides)
    injected: dict[str, float] = {}

    def injector() -> None:
        while len(metrics_of(out)) < fault_step - 1:
            time.sleep(0.1)
        time.sleep(0.5)  # inside the step, not at its boundary
        injected["at"] = time.perf_counter()
        FAULTS[name](trigger)

    thread = threading.Thread(target=injector, daemon=True) if name in FAULTS else None
    if thread is not None:
        thread.start()
    finished, error = True, None
    try:
        train(cfg)
    except Exception as exc:  # a fault the run did not survive: report it
        finished, error = False, f"{type(exc).__name__}: {exc}"
    return {"finished": finished, "error": error, "metrics": metrics_of(out)}


def deterministic(record: dict[str, Any]) -> dict[str, float]:
    skip = ("time/", "perf/", "fault/")
    return {k: v for k, v in record.items() if not k.startswith(skip)}


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    a, b = deterministic(a), deterministic(b)
    return a.keys() == b.keys() and all(np.isclose(a[k], b[k], rtol=1e-5) for k in a)


def summary(result: dict[str, Any], baseline: list[dict[str, Any]], fault_step: int) -> dict:
    records = result["metrics"]
    by_step: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        by_step.setdefault(record["step"], []).append(record)
    last = {step: group[-1] for step, group in by_step.items()}
    lost = sum(r.get("reward/render_or_judge_failures", 0.0) for r in last.values())
    lost += max((r.get("fault/rollout_failed", 0.0) for r in last.values()), default=0.0)
    twice = sum(
        len(group) - 1 for group in by_step.values()
    )  # a step logged twice was trained twice
    responses = {r["step"]: r.get("data/responses_trained", 0.0) for r in records}
    reference = {r["step"]: r for r in baseline}
    faulted = last.get(fault_step)
    recovery = None
    if faulted is not None and fault_step in reference:
        recovery = faulted["time/step_s"] - reference[fault_step]["time/step_s"]
    if any(r.get("fault/trainer_restarts", 0.0) for r in last.values()):  # redone steps: its own
        recovery = max(r["fault/trainer_recovery_s"] for r in last.values())
    after = [s for s in last if s >= fault_step]
    return {
        "finished": result["finished"],
        "error": result["error"],
        "samples_lost": lost,
        "samples_trained_twice": twice * statistics.fmean(responses.values() or [0.0]),
        "steps_redone": max(
            (r.get("fault/trainer_steps_redone", 0.0) for r in last.values()), default=0
        ),
        "trainer_restarts": max(
            (r.get("fault/trainer_restarts", 0.0) for r in last.values()), default=0
        ),
        "recovery_s": recovery,
        "metrics_equal_fault_free_after_fault": bool(after)
        and all(s in reference and same(last[s], reference[s]) for s in after),
        "faults_counted": {
            k: max(r.get(k, 0.0) for r in last.values())
            for k in sorted({k for r in last.values() for k in r if k.startswith("fault/")})
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--fault-step", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=sorted(FAULTS), default=sorted(FAULTS))
    args = parser.parse_args()
    if not 2 <= args.fault_step <= args.steps:
        parser.error("--fault-step must be in [2, --steps]")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs = folder / "inputs"
        ray.init(include_dashboard=False)
        baseline = run(folder, "none", args.steps, args.fault_step, inputs)
        if not baseline["finished"]:
            raise RuntimeError(f"the fault-free run failed: {baseline['error']}")
        faults = {}
        for name in args.only:
            print(f"[chaos] {name}", file=sys.stderr, flush=True)
            result = run(folder, name, args.steps, args.fault_step, inputs)
            faults[name] = summary(result, baseline["metrics"], args.fault_step)
        ray.shutdown()
    steps = [r["time/step_s"] for r in baseline["metrics"]]
    report = {
        "steps": args.steps,
        "fault_step": args.fault_step,
        "fault_free_step_s": statistics.median(steps),
        "faults": faults,
        "all_survived": all(f["finished"] for f in faults.values()),
        "samples_lost": sum(f["samples_lost"] for f in faults.values()),
        "samples_trained_twice": sum(f["samples_trained_twice"] for f in faults.values()),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
