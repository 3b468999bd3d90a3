"""A node lost under generator pools and rollout groups, run by tests/cluster/test_two_node.py in
a process of its own (the test session may hold another Ray connection).

A local cluster of a head and one node (`QUICK_NODE_DEATH`: a lost node is noticed within about
3 s). Both have the custom resource `slot`, only the node has `flux`. Four groups of one actor:
a generator pool and a rollout group that need {slot: 1} (`rescheduled`), and two that need
{flux: 1} (`no_room`). The head's slots are held meanwhile (`hold_resources`, as by another
job's actors), so all four start on the node; then they are released. A call of each group is
held (`hold_on_trigger`) and the node is killed: the `rescheduled` groups are placed again on
the head and answer every request once; the `no_room` ones fail their requests with
`ActorGroupLost` past `restart_timeout_s`, naming what no live node has.
Prints one JSON object as its last line: per outcome and group, where the answers came from,
requests lost, the seconds from the kill to the last answer or to the first error, and that
error; the groups' actor names and the actors whose calls were held.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import ray

from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams
from itk_rl.interfaces.generator import RenderRequest
from itk_rl.rollout.pool import GeneratorPool
from itk_rl.rollout.workers import RolloutWorkers
from itk_rl.testbed.faults import arm, hold_on_trigger, wait_until_held
from itk_rl.testbed.local_cluster import QUICK_NODE_DEATH, hold_resources, local_cluster

RESTART_TIMEOUT_S = 30.0  # a restart on the head: seconds, over 15 s with the 2 cores busy
HEAD = ["--num-cpus=2", '--resources={"slot": 2, "head": 1}']
NODE = ["--num-cpus=2", '--resources={"slot": 2, "flux": 2}']
NEEDS = {"rescheduled": {"slot": 1}, "no_room": {"flux": 1}}
FAULTS = {"max_restarts": 3, "max_task_retries": 2, "restart_timeout_s": RESTART_TIMEOUT_S}
REQUESTS = 6


def node_id() -> str:
    return ray.get_runtime_context().get_node_id()


class WhereGenerator:
    """Answers each render with the id of the node it ran on; holds on `trigger`."""

    def __init__(self, trigger: str) -> None:
        self.trigger = Path(trigger)

    def __call__(self, requests: Sequence[RenderRequest]) -> list[str]:
        hold_on_trigger(self.trigger)
        return [node_id() for _ in requests]


class WhereEngine:
    """Answers each request with the id of the node it ran on; holds on `trigger`."""

    def __init__(self, trigger: str) -> None:
        self.trigger = Path(trigger)

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        hold_on_trigger(self.trigger)
        return [[Completion(node_id())] for _ in requests]


def outcome(futures: list[Future], node_names: dict[str, str], killed: float) -> dict[str, Any]:
    """Where the answers came from, how many requests were lost, the seconds from the kill to
    the last answer or the first error, and that error."""
    answered, errors, last = [], [], killed
    for future in futures:
        try:
            result = future.result(timeout=300)
        except Exception as error:
            errors.append(error)
        else:
            answered.append(result if isinstance(result, str) else result.completions[0].text)
        last = max(last, time.monotonic())  # futures are read as they settle, roughly
    return {
        "answered_on": sorted({node_names.get(node, node) for node in answered}),
        "answered": len(answered),
        "lost": len(errors),
        "settled_after_kill_s": round(last - killed, 1),
        "error": f"{type(errors[0]).__name__}: {errors[0]}" if errors else None,
    }


def start_groups(folder: Path) -> dict[str, dict[str, GeneratorPool | RolloutWorkers]]:
    """Per outcome, a generator pool and a rollout group of one actor with its needs."""
    groups: dict[str, dict[str, GeneratorPool | RolloutWorkers]] = {}
    for name, resources in NEEDS.items():
        shape = {"num_actors": 1, "num_cpus": 0.25, "num_gpus": 0, "resources": resources}
        generator = {"_target_": WhereGenerator, "trigger": str(folder / f"{name}-generator")}
        engine = {"_target_": WhereEngine, "trigger": str(folder / f"{name}-rollout")}
        groups[name] = {
            "generator": GeneratorPool(
                generator, max_batch_size=1, max_wait_s=0, **shape, **FAULTS
            ),
            "rollout": RolloutWorkers(engine, **shape, **FAULTS),
        }
    return groups


def submit(group: GeneratorPool | RolloutWorkers) -> list[Future]:
    if isinstance(group, GeneratorPool):
        return group.submit([RenderRequest(f"render {i}", seed=i) for i in range(REQUESTS)])
    chats = [ChatRequest(({"role": "user", "content": f"chat {i}"},)) for i in range(REQUESTS)]
    return group.submit(chats, SamplingParams(), chunk_records=1)


STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[node-loss +{time.monotonic() - STARTED:.0f} s] {message}", file=sys.stderr, flush=True)


def main() -> None:
    os.environ["RAY_AUTH_MODE"] = "disabled"  # as the cluster: this process reads its state API
    with (
        tempfile.TemporaryDirectory(prefix="itk-nodeloss-") as tmp,
        local_cluster(HEAD, {"node": NODE}, QUICK_NODE_DEATH) as cluster,
    ):
        folder = Path(tmp)
        ray.init(address=cluster.address, logging_level="WARNING")
        holder = hold_resources({"slot": 2, "head": 1})
        groups = start_groups(folder)
        ray.kill(holder)
        names = {n["NodeID"]: "node" if "flux" in n["Resources"] else "head" for n in ray.nodes()}
        log("every group started on the node; the head's slots are free")
        triggers = [folder / f"{name}-{kind}" for name in groups for kind in groups[name]]
        for trigger in triggers:
            arm(trigger)
        futures = {
            name: {kind: submit(g) for kind, g in kinds.items()} for name, kinds in groups.items()
        }
        held = [wait_until_held(trigger) for trigger in triggers]
        cluster.kill_node("node")
        killed = time.monotonic()
        log("the node is lost under a held call of each group")
        report: dict[str, Any] = {
            name: {kind: outcome(f, names, killed) for kind, f in kinds.items()}
            for name, kinds in futures.items()
        }
        report["held_calls_on"] = held
        report["actor_names"] = {
            name: {kind: group.names for kind, group in kinds.items()}
            for name, kinds in groups.items()
        }
        for kinds in groups.values():
            for group in kinds.values():
                group.shutdown()
        ray.shutdown()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    sys.exit(main())
