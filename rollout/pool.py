"""The generator pool: M actors, each holding one image generator, fed dynamic batches.

Renders arrive from many callers at once (every rollout sample's refined prompt, every step
of a trajectory); the pool batches them (`max_batch_size`, or whatever arrived within
`max_wait_s`), sends each batch to the least-busy actor and renders identical requests once.
Callers get `concurrent.futures.Future`s (the async style of every actor group: see
`itk_rl.rollout.actors`), so renders can stream to the judges as they finish.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from itk_rl.interfaces.generator import RenderRequest
from itk_rl.rollout.actors import RESTART_TIMEOUT_S
from itk_rl.rollout.batching import BatchedActorGroup


def request_key(request: RenderRequest) -> bytes:
    """A digest of what determines a render: prompt, seed and the reference images' pixels.

    Two requests with equal keys render the same image, so the pool renders one of them.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(request.prompt.encode())
    digest.update(b"\0seed=%d\0refs=%d" % (request.seed, len(request.references)))
    for reference in request.references:
        array = np.ascontiguousarray(reference)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.digest()


class GeneratorPool(BatchedActorGroup):
    """`num_actors` actors, each building one `ImageGenerator` from `generator_config`.

    Args:
        generator_config: plain dict with the generator's `_target_` and arguments.
        num_actors, num_cpus, num_gpus: how many actors and what each one reserves.
        max_batch_size: most requests in one generator call.
        max_wait_s: how long the oldest waiting request may wait for a batch to fill.
        max_restarts, max_task_retries: an actor that dies or hangs is restarted by Ray (the
            generator rebuilt) up to `max_restarts` times, and the renders it lost are sent to
            another actor, each up to `max_task_retries` times, so no request is lost or
            answered twice (`BatchedActorGroup`).
        call_timeout_s: a batch not rendered this long after it could start means a hung
            actor (None: no limit).
        restart_timeout_s: an actor that died or hung and is not back this long after (its node
            died and no live node has its resources) is left out; with none left, requests fail
            with `ActorGroupLost`.
        max_in_flight: batches queued on one actor at once (2 hides transfers behind compute).
        resources, label_selector: custom Ray resources ({name: amount}) and node labels
            ({label: value}) each actor also needs: they place the pool on a node type.

    Results are read-only `[H, W, 3]` uint8 arrays; deduplicated callers share one array.
    """

    def __init__(
        self,
        generator_config: dict[str, Any],
        num_actors: int,
        num_cpus: float,
        num_gpus: float,
        max_batch_size: int,
        max_wait_s: float,
        max_restarts: int,
        max_task_retries: int,
        max_in_flight: int = 2,
        resources: Mapping[str, float] | None = None,
        label_selector: Mapping[str, str] | None = None,
        call_timeout_s: float | None = None,
        restart_timeout_s: float = RESTART_TIMEOUT_S,
    ) -> None:
        super().__init__(
            config=generator_config,
            method="__call__",
            num_actors=num_actors,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_restarts=max_restarts,
            max_task_retries=max_task_retries,
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_s,
            max_in_flight=max_in_flight,
            resources=resources,
            label_selector=label_selector,
            call_timeout_s=call_timeout_s,
            restart_timeout_s=restart_timeout_s,
            group="generator",
        )

    def submit(self, requests: Sequence[RenderRequest]) -> list[Future[np.ndarray]]:
        """One future per request, in order; each resolves as soon as its batch is rendered."""
        return self._enqueue([(r,) for r in requests], [request_key(r) for r in requests])

    def render(
        self, requests: Sequence[RenderRequest], timeout: float | None = None
    ) -> list[np.ndarray]:
        """`submit` and wait: one image per request, in order."""
        return [future.result(timeout) for future in self.submit(requests)]
