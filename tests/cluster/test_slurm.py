"""cluster/slurm/itk_rl.sbatch for real: a two-node SLURM cluster on this machine
(tests/cluster/slurm_harness.sh, in a network namespace of its own) runs the script, which starts
a Ray head and a Ray worker, runs a small driver and stops Ray.

The driver checks what the script promises: both nodes joined, the worker's custom resource
places a task there, the dashboard listens on loopback only and refuses a request without the
token. Skipped where Debian's slurm-wlm and munge are missing (scripts/install_slurm.sh) or the
test cannot make a network namespace (needs root).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "cluster" / "slurm" / "itk_rl.sbatch"
HARNESS = Path(__file__).with_name("slurm_harness.sh")
SLURM_TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo")
DASHBOARD_PORT = 8265

DRIVER = """
import json, os, sys, urllib.error, urllib.request

import psutil, ray

out, port = sys.argv[1], int(sys.argv[2])
ray.init()  # RAY_ADDRESS, exported by the batch script
nodes = [n for n in ray.nodes() if n["Alive"]]
head = next(n["NodeID"] for n in nodes if "node:__internal_head__" in n["Resources"])
worker = [n["NodeID"] for n in nodes if n["Resources"].get("generator")]


@ray.remote(num_cpus=0, resources={"generator": 1})
def where():
    return ray.get_runtime_context().get_node_id()


def status(headers):
    url = f"http://127.0.0.1:{port}/api/jobs/"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers)).status
    except urllib.error.HTTPError as error:
        return error.code


token = os.environ["RAY_AUTH_TOKEN"]
listening = {
    c.laddr.ip
    for c in psutil.net_connections("tcp")
    if c.status == psutil.CONN_LISTEN and c.laddr.port == port
}
result = {
    "nodes": len(nodes),
    "head": head,
    "generator_nodes": worker,
    "placed_on": ray.get(where.remote()),
    "dashboard_listens_on": sorted(listening),
    "auth_mode": os.environ.get("RAY_AUTH_MODE"),
    "status_without_token": status({}),
    "status_with_token": status({"Authorization": f"Bearer {token}"}),
}
with open(out, "w") as handle:
    json.dump(result, handle)
"""


def _skip_reason() -> str | None:
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"SLURM is not installed ({', '.join(missing)} not found): Debian's slurm-wlm and "
            "munge, e.g. via scripts/install_slurm.sh"
        )
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return "the SLURM daemons run as root in a network namespace (unshare, iproute2)"
    return None


def _marked_pids(variable: str, marker: str) -> list[int]:
    """Processes whose environment has `variable` set to this test's marker: the job's
    (ITK_SLURM_TEST_MARKER) or the harness's daemons (ITK_SLURM_DAEMON_MARKER), nobody else's."""
    needle = f"{variable}={marker}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue  # gone, or not readable
    return found


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """A short path: munge's and Ray's Unix sockets live under it."""
    path = Path(tempfile.mkdtemp(prefix="itks", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_sbatch_script_runs_a_driver_on_a_two_node_ray_cluster_and_stops_ray(
    work_dir: Path,
) -> None:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    (work_dir / "driver.py").write_text(DRIVER)
    result_path, log = work_dir / "result.json", work_dir / "job.out"
    marker, token = uuid.uuid4().hex, uuid.uuid4().hex
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RAY_", "SLURM_", "PYTEST_"))
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        HOME=str(work_dir),  # no ~/.ray/auth_token of the machine's user
        RAY_AUTH_TOKEN=token,
        ITK_WORKER_RESOURCES='{"generator": 1}',
        ITK_RAY_TEMP_DIR=str(work_dir / "ray"),
        ITK_NODE_TIMEOUT_S="90",
        ITK_JOB_TIMEOUT_S="180",
        ITK_SLURM_TEST_MARKER=marker,
    )
    command = ["unshare", "-n", "bash", str(HARNESS), str(work_dir)]
    command += ["--nodes=2", f"--output={log}", str(SBATCH), sys.executable]
    command += [str(work_dir / "driver.py"), str(result_path), str(DASHBOARD_PORT)]
    try:
        run = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        leftovers = _marked_pids("ITK_SLURM_TEST_MARKER", marker)
    finally:  # after a time-out too: nothing this test started stays behind
        for variable in ("ITK_SLURM_TEST_MARKER", "ITK_SLURM_DAEMON_MARKER"):
            for pid in _marked_pids(variable, marker):
                os.kill(pid, signal.SIGKILL)
    job_log = log.read_text() if log.exists() else "(no job output)"
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n--- job output ---\n{job_log}"

    result = json.loads(result_path.read_text())
    assert result["nodes"] == 2
    assert len(result["generator_nodes"]) == 1
    assert result["generator_nodes"] != [result["head"]]
    assert result["placed_on"] == result["generator_nodes"][0]
    assert result["dashboard_listens_on"] == ["127.0.0.1"]
    assert result["auth_mode"] == "token"
    assert result["status_without_token"] == 401
    assert result["status_with_token"] == 200
    assert "2 Ray nodes up" in job_log
    assert token not in job_log
    assert leftovers == [], f"processes of the job still running after it ended: {leftovers}"
