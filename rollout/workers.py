"""Rollout workers: N actors, each holding one `VLMEngine`, sampling the policy's responses.

A rollout batch is split into contiguous shards, one per worker; a shard may be cut further
into chunks of `chunk_records` requests, queued on its worker in order, so each record's
completions come back (on its own future) as soon as its chunk is sampled: the rewards of the
first records start while the last ones are still being sampled.

New policy weights reach the workers through `update_weights`: the caller puts the state dict
in the object store once and passes its ObjectRef, which every worker resolves from the store
(no copy per worker through the driver).

Every weight push bumps `weights_version`, and each worker reports the version it sampled
with. A worker that died and was restarted by Ray has rebuilt its engine from the config, with
the initial weights: `RolloutWorkers` notices (its version is older than the one the call was made
under), pushes the latest weights to it and samples that shard again — a restart never
silently samples an old policy.

Async style, as in every actor group (see `itk_rl.rollout.actors`): `submit` returns one
`concurrent.futures.Future` per request, so the next rollout can run while the trainer updates
(staleness 1); `generate` waits for them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import ray

from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams
from itk_rl.rollout.actors import ComponentActor, kill_actors, make_actors


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

    `max_restarts` / `max_task_retries`: Ray restarts a worker that died and re-runs its
    in-flight calls; the version check above then restores its weights.
    """

    def __init__(
        self,
        engine_config: dict[str, Any],
        num_actors: int,
        num_cpus: float,
        num_gpus: float,
        max_restarts: int,
        max_task_retries: int,
    ) -> None:
        self.workers = make_actors(
            EngineActor,
            engine_config,
            num_actors=num_actors,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_restarts=max_restarts,
            max_task_retries=max_task_retries,
        )
        self.weights_version = 0
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
        with self._sync_lock:
            version = self.weights_version
            shards = chunk_bounds(len(requests), len(self.workers), chunk_records)
            for worker, chunks in zip(self.workers, shards, strict=False):
                for start, stop in chunks:
                    chunk = list(requests[start:stop])
                    ref = worker.generate.remote(chunk, params)
                    self._collector.submit(
                        self._collect, worker, chunk, params, ref, version, futures[start:stop]
                    )
        return futures

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        """`params.n` completions per request, in request order."""
        return [future.result().completions for future in self.submit(requests, params)]

    def update_weights(self, state_dict_ref: ray.ObjectRef) -> int:
        """Load the state dict behind `state_dict_ref` (put in the object store once by the
        caller) into every worker; returns the new `weights_version`.

        The ref is kept, to restore the weights of a worker that restarts later.
        """
        if not isinstance(state_dict_ref, ray.ObjectRef):
            raise TypeError(
                "update_weights takes the ObjectRef of a state dict (ray.put it once), got "
                f"{type(state_dict_ref).__name__}"
            )
        with self._sync_lock:
            self.weights_version += 1
            self._weights_ref = state_dict_ref
            refs = [self._push(worker) for worker in self.workers]
        ray.get(refs)
        return self.weights_version

    def worker_versions(self) -> list[int]:
        """The weights version each worker holds now (a restarted one may be behind)."""
        return ray.get([worker.version.remote() for worker in self.workers])

    def shutdown(self) -> None:
        self._collector.shutdown(wait=True)
        kill_actors(self.workers)

    def __enter__(self) -> RolloutWorkers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def _push(self, worker: ray.actor.ActorHandle) -> ray.ObjectRef:
        """Queue the latest weights on `worker` (hold `_sync_lock`: pushes keep their order)."""
        return worker.update_weights.remote(self._weights_ref, self.weights_version)

    def _collect(
        self,
        worker: ray.actor.ActorHandle,
        requests: list[ChatRequest],
        params: SamplingParams,
        ref: ray.ObjectRef,
        version: int,
        futures: list[Future[Sampled]],
    ) -> None:
        """Wait for one chunk and settle its requests' futures (with the error if it failed)."""
        try:
            shard, used = ray.get(ref)
            if used < version:  # restarted with the initial weights: restore, sample again
                with self._sync_lock:
                    self._push(worker)
                    ref = worker.generate.remote(requests, params)
                shard, used = ray.get(ref)
        except Exception as error:
            for future in futures:
                with suppress(InvalidStateError):  # cancelled by its caller
                    future.set_exception(error)
            return
        for future, completions in zip(futures, shard, strict=True):
            with suppress(InvalidStateError):
                future.set_result(Sampled(completions, used))
