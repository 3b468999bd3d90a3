"""Rollout workers: N actors, each holding one `VLMEngine`, sampling the policy's responses.

A rollout batch is split into contiguous shards, one per worker, and put back together in
order. New policy weights reach the workers through `update_weights`: the caller puts the
state dict in the object store once and passes its ObjectRef, which every worker resolves from
the store (no copy per worker through the driver).

Every weight push bumps `weights_version`, and each worker reports the version it sampled
with. A worker that died and was restarted by Ray has rebuilt its engine from the config, with
the initial weights: `RolloutWorkers` notices (its version is older than the one the call was made
under), pushes the latest weights to it and samples that shard again — a restart never
silently samples an old policy.

Async style, as in every actor group (see `itk_rl.rollout.actors`): `submit` returns a
`concurrent.futures.Future`, so the next rollout can run while the trainer updates
(staleness 1); `generate` waits for it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
        self._collector = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rollout")

    def submit(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> Future[list[list[Completion]]]:
        """Start sampling `params.n` completions per request; the future gives them in order.

        Shards are queued on the workers now, so they sample with the weights of the current
        `weights_version` even if `update_weights` is called before they finish.
        """
        version = self.weights_version
        bounds = shard_bounds(len(requests), len(self.workers))
        refs = [
            worker.generate.remote(list(requests[start:stop]), params)
            for worker, (start, stop) in zip(self.workers, bounds, strict=False)
        ]
        return self._collector.submit(self._collect, requests, params, bounds, refs, version)

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        """`params.n` completions per request, in request order."""
        return self.submit(requests, params).result()

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
        requests: Sequence[ChatRequest],
        params: SamplingParams,
        bounds: list[tuple[int, int]],
        refs: list[ray.ObjectRef],
        version: int,
    ) -> list[list[Completion]]:
        completions: list[list[Completion]] = []
        for worker, (start, stop), ref in zip(self.workers, bounds, refs, strict=False):
            shard, used = ray.get(ref)
            if used < version:  # restarted with the initial weights: restore, sample again
                with self._sync_lock:
                    self._push(worker)
                    ref = worker.generate.remote(list(requests[start:stop]), params)
                shard, used = ray.get(ref)
            completions.extend(shard)
        return completions
