"""Real multi-node Ray clusters on this machine (`itk_rl.testbed.local_cluster`): a head and
second nodes that join it with `ray start --address`.

A GRPO job: the head (2 CPUs, custom resource `head`, the dashboard on loopback) and a second node
(1 CPU, custom resource `flux`, label `node-type=flux`). The testbed GRPO recipe is submitted with
cluster/submit.sh (`ray job submit`), its generator pool placed on the second node by a custom
resource, its judge by a node label, its rollout worker and trainer ranks on the head; the test
reads where each actor ran from the head's state API and what the job wrote.

A lost node: tests/cluster/node_loss_driver.py, in a process of its own, loses a second node
under generator pools and rollout groups: those whose resources the head also has are placed
there, those that need a resource only the lost node had stop, naming it.

A second node on the same machine can join only inside a loopback-only network namespace (outside
one, Ray rewrites 127.0.0.1 to the host's address; DESIGN §5): scripts/test.sh runs the suite in
one; elsewhere the tests are skipped, saying so. Every Ray process they start is a child of a
`ray start --block` in a process group of its own, which the teardown ends (never `ray stop`,
which stops every Ray instance of the user on the machine).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from itk_rl.testbed.local_cluster import LocalCluster, local_cluster, loopback_only

ROOT = Path(__file__).resolve().parents[2]
SUBMIT = ROOT / "cluster" / "submit.sh"
NODE_LOSS = Path(__file__).with_name("node_loss_driver.py")

pytestmark = pytest.mark.skipif(
    not loopback_only(),
    reason="needs a loopback-only network namespace (scripts/test.sh, or `unshare -n` with lo "
    "up): on the host network Ray rewrites 127.0.0.1 to the host's address and a second node "
    "on the same machine cannot join",
)


@pytest.fixture
def two_nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # this process queries the state API
    head = ["--num-cpus=2", '--resources={"head": 1}']
    node = ["--num-cpus=1", '--resources={"flux": 1}', "--labels=node-type=flux"]
    with local_cluster(head, {"node": node}) as cluster:
        yield cluster


PLACEMENT = (
    "generator.resources={flux: 1}",
    "judge.label_selector={node-type: flux}",
    "rollout.resources={head: 0.25}",
    "trainer.resources={head: 0.25}",
)


def test_a_grpo_job_runs_with_each_actor_group_on_its_node_type(
    two_nodes: LocalCluster, tmp_path: Path
) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors, list_nodes
    from ray.util.state.common import ActorState

    out = tmp_path / "run"
    overrides = [
        f"output_dir={out}",
        "total_steps=2",
        "prepare.num_tasks=8",
        "data.batch_size=2",
        "rollout.sampling.n=4",
        "rollout.sampling.max_new_tokens=12",
        "logging.sample_every=0",
        "trainer.world_size=1",  # one rank: each actor's start costs seconds on 2 cores
        *PLACEMENT,
    ]
    env = two_nodes.env | {"RAY_ADDRESS": two_nodes.dashboard}
    submitted = subprocess.run(
        ["bash", str(SUBMIT), "train", "testbed_critic_grpo", *overrides],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    jobs = JobSubmissionClient(two_nodes.dashboard).list_jobs()
    assert len(jobs) == 1, f"{len(jobs)} jobs on the cluster; submit.sh said:\n{submitted.stderr}"
    job = jobs[0]
    assert submitted.returncode == 0 and job.status == JobStatus.SUCCEEDED, (
        f"job {job.status}: {job.message}\n{submitted.stdout[-4000:]}\n{submitted.stderr[-2000:]}"
    )

    nodes = list_nodes(address=two_nodes.dashboard, detail=True)
    flux = {n.node_id for n in nodes if "flux" in n.resources_total}
    head = {n.node_id for n in nodes if "head" in n.resources_total}
    assert len(flux) == len(head) == 1 and flux != head
    actors = list_actors(
        address=two_nodes.dashboard, filters=[("job_id", "=", job.job_id)], detail=True
    )

    def group_of(actor: ActorState) -> str:
        if actor.class_name == "ComponentActor":  # generator or judge: told by their placement
            return "generator" if "flux" in actor.required_resources else "judge"
        return {"EngineActor": "rollout", "TrainerWorker": "trainer"}[actor.class_name]

    placed: dict[str, list[str]] = {}
    for actor in actors:
        node = "second node" if actor.node_id in flux else "head" if actor.node_id in head else "?"
        placed.setdefault(group_of(actor), []).append(node)
    assert placed == {
        "rollout": ["head"],
        "trainer": ["head"],
        "generator": ["second node"],
        "judge": ["second node"],
    }

    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_000002"]
    assert (out / "final" / "config.json").is_file()
    assert list((out / "final").glob("*.safetensors"))


def test_a_lost_nodes_actors_come_back_where_resources_allow_else_their_group_stops_naming_them(
    tmp_path: Path,
) -> None:
    driver = subprocess.Popen(
        [sys.executable, str(NODE_LOSS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        out, err = driver.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        driver.send_signal(signal.SIGTERM)  # it stops its cluster on the way out
        out, err = driver.communicate(timeout=60)
        pytest.fail(f"the node-loss driver did not finish:\n{err[-4000:]}")
    assert driver.returncode == 0, err[-4000:]
    report = json.loads(out.splitlines()[-1])
    names = report["actor_names"]
    held = [name for kinds in names.values() for group in kinds.values() for name in group]
    assert report["held_calls_on"] == held  # each group was busy on the node when it died

    for group, result in report["rescheduled"].items():  # placed on the head: nothing lost
        assert result["answered_on"] == ["head"], (group, result)
        assert (result["answered"], result["lost"]) == (6, 0), (group, result)

    for group, result in report["no_room"].items():  # no flux left: stops, naming it
        (name,) = names["no_room"][group]
        assert (result["answered"], result["lost"]) == (0, 6), (group, result)
        assert result["error"].startswith(
            f"ActorGroupLost: no {group} actor is left ({name} was not back within "
            f"restart_timeout_s=30 s): {group} needs {{'flux': 1.0}}; no live node has it."
        ), result
        assert result["settled_after_kill_s"] < 30 + 60, result  # bounded: not a hang
