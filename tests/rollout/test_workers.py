"""Rollout workers on a local Ray cluster, with a scripted engine that shows who answered.

Test-only components are passed as classes in `_target_` and this module is pickled by value:
Ray workers cannot import test modules by name.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams
from itk_rl.rollout.actors import ActorGroupLost
from itk_rl.rollout.workers import RolloutWorkers, chunk_bounds, shard_bounds

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class ScriptedEngine:
    """A scripted `VLMEngine`: completion k of a request reads
    `"<engine id>|<weights tag>|<loads>|<request text>|<k>"`, so a test sees which engine
    answered with which weights. A request text "crash" kills the process once (the first
    time only: `crash_marker` is created before dying), as a worker dying mid-rollout; a text
    "wait:PATH" is answered only once PATH exists, as a long generation; "hang:PATH" never
    returns the first time (PATH is created), as a worker stuck in a kernel.
    """

    def __init__(self, crash_marker: str = "") -> None:
        self.engine_id = uuid.uuid4().hex[:8]
        self.weights, self.loads = "initial", 0
        self.crash_marker = crash_marker

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        texts = [request.messages[0]["content"][0]["text"] for request in requests]
        if "crash" in texts and not os.path.exists(self.crash_marker):
            Path(self.crash_marker).touch()
            os._exit(1)
        for text in texts:
            while text.startswith("wait:") and not os.path.exists(text.removeprefix("wait:")):
                time.sleep(0.01)
            if text.startswith("hang:") and not os.path.exists(text.removeprefix("hang:")):
                Path(text.removeprefix("hang:")).touch()
                threading.Event().wait()  # never set
        prefix = f"{self.engine_id}|{self.weights}|{self.loads}"
        return [[Completion(f"{prefix}|{text}|{k}") for k in range(params.n)] for text in texts]

    def update_weights(self, state_dict: dict[str, Any]) -> int:
        self.weights, self.loads = str(state_dict["tag"]), self.loads + 1
        return len(state_dict)


def chat(text: str) -> ChatRequest:
    return ChatRequest(({"role": "user", "content": [{"type": "text", "text": text}]},))


def fields(completions: list[list[Completion]]) -> list[list[list[str]]]:
    return [[c.text.split("|") for c in group] for group in completions]


def make_workers(**overrides: Any) -> RolloutWorkers:
    options = {
        "engine_config": {"_target_": ScriptedEngine},
        "num_actors": 2,
        "num_cpus": 0.5,
        "num_gpus": 0,
        "max_restarts": 0,
        "max_task_retries": 0,
    }
    return RolloutWorkers(**{**options, **overrides})


def test_shard_bounds_are_contiguous_and_balanced() -> None:
    assert shard_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shard_bounds(2, 3) == [(0, 1), (1, 2)]
    assert shard_bounds(0, 3) == []


def test_chunk_bounds_cut_each_shard_in_order() -> None:
    assert chunk_bounds(7, 2, 0) == [[(0, 4)], [(4, 7)]]
    assert chunk_bounds(7, 2, 3) == [[(0, 3), (3, 4)], [(4, 7)]]
    assert chunk_bounds(5, 1, 2) == [[(0, 2), (2, 4), (4, 5)]]


def test_chunked_records_come_back_as_their_chunk_is_sampled(workers: RolloutWorkers) -> None:
    # One worker's shard in chunks of 2: each record's future is settled with its own
    # completions, in order, the same as unchunked; a negative chunk size is refused.
    requests = [chat(f"request {i}") for i in range(5)]
    futures = workers.submit(requests, SamplingParams(n=2), chunk_records=2)
    chunked = [future.result(timeout=60).completions for future in futures]
    whole = workers.generate(requests, SamplingParams(n=2))
    assert [[r[3:] for r in g] for g in fields(chunked)] == [
        [r[3:] for r in g] for g in fields(whole)
    ]
    with pytest.raises(ValueError, match="chunk_records"):
        workers.submit(requests, SamplingParams(), chunk_records=-1)


def test_a_chunk_is_handed_back_while_its_workers_next_chunk_is_still_sampling(
    workers: RolloutWorkers, tmp_path: Path
) -> None:
    # Worker 0's share is requests 0 and 1, in chunks of one; request 1 is held until a file
    # exists: request 0 is back meanwhile (streamed), request 1 only after the release.
    release = tmp_path / "release"
    texts = ["first", f"wait:{release}", "third", "fourth"]
    futures = workers.submit([chat(t) for t in texts], SamplingParams(), chunk_records=1)
    assert futures[0].result(timeout=60).completions[0].text.split("|")[3] == "first"
    assert not futures[1].done()
    release.touch()
    assert futures[1].result(timeout=60).completions[0].text.split("|")[3] == f"wait:{release}"


@pytest.fixture(scope="module")
def workers(ray_local: None) -> Iterator[RolloutWorkers]:
    """Two workers, shared by the tests that do not kill any (starting them takes seconds)."""
    with make_workers() as workers:
        yield workers


def test_generate_splits_across_workers_and_keeps_order(workers: RolloutWorkers) -> None:
    requests = [chat(f"request {i}") for i in range(5)]
    rows = fields(workers.generate(requests, SamplingParams(n=2)))
    assert [[(r[3], r[4]) for r in group] for group in rows] == [
        [(f"request {i}", "0"), (f"request {i}", "1")] for i in range(5)
    ]
    engines = [group[0][0] for group in rows]
    assert all(len({r[0] for r in group}) == 1 for group in rows)  # a request stays on one
    assert engines == [engines[0]] * 3 + [engines[3]] * 2 and engines[0] != engines[3]


def test_update_weights_reaches_every_worker_once(workers: RolloutWorkers) -> None:
    requests = [chat(f"request {i}") for i in range(6)]
    with pytest.raises(TypeError, match="ObjectRef"):
        workers.update_weights({"tag": "v1"})
    start = workers.weights_version
    assert workers.update_weights(ray.put({"tag": "v1", "w": np.arange(4)})) == start + 1
    assert workers.worker_versions() == [start + 1] * 2
    after_one = fields(workers.generate(requests, SamplingParams()))
    assert workers.update_weights(ray.put({"tag": "v2"})) == start + 2
    after_two = fields(workers.generate(requests, SamplingParams()))
    assert workers.worker_versions() == [start + 2] * 2
    # every worker loaded each state dict exactly once (`loads` counts calls on the engine)
    assert {tuple(group[0][1:3]) for group in after_one} == {("v1", str(start + 1))}
    assert {tuple(group[0][1:3]) for group in after_two} == {("v2", str(start + 2))}
    assert len({group[0][0] for group in after_two}) == 2


def test_rollout_submitted_before_an_update_samples_the_old_weights(
    workers: RolloutWorkers,
) -> None:
    requests = [chat(f"request {i}") for i in range(4)]
    workers.update_weights(ray.put({"tag": "old"}))
    futures = workers.submit(requests, SamplingParams())  # staleness 1: overlaps the update
    workers.update_weights(ray.put({"tag": "new"}))
    sampled = [future.result(timeout=60) for future in futures]
    assert {group[0][1] for group in fields([s.completions for s in sampled])} == {"old"}
    assert {s.weights_version for s in sampled} == {workers.weights_version - 1}
    assert {group[0][1] for group in fields(workers.generate(requests, SamplingParams()))} == {
        "new"
    }


def test_restarted_worker_gets_the_latest_weights_back(ray_local: None, tmp_path: Path) -> None:
    config = {"_target_": ScriptedEngine, "crash_marker": str(tmp_path / "crashed")}
    requests = [chat(text) for text in ("a", "b", "crash", "d")]
    with make_workers(engine_config=config, max_restarts=1, max_task_retries=1) as workers:
        workers.update_weights(ray.put({"tag": "v1"}))
        rows = fields(workers.generate(requests, SamplingParams()))
        versions = workers.worker_versions()
    assert (tmp_path / "crashed").exists()  # the second worker died mid-generate
    assert [group[0][3] for group in rows] == ["a", "b", "crash", "d"]
    assert {tuple(group[0][1:3]) for group in rows} == {("v1", "1")}  # restored, loaded once
    assert versions == [1, 1]


def test_a_hung_chunk_is_resent_to_another_worker_and_the_hung_one_restored(
    ray_local: None, tmp_path: Path
) -> None:
    # Worker 0's chunk hangs: past call_timeout_s the worker is killed and restarted, given the
    # latest weights when it is back, and the chunk is sampled by worker 1 with those weights.
    hang = f"hang:{tmp_path / 'hung'}"
    with make_workers(max_restarts=1, max_task_retries=1, call_timeout_s=2.0) as workers:
        workers.update_weights(ray.put({"tag": "v1"}))
        rows = fields(workers.generate([chat(hang), chat("b")], SamplingParams()))
        versions = workers.worker_versions()
        faults = dict(workers.faults)
    assert (tmp_path / "hung").exists()
    assert [group[0][3] for group in rows] == [hang, "b"]
    assert rows[0][0][0] == rows[1][0][0]  # both sampled by worker 1
    assert {tuple(group[0][1:2]) for group in rows} == {("v1",)}
    assert versions == [1, 1]  # the restarted worker got the weights back
    assert faults == {"timeouts": 1, "deaths": 0, "resent": 1, "failed": 0}


class NeverBackEngine(ScriptedEngine):
    """The scripted engine whose restart never completes (a model load stuck for good): each
    worker's second build blocks (a file in `folder`, named after the actor, marks its first).
    A request text "die:PATH" kills the worker the first time (PATH is created before dying)."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        built = Path(folder) / ray.get_runtime_context().get_actor_name()
        if built.exists():
            threading.Event().wait()  # never set
        built.touch()

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        for request in requests:
            marker = Path(request.messages[0]["content"][0]["text"].removeprefix("die:"))
            if marker.is_absolute() and not marker.exists():
                marker.touch()
                os._exit(1)
        return super().generate(requests, params)


def test_a_worker_not_back_in_time_is_left_out_and_with_none_left_rollouts_fail_naming_them(
    ray_local: None, tmp_path: Path
) -> None:
    # Worker 1 dies mid-chunk and never comes back: past restart_timeout_s it is left out and
    # its chunk sampled by worker 0. Then worker 0 dies too: the chunk, and every later
    # rollout, fail with ActorGroupLost naming both workers instead of waiting forever.
    config = {"_target_": NeverBackEngine, "folder": str(tmp_path)}
    die = [f"die:{tmp_path / 'first'}", f"die:{tmp_path / 'second'}"]
    with make_workers(
        engine_config=config, max_restarts=1, max_task_retries=1, restart_timeout_s=0.5
    ) as workers:
        names = sorted(path.name for path in tmp_path.iterdir())
        rows = fields(workers.generate([chat("a"), chat(die[0])], SamplingParams()))
        with pytest.raises(ActorGroupLost) as lost:
            workers.generate([chat(die[1])], SamplingParams())
        with pytest.raises(ActorGroupLost):
            workers.submit([chat("b")], SamplingParams())
        faults = dict(workers.faults)
    assert [group[0][3] for group in rows] == ["a", die[0]]
    assert rows[0][0][0] == rows[1][0][0]  # both sampled by worker 0
    message = str(lost.value)
    assert message.startswith("no rollout actor is left (")
    assert all(f"{name} was not back within restart_timeout_s=0.5 s" in message for name in names)
    assert "rollout needs {'CPU': 0.5}; a live node has it" in message
    assert faults == {"timeouts": 0, "deaths": 2, "resent": 1, "failed": 1}
