"""Faults during a GRPO run on the testbed recipe, and what each cost (not a timed test).

    python benchmarks/chaos.py [--steps 6] [--fault-step 3] [--only NAME ...]
    unshare -n sh -c 'ip link set lo up && exec python benchmarks/chaos.py --only kill_node'

Runs `testbed_critic_grpo` (2 rollout workers, 2 generators, 2 judges, 2 FSDP ranks) once
without faults and once per fault, each injected while step `--fault-step` runs:
- `kill_generator`, `kill_judge`: a call of the group is held (`itk_rl.testbed.faults`) and its
  actor killed by Ray mid-call (as a crashed process; Ray restarts it);
- `kill_rollout`: a rollout call held the same way and its worker killed mid-call (its chunk
  goes to the other worker, and the restarted one gets the current weights);
- `hang_generator`: one render call never returns (the pool's `call_timeout_s` restarts the
  actor and re-sends the batch);
- `kill_trainer_rank`: one FSDP rank killed (the driver rebuilds the group from the last
  checkpoint and redoes the steps since);
- `kill_node`: on a local cluster of a head and two nodes with the custom resource `flux`
  (`itk_rl.testbed.local_cluster`; it needs a loopback-only network namespace, as the second
  command line), the generators need {flux: 1} and the rest stays on the head. Two runs:
  `rescheduled`, the generators start on flux-a (flux-b's flux is held, as by another job's
  actors, and released once step 1 is logged), then flux-a is lost under a held render and
  they are placed on flux-b; `no_room`, they start on flux-b, the only flux node left, and it
  is lost the same way (the job stops past `fault_tolerance.restart_timeout_s`, naming what
  is missing). With `kill_node` every run, the fault-free one too, is on that cluster.
Prints one JSON object as its last line: per fault, whether the run finished, samples lost
(responses left out of an update because their render or judging failed for good, and
rollout chunks that failed), samples trained twice (steps logged more than once), steps
redone, recovery seconds (the faulted step's time over the fault-free run's; for the trainer, the
rebuild's), and whether every step after the fault has the fault-free run's metrics (rewards,
advantages, losses); for `no_room`, the error the job stopped with and the seconds from the
node's loss to the stop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import ray
from omegaconf import open_dict

from itk_rl.interfaces.reward import RewardInputs, RewardOutput
from itk_rl.job import compose_recipe
from itk_rl.rewards.critic import CriticReward
from itk_rl.testbed.faults import arm, wait_until_held
from itk_rl.testbed.local_cluster import (
    QUICK_NODE_DEATH,
    LocalCluster,
    hold_resources,
    local_cluster,
    loopback_only,
)
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


@dataclass(frozen=True)
class Triggers:
    """The files that make a generator, judge or rollout call hold (`itk_rl.testbed.faults`)."""

    generator: Path
    judge: Path
    rollout: Path


@dataclass(frozen=True)
class Fault:
    """`inject` runs once step `--fault-step` starts; `prepare`, if any, once step 1 is logged
    (every actor placed) and before the fault; `overrides` are added to the run's recipe."""

    inject: Callable[[Triggers], None]
    overrides: tuple[str, ...] = ()
    prepare: Callable[[], None] | None = None


def named(prefix: str) -> ray.actor.ActorHandle:
    """The first live actor whose name starts with `prefix` (itk_rl names its actors)."""
    names = sorted(n for n in ray.util.list_named_actors() if n.startswith(prefix))
    if not names:
        raise RuntimeError(f"no actor named {prefix}*")
    return ray.get_actor(names[0])


def kill_mid_call(group: str) -> Callable[[Triggers], None]:
    """Hold the next call of `group` and kill its actor then: it is sure to be busy."""

    def inject(triggers: Triggers) -> None:
        trigger = getattr(triggers, group)
        arm(trigger)
        ray.kill(ray.get_actor(wait_until_held(trigger)), no_restart=False)

    return inject


def hang(triggers: Triggers) -> None:
    arm(triggers.generator)


def kill_rank(_: Triggers) -> None:
    ray.kill(named("itk-trainer-"), no_restart=True)


FAULTS: dict[str, Fault] = {
    "kill_generator": Fault(kill_mid_call("generator")),
    "kill_judge": Fault(kill_mid_call("judge")),
    "kill_rollout": Fault(kill_mid_call("rollout")),
    "hang_generator": Fault(hang),
    "kill_trainer_rank": Fault(kill_rank),
}
NODE_FAULT = "kill_node"
HEAD = ["--num-cpus=4", '--resources={"head": 1}']  # logical CPUs, as a local run's
FLUX = {"flux": 2}  # room for the 2 generators
NODES = {
    "flux-a": ["--num-cpus=1", f"--resources={json.dumps(FLUX)}"],
    "flux-b": ["--num-cpus=1", f"--resources={json.dumps(FLUX | {'spare': 1})}"],
}
RESTART_TIMEOUT_S = 30
ON_NODES = (
    "generator.resources={flux: 1}",
    "rollout.resources={head: 0.1}",
    "judge.resources={head: 0.1}",
    "trainer.resources={head: 0.1}",
    f"fault_tolerance.restart_timeout_s={RESTART_TIMEOUT_S}",
)


def node_faults(cluster: LocalCluster) -> dict[str, Fault]:
    """The two runs of `kill_node`: the node under the generators lost with a spare flux node
    free (`rescheduled`), then the spare lost with none left (`no_room`)."""

    def lose(node: str) -> Callable[[Triggers], None]:
        def inject(triggers: Triggers) -> None:
            arm(triggers.generator)
            wait_until_held(triggers.generator)  # a render is running on the node
            cluster.kill_node(node)

        return inject

    holder = hold_resources(FLUX | {"spare": 1})  # the generators start on flux-a
    spare = Fault(lose("flux-a"), ON_NODES, lambda: ray.kill(holder))
    return {"rescheduled": spare, "no_room": Fault(lose("flux-b"), ON_NODES)}


def metrics_of(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def run(
    folder: Path, name: str, steps: int, fault_step: int, inputs: Path, fault: Fault | None
) -> dict[str, Any]:
    """One run, `fault` (None: none) injected once step `fault_step - 1` is logged. Returns its
    metrics per step, whether it finished, and when the fault was injected and the run ended."""
    out = folder / name
    triggers = Triggers(*(folder / f"{name}.{field.name}" for field in fields(Triggers)))
    overrides = [
        *SHAPE,
        f"output_dir={out}",
        f"total_steps={steps}",
        f"prepare.tiny_models_dir={inputs / 'tiny_models'}",
        f"data.train_path={inputs / 'critic_rl.parquet'}",
        "reward._target_=__main__.VaryingCriticReward",
        "generator.component._target_=itk_rl.testbed.faults.HangingGenerator",
        f"+generator.component.trigger={triggers.generator}",
        "judge.component._target_=itk_rl.testbed.faults.HangingJudge",
        f"+judge.component.trigger={triggers.judge}",
        *(fault.overrides if fault else ()),
    ]
    cfg = compose_recipe("testbed_critic_grpo", overrides)
    with open_dict(cfg):  # the recipe's engine, inside one that holds on cue
        cfg.rollout.component = {
            "_target_": "itk_rl.testbed.faults.HangingEngine",
            "trigger": str(triggers.rollout),
            "inner": cfg.rollout.component,
        }
    injected: dict[str, float] = {}

    def injector() -> None:
        if fault.prepare is not None:
            while not metrics_of(out):
                time.sleep(0.1)
            fault.prepare()
        while len(metrics_of(out)) < fault_step - 1:
            time.sleep(0.1)
        time.sleep(0.5)  # inside the step, not at its boundary
        fault.inject(triggers)
        injected["at"] = time.perf_counter()

    if fault is not None:
        threading.Thread(target=injector, daemon=True).start()
    finished, error = True, None
    try:
        train(cfg)
    except Exception as exc:  # a fault the run did not survive: report it
        finished, error = False, f"{type(exc).__name__}: {exc}"
    ended = time.perf_counter()
    return {
        "finished": finished,
        "error": error,
        "metrics": metrics_of(out),
        "injected": "at" in injected,
        "stopped_after_fault_s": ended - injected["at"] if "at" in injected else None,
    }


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
        "injected": result["injected"],
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


def stopped(result: dict[str, Any]) -> dict[str, Any]:
    """A run that was to stop (no room for a lost node's actors): how, and how soon."""
    return {
        "stopped": not result["finished"],
        "injected": result["injected"],
        "error": result["error"],
        "names_missing_resource": "{'flux': 1.0}; no live node has it" in (result["error"] or ""),
        "stopped_after_fault_s": result["stopped_after_fault_s"],
        "restart_timeout_s": RESTART_TIMEOUT_S,
        "steps_logged": len(result["metrics"]),
    }


@contextmanager
def ray_for(names: list[str]) -> Iterator[LocalCluster | None]:
    """Ray for the runs: a local cluster of a head and two flux nodes when `kill_node` is asked
    for (every run goes to it), else a local Ray instance."""
    if NODE_FAULT not in names:
        ray.init(include_dashboard=False)
        yield None
        ray.shutdown()
        return
    os.environ["RAY_AUTH_MODE"] = "disabled"  # as the cluster: this process reads its state
    with local_cluster(HEAD, NODES, QUICK_NODE_DEATH) as cluster:
        ray.init(address=cluster.address)
        yield cluster
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--fault-step", type=int, default=3)
    choices = sorted([*FAULTS, NODE_FAULT])
    parser.add_argument("--only", nargs="*", choices=choices, default=choices)
    args = parser.parse_args()
    if not 2 <= args.fault_step <= args.steps:
        parser.error("--fault-step must be in [2, --steps]")
    if NODE_FAULT in args.only and not loopback_only():
        parser.error(f"{NODE_FAULT} needs a loopback-only network namespace (see the usage)")
    with tempfile.TemporaryDirectory() as tmp, ray_for(args.only) as cluster:
        folder = Path(tmp)
        inputs = folder / "inputs"
        baseline = run(folder, "none", args.steps, args.fault_step, inputs, None)
        if not baseline["finished"]:
            raise RuntimeError(f"the fault-free run failed: {baseline['error']}")
        faults: dict[str, Any] = {}
        for name in args.only:
            print(f"[chaos] {name}", file=sys.stderr, flush=True)
            if name != NODE_FAULT:
                result = run(folder, name, args.steps, args.fault_step, inputs, FAULTS[name])
                faults[name] = summary(result, baseline["metrics"], args.fault_step)
                continue
            for outcome, fault in node_faults(cluster).items():
                result = run(folder, outcome, args.steps, args.fault_step, inputs, fault)
                faults[f"{NODE_FAULT}/{outcome}"] = (
                    stopped(result)
                    if outcome == "no_room"
                    else summary(result, baseline["metrics"], args.fault_step)
                )
    survived = [f for name, f in faults.items() if name != f"{NODE_FAULT}/no_room"]
    steps = [r["time/step_s"] for r in baseline["metrics"]]
    report = {
        "steps": args.steps,
        "fault_step": args.fault_step,
        "fault_free_step_s": statistics.median(steps),
        "faults": faults,
        "all_survived": all(f["finished"] and f["injected"] for f in survived),
        "samples_lost": sum(f["samples_lost"] for f in survived),
        "samples_trained_twice": sum(f["samples_trained_twice"] for f in survived),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
