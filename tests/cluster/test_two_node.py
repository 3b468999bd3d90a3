"""A real two-node Ray cluster on this machine: a head (2 CPUs, custom resource `head`, the
dashboard on loopback) and a second node that joins it with `ray start --address` (1 CPU,
custom resource `flux`, label `node-type=flux`). The testbed GRPO recipe is submitted with
cluster/submit.sh (`ray job submit`), its generator pool placed on the second node by a custom
resource, its judge by a node label, its rollout worker and trainer ranks on the head; the test
reads where each actor ran from the head's state API and what the job wrote.

A second node on the same machine can join only inside a loopback-only network namespace
(outside one, Ray rewrites 127.0.0.1 to the host's address; DESIGN §5): scripts/test.sh runs the
suite in one; elsewhere the test is skipped, saying so. Every Ray process it starts is a child of
a `ray start --block` in a process group of its own, which the teardown ends (never `ray stop`,
which stops every Ray instance of the user on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUBMIT = ROOT / "cluster" / "submit.sh"
BIN = Path(sys.executable).parent  # `ray`, and the `python` the job's driver runs with


def _loopback_only() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


pytestmark = pytest.mark.skipif(
    not _loopback_only(),
    reason="needs a loopback-only network namespace (scripts/test.sh, or `unshare -n` with lo "
    "up): on the host network Ray rewrites 127.0.0.1 to the host's address and a second node "
    "on the same machine cannot join",
)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _wait_for(what: str, done: Callable[[], bool], timeout_s: float) -> None:
    """Poll `done` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.2)


@dataclass
class Cluster:
    dashboard: str  # http://127.0.0.1:PORT: job submission and the state API
    env: dict[str, str]  # for every process that talks to it


def _start_node(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """`ray start --block ARGS` in a process group of its own, writing to `log`."""
    with log.open("w") as out:
        return subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _running(process: subprocess.Popen, log: Path) -> bool:
    """True while `process` runs; fails the test with its log once it has exited."""
    if process.poll() is not None:
        pytest.fail(f"`{' '.join(process.args)}` exited:\n{log.read_text()[-3000:]}")
    return True


def _wait_until_started(process: subprocess.Popen, log: Path) -> None:
    def started() -> bool:
        return _running(process, log) and "Ray runtime started" in log.read_text()

    _wait_for(f"{log.stem}: `ray start`", started, 90)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop_node(process: subprocess.Popen) -> None:
    """End a `ray start --block` (it stops the Ray processes of its node), then anything of its
    process group still running."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):  # else the group is gone already
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture
def two_nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    from ray.util.state import list_nodes
    from ray.util.state.exception import RayStateApiException

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # this process queries the state API
    temp = Path(tempfile.mkdtemp(prefix="itk2n-", dir="/tmp"))  # Unix socket paths stay short
    gcs, dashboard, client, head_agent, node_agent = _free_ports(5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}{os.pathsep}{env['PATH']}"}
    common = ["--node-ip-address=127.0.0.1"]
    nodes = []
    try:
        head = [
            "--head",
            f"--port={gcs}",
            "--num-cpus=2",
            '--resources={"head": 1}',
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--dashboard-agent-listen-port={head_agent}",
            f"--ray-client-server-port={client}",
            f"--temp-dir={temp}",
        ]
        nodes.append(_start_node([*head, *common], temp / "head.log", env))
        # The second node joins as soon as the head's GCS listens (its dashboard still starts).
        _wait_for(
            "the head's GCS", lambda: _running(nodes[0], temp / "head.log") and _accepts(gcs), 90
        )
        second = [
            f"--address=127.0.0.1:{gcs}",
            "--num-cpus=1",
            '--resources={"flux": 1}',
            "--labels=node-type=flux",
            f"--dashboard-agent-listen-port={node_agent}",
        ]
        nodes.append(_start_node([*second, *common], temp / "node.log", env))
        for process, name in zip(nodes, ("head", "node"), strict=True):
            _wait_until_started(process, temp / f"{name}.log")
        address = f"http://127.0.0.1:{dashboard}"

        def both_alive() -> bool:
            try:
                return sum(n.state == "ALIVE" for n in list_nodes(address=address)) == 2
            except (OSError, RayStateApiException):  # the dashboard is still starting
                return False

        _wait_for("two live nodes in the head's state API", both_alive, 60)
        yield Cluster(address, env)
    finally:
        for process in reversed(nodes):
            _stop_node(process)
        shutil.rmtree(temp, ignore_errors=True)


PLACEMENT = (
    "generator.resources={flux: 1}",
    "judge.label_selector={node-type: flux}",
    "rollout.resources={head: 0.25}",
    "trainer.resources={head: 0.25}",
)


def test_a_grpo_job_runs_with_each_actor_group_on_its_node_type(
    two_nodes: Cluster, tmp_path: Path
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
