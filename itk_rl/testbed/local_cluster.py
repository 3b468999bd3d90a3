"""A Ray cluster of several nodes on this machine, for the tests and benchmarks that need more
than one node (`tests/cluster/test_two_node.py`, `benchmarks/chaos.py`).

A head and named second nodes that join it with `ray start --address`, each a `ray start
--block` in a process group of its own: a node can be lost at once (`kill_node`: its raylet
and every worker on it killed, as when a machine dies), and the rest are stopped by ending
their own process groups, never by `ray stop` (which stops every Ray instance of the user on
the machine). `hold_resources` keeps a node's custom resources busy, as another job's actors
would, so that the actors started meanwhile go elsewhere.

A second node on the same machine joins only inside a loopback-only network namespace (outside
one, Ray rewrites 127.0.0.1 to the host's address; DESIGN §5): `loopback_only()` says whether
this process runs in one (`unshare -n` with lo up, as scripts/test.sh does). The process that
calls these helpers reads the head's state API, so it needs `RAY_AUTH_MODE=disabled` as the
cluster has.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent  # `ray`, and the `python` a job's driver runs with
START_TIMEOUT_S = 180.0  # a node starting on a busy 2-core machine
QUICK_NODE_DEATH = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
"""Head settings under which the GCS marks a lost node dead within about 3 s (Ray's defaults
take 15-30 s); a run that loses a node waits less for its actors to be placed again."""


def loopback_only() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def wait_for(what: str, done: Callable[[], bool], timeout_s: float) -> None:
    """Poll `done` until it holds; raise TimeoutError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.2)


@dataclass
class LocalCluster:
    address: str  # 127.0.0.1:PORT of the GCS: `ray.init(address=...)`
    dashboard: str  # http://127.0.0.1:PORT: job submission and the state API
    env: dict[str, str]  # for every process that talks to it
    temp: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)  # "head", nodes

    def kill_node(self, name: str) -> None:
        """Lose node `name` at once: SIGKILL to its process group (raylet, object store and
        the workers of its actors), as when its machine dies."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def wait_for_live_nodes(self, count: int) -> None:
        from ray.util.state import list_nodes
        from ray.util.state.exception import RayStateApiException

        def live() -> bool:
            try:
                nodes = list_nodes(address=self.dashboard)
            except (OSError, RayStateApiException):  # the dashboard is still starting
                return False
            return sum(node.state == "ALIVE" for node in nodes) == count

        wait_for(f"{count} live nodes in the head's state API", live, START_TIMEOUT_S)

    def wait_until_started(self, names: Sequence[str]) -> None:
        for name in names:
            log = self.temp / f"{name}.log"

            def started(name: str = name, log: Path = log) -> bool:
                return self._running(name) and "Ray runtime started" in log.read_text()

            wait_for(f"{name}: `ray start`", started, START_TIMEOUT_S)

    def stop(self) -> None:
        """End every node this cluster started (second nodes first), then its files."""
        for name in reversed(list(self.processes)):
            _stop_node(self.processes.pop(name))
        shutil.rmtree(self.temp, ignore_errors=True)

    def _join(self, name: str, args: Sequence[str]) -> None:
        """Start node `name` joining the head (each node's dashboard agent on a port of its
        own: the default one is shared by every node of the machine)."""
        (agent,) = free_ports(1)
        args = [f"--address={self.address}", f"--dashboard-agent-listen-port={agent}", *args]
        self._start(name, args)

    def _start(self, name: str, args: Sequence[str]) -> None:
        """`ray start --block ARGS` in a process group of its own, writing to `<name>.log`."""
        command = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats"]
        command += ["--node-ip-address=127.0.0.1", *args]
        with (self.temp / f"{name}.log").open("w") as out:
            self.processes[name] = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )

    def _running(self, name: str) -> bool:
        """True while node `name` runs; raises with its log once it has exited."""
        process = self.processes[name]
        if process.poll() is not None:
            log = (self.temp / f"{name}.log").read_text()[-3000:]
            raise RuntimeError(f"`{' '.join(process.args)}` exited:\n{log}")
        return True


class _Holder:
    def ready(self) -> bool:
        return True


def hold_resources(resources: Mapping[str, float]) -> Any:
    """An actor that holds `resources` (custom ones, no CPU) until it is killed: another job's
    work on a node, keeping that node from the actors started meanwhile."""
    import ray

    holder = ray.remote(_Holder).options(num_cpus=0, resources=dict(resources)).remote()
    ray.get(holder.ready.remote())
    return holder


def _exit(*_: object) -> None:
    raise SystemExit("SIGTERM")


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


@contextlib.contextmanager
def local_cluster(
    head: Sequence[str], nodes: Mapping[str, Sequence[str]], env: Mapping[str, str] | None = None
) -> Iterator[LocalCluster]:
    """A head started with `ray start --head HEAD` (its dashboard on loopback) and the second
    `nodes` ({name: `ray start` args}) joined to it, all live in the head's state API; `env`
    adds to every node's environment (e.g. `QUICK_NODE_DEATH`). Stopped on leaving, on a SIGTERM
    to this process too (in the main thread, it is turned into SystemExit)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit)
    temp = Path(tempfile.mkdtemp(prefix="itkc-", dir="/tmp"))  # Unix socket paths stay short
    gcs, dashboard, client, agent = free_ports(4)
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base |= {"RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}{os.pathsep}{base['PATH']}"}
    base |= env or {}
    cluster = LocalCluster(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", base, temp)
    try:
        cluster._start(
            "head",
            [
                "--head",
                f"--port={gcs}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                f"--dashboard-agent-listen-port={agent}",
                f"--ray-client-server-port={client}",
                f"--temp-dir={temp}",
                *head,
            ],
        )
        # Second nodes join as soon as the head's GCS listens (its dashboard still starts).
        wait_for(
            "the head's GCS", lambda: cluster._running("head") and _accepts(gcs), START_TIMEOUT_S
        )
        for name, args in nodes.items():  # one by one: Ray gives a raylet 30 s to register
            cluster._join(name, args)
            cluster.wait_until_started([name])
        cluster.wait_until_started(["head"])
        cluster.wait_for_live_nodes(len(cluster.processes))
        yield cluster
    finally:
        cluster.stop()
