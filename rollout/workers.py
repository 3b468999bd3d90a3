"""Rollout workers: N actors, each holding one `VLMEngine`, sampling the policy's responses.

A rollout batch is split into contiguous shards, one per worker; a shard may be cut further
into chunks of `chunk_records` requests, queued on its worker in order, so each record's
completions come back (on its own future) as soon as its chunk is sampled: the rewards of the
first records start while the last ones are still being sampled.

New policy weights reach the workers through `update_weights`: the caller puts the state dict
in the object store once and passes its ObjectRef, which every worker resolves from the store
(no copy per worker through the driver).

Every weight push bumps `weights_version`, and each worker reports the version it sampled
with. A worker that died or hung and was restarted by Ray has rebuilt its engine from the
config, with the initial weights: `RolloutWorkers` waits until it is back and pushes the latest
weights to it before it samples again, and a chunk sampled with weights older than the ones it
was submitted under is sampled again — a restart never silently samples an old policy.

Async style, as in every actor group (see `itk_rl.rollout.actors`): `submit` returns one
`concurrent.futures.Future` per request, so the next rollout can run while the trainer updates
(staleness 1); `generate` waits for them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams
from itk_rl.rollout.actors import (
    PROBE_INTERVAL_S,
    RESTART_TIMEOUT_S,
    ActorGroupLost,
    ComponentActor,
    group_lost,
    kill_actors,
    make_actors,
    unmet_needs,
)


class EngineActor(ComponentActor):
    """One engine and the version of the weights it holds (0: as built from the config)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.weights_version = 0

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> tuple[list[list[Completion]], int]:
        return self.component.generate(requests, params), self.weights_version

    def version(self) -> int:
        return self.weights_version

    def update_weights(self, state_dict: dict[str, Any], version: int) -> int:
        """Load `state_dict` (Ray resolved the ObjectRef it was passed as) into the engine."""
        self.component.update_weights(state_dict)
        self.weights_version = version
        return version


@dataclass(frozen=True)
class Sampled:
    """One request's completions and the weights version that sampled them."""

    completions: list[Completion]
    weights_version: int


def shard_bounds(num_items: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous `[start, stop)` ranges, sizes differing by at most one, empty ones left out."""
    base, extra = divmod(num_items, num_shards)
    bounds, start = [], 0
    for shard in range(num_shards):
        stop = start + base + (shard < extra)
        if stop > start:
            bounds.append((start, stop))
        start = stop
    return bounds


def chunk_bounds(num_items: int, num_shards: int, chunk_size: int) -> list[list[tuple[int, int]]]:
    """Per shard (`shard_bounds`), its `[start, stop)` chunks of at most `chunk_size` items, in
    order (`chunk_size` 0: the whole shard in one chunk)."""
    chunks = []
    for start, stop in shard_bounds(num_items, num_shards):
        step = chunk_size or stop - start
        chunks.append([(a, min(a + step, stop)) for a in range(start, stop, step)])
    return chunks


class RolloutWorkers:
    """`num_actors` actors, each building one `VLMEngine` from `engine_config` (a plain dict
    with `_target_`; the engine must have `update_weights(state_dict)` for weight sync).

    Faults: a worker that dies is restarted by Ray (`max_restarts`); a chunk not sampled within
    `call_timeout_s` after it could start (None: no limit) means a hung worker, which is killed
    and restarted. Either way the group waits until the worker is back, gives it the latest
    weights, and sends the lost chunk to the next live worker, up to `max_task_retries` times;
    then the chunk's requests fail with the error (`TimeoutError` for a hang). Ray itself re-runs
    nothing, so a hung chunk is never re-run where it hung. A worker not back within
    `restart_timeout_s` (its node died and no live node has its resources or labels) is killed
    for good and the others go on; with none left, requests fail with `ActorGroupLost`, naming
    the workers and what no live node has.
    `resources` and `label_selector` (custom Ray resources and node labels each worker also
    needs) place the workers on a node type.
    """

    def __init__(
        self,
        engine_config: dict[str, Any],
        num_actors: int,
        num_cpus: float,
        num_gpus: float,
        max_restarts: int,
        max_task_retries: int,
        resources: Mapping[str, float] | None = None,
        label_selector: Mapping[str, str] | None = None,
        call_timeout_s: float | None = None,
        restart_timeout_s: float = RESTART_TIMEOUT_S,
    ) -> None:
        if call_timeout_s is not None and call_timeout_s <= 0:
            raise ValueError(f"rollout.call_timeout_s must be > 0 or null, got {call_timeout_s}")
        if restart_timeout_s <= 0:
            raise ValueError(f"restart_timeout_s must be > 0, got {restart_timeout_s}")
        self.workers, self.names = make_actors(
            EngineActor,
            engine_config,
            num_actors=num_actors,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_restarts=max_restarts,
            max_task_retries=0,
            resources=resources,
            label_selector=label_selector,
            group="rollout",
        )
        self.max_task_retries, self.call_timeout_s = max_task_retries, call_timeout_s
        self.restart_timeout_s = restart_timeout_s
        self._needs = (num_cpus, num_gpus, resources, label_selector)
        self.weights_version = 0
        self.faults = {"timeouts": 0, "deaths": 0, "resent": 0, "failed": 0}
        self._alive = [True] * num_actors
        self._lost_at: dict[int, float] = {}  # workers being restarted: since when
        self._gone: dict[str, str] = {}  # workers left out for good: name → why
        self._deadlines = [0.0] * num_actors  # the latest deadline of a chunk queued on each
        self._weights_ref: ray.ObjectRef | None = None
        self._sync_lock = threading.Lock()  # a version and its weights reach a worker together
        # One thread waits on each chunk in flight (a blocked thread costs little; chunks of
        # several batches may be in flight under staleness).
        self._collector = ThreadPoolExecutor(max_workers=64, thread_name_prefix="rollout")

    def submit(
        self, requests: Sequence[ChatRequest], params: SamplingParams, chunk_records: int = 0
    ) -> list[Future[Sampled]]:
        """Start sampling `params.n` completions per request; one future per request, in order,
        settled as soon as its chunk of `chunk_records` requests is sampled (0: its worker's
        whole shard at once).

        Chunks are queued on the workers now, so they sample with the weights of the current
        `weights_version` even if `update_weights` is called before they finish.
        """
        if chunk_records < 0:
            raise ValueError(f"rollout.chunk_records must be >= 0, got {chunk_records}")
        futures: list[Future[Sampled]] = [Future() for _ in requests]
        live = [i for i, alive in enumerate(self._alive) if alive]
        if not live:
            raise self._group_lost()
        with self._sync_lock:
            version = self.weights_version
            shards = chunk_bounds(len(requests), len(live), chunk_records)
            for index, chunks in zip(live, shards, strict=False):
                for start, stop in chunks:
                    chunk = _Chunk(list(requests[start:stop]), params, version, futures[start:stop])
                    sent = self._send(index, chunk)
                    self._collector.submit(self._collect, chunk, *sent)
        return futures

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        """`params.n` completions per request, in request order."""
        return [future.result().completions for future in self.submit(requests, params)]

    def update_weights(self, state_dict_ref: ray.ObjectRef) -> int:
        """Load the state dict behind `state_dict_ref` (put in the object store once by the
        caller) into every worker; returns the new `weights_version`.

        Returns once the loads are queued, without waiting for them: a load queues behind the
        chunks already on its worker (sampled with the weights they were sent for) and ahead of
        every chunk sent after it (sampled with these), so the caller's next update need not
        wait for the rollouts in flight, and a rollout waits for no more than its worker's load.
        Which weights sample which chunk depends on the order of calls only, never on timing.
        The ref is kept, to restore the weights of a worker that restarts later; a worker that
        dies or hangs before its load gets the weights when it is back.
        """
        if not isinstance(state_dict_ref, ray.ObjectRef):
            raise TypeError(
                "update_weights takes the ObjectRef of a state dict (ray.put it once), got "
                f"{type(state_dict_ref).__name__}"
            )
        with self._sync_lock:
            self.weights_version += 1
            self._weights_ref = state_dict_ref
            for index, alive in enumerate(self._alive):
                if alive:
                    self._collector.submit(self._loaded, index, self._push(index))
            return self.weights_version

    def _loaded(self, index: int, ref: ray.ObjectRef) -> None:
        """Wait for a weights load on worker `index`; one that died first (behind a chunk) is
        restored when it is back."""
        try:
            ray.get(ref)
        except RayActorError:
            self._restore(index)

    def worker_versions(self) -> list[int]:
        """The weights version each worker holds now (a restarted one may be behind)."""
        return ray.get([worker.version.remote() for worker in self.workers])

    def shutdown(self) -> None:
        kill_actors(self.workers)  # chunks still in flight fail at once
        self._collector.shutdown(wait=True)

    def __enter__(self) -> RolloutWorkers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def _count(self, fault: str) -> None:
        with self._sync_lock:
            self.faults[fault] += 1

    def _push(self, index: int) -> ray.ObjectRef:
        """Queue the latest weights on worker `index` (hold `_sync_lock`: pushes keep their
        order)."""
        return self.workers[index].update_weights.remote(self._weights_ref, self.weights_version)

    def _send(self, index: int, chunk: _Chunk) -> tuple[int, ray.ObjectRef, float]:
        """Queue `chunk` on worker `index` (hold `_sync_lock`); its deadline is `call_timeout_s`
        after the chunks queued before it on that worker are due."""
        ref = self.workers[index].generate.remote(chunk.requests, chunk.params)
        deadline = float("inf")
        if self.call_timeout_s is not None:
            deadline = max(time.monotonic(), self._deadlines[index]) + self.call_timeout_s
            self._deadlines[index] = deadline
        return index, ref, deadline

    def _restore(self, index: int) -> None:
        """Wait until worker `index` is back from a restart, then give it the latest weights;
        a worker whose restarts are spent, or not back within `restart_timeout_s` of its loss,
        is left out from now on."""
        with self._sync_lock:
            lost_at = self._lost_at.setdefault(index, time.monotonic())
        deadline = lost_at + self.restart_timeout_s
        while self._alive[index]:
            left = deadline - time.monotonic()
            if left <= 0:
                why = f"was not back within restart_timeout_s={self.restart_timeout_s:g} s"
                return self._leave_out(index, why)
            try:
                ray.get(self.workers[index].version.remote(), timeout=left)
                break
            except ActorUnavailableError:  # still restarting
                time.sleep(PROBE_INTERVAL_S)
            except GetTimeoutError:
                continue  # past the deadline now
            except RayActorError as error:
                return self._leave_out(index, f"died for good ({type(error).__name__})")
        with self._sync_lock:
            self._lost_at.pop(index, None)
            if self._alive[index] and self._weights_ref is not None:
                self._push(index)

    def _leave_out(self, index: int, why: str) -> None:
        """Worker `index` is gone for good: killed, so Ray stops trying to place it."""
        with self._sync_lock:
            if self._alive[index]:
                self._alive[index] = False
                self._gone[self.names[index]] = why
                ray.kill(self.workers[index], no_restart=True)

    def _group_lost(self) -> ActorGroupLost:
        return group_lost("rollout", self._gone, unmet_needs("rollout", *self._needs))

    def _collect(self, chunk: _Chunk, index: int, ref: ray.ObjectRef, deadline: float) -> None:
        """Wait for one chunk and settle its requests' futures; re-send it if its worker died
        or hung; fail them with the error once that has happened `max_task_retries` times."""
        tries = 0
        while True:
            try:
                wait = None if deadline == float("inf") else max(0.0, deadline - time.monotonic())
                shard, used = ray.get(ref, timeout=wait)
            except (GetTimeoutError, RayActorError) as error:
                lost: Exception = error
                if isinstance(error, GetTimeoutError):
                    self._count("timeouts")
                    ray.kill(self.workers[index], no_restart=False)
                    lost = TimeoutError(
                        f"a rollout chunk was not sampled within call_timeout_s="
                        f"{self.call_timeout_s}; its worker was restarted"
                    )
                else:
                    self._count("deaths")
                self._restore(index)
                live = [i for i, alive in enumerate(self._alive) if alive]
                tries += 1
                if not live:
                    self._count("failed")
                    return chunk.fail(self._group_lost())
                if tries > self.max_task_retries:
                    self._count("failed")
                    return chunk.fail(lost)
                self._count("resent")
                index = min(live, key=lambda i: (i <= index, i))  # the next live worker
                with self._sync_lock:
                    _, ref, deadline = self._send(index, chunk)
                continue
            except Exception as error:
                return chunk.fail(error)
            if used >= chunk.version:
                break
            with self._sync_lock:  # sampled before its worker got the chunk's weights: again
                _, ref, deadline = self._send(index, chunk)
        for future, completions in zip(chunk.futures, shard, strict=True):
            with suppress(InvalidStateError):  # cancelled by its caller
                future.set_result(Sampled(completions, used))


@dataclass(eq=False)
class _Chunk:
    """Requests sampled in one call, the weights version they were submitted under and their
    callers' futures."""

    requests: list[ChatRequest]
    params: SamplingParams
    version: int
    futures: list[Future[Sampled]]

    def fail(self, error: BaseException) -> None:
        for future in self.futures:
            with suppress(InvalidStateError):
                future.set_exception(error)
