"""Ray actor groups built from config, and the driver-side batcher the generator and judge
pools share.

Async style, used by every actor group in itk_rl: callers get `concurrent.futures.Future`s.
A pool keeps one driver-side dispatcher thread that collects submissions from any number of
callers (threads, or asyncio code through `asyncio.wrap_future`), cuts them into batches and
sends each batch to the least-busy actor; Ray resolves the batch's ObjectRef through
`ObjectRef.future()` callbacks, which settle the callers' futures. ObjectRefs alone would not
do: a batch does not exist yet when a request is submitted, so there is no ref to return, and
deduplication and per-item failure need a place that sees every request.

Components are built inside the actors by `hydra.utils.instantiate` from plain config dicts
(`{"_target_": ..., ...}`), so a model is loaded where its resources were declared and only
plain data crosses the Ray boundary.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Hashable, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError


def build_component(config: dict[str, Any]) -> Any:
    """`hydra.utils.instantiate(config)`, nested containers passed on as plain dicts and lists.

    `_target_` is a dotted name in recipes. A class is accepted too, for components Ray
    workers cannot import by name (classes defined in a test module, pickled by value).
    """
    from hydra.utils import instantiate  # import where the component is built

    target = config.get("_target_")
    if callable(target):  # hydra would turn it back into a name, which may not import here
        arguments = {key: value for key, value in config.items() if key != "_target_"}
        return target(**instantiate(arguments, _convert_="all"))
    return instantiate(config, _convert_="all")


class ComponentActor:
    """Holds one component built from `config`; runs its methods and times them.

    Wrapped by `ray.remote` in `make_actors`. Times are measured here, inside the actor, so a
    pool's busy fraction counts compute, not queueing or transfers.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.component = build_component(config)

    def ready(self) -> bool:
        """Returns once the component is built: a bad config fails at group start."""
        return True

    def call_batch(self, method: str, items: Sequence[tuple]) -> tuple[list[Any], float]:
        """`component.<method>(column_0, column_1, ...)` over the items' argument tuples.

        Returns one result per item, in order, and the seconds spent inside the method.
        """
        columns = [list(column) for column in zip(*items, strict=True)]
        start = time.perf_counter()
        results = list(getattr(self.component, method)(*columns))
        seconds = time.perf_counter() - start
        if len(results) != len(items):
            raise ValueError(
                f"{type(self.component).__name__}.{method} returned {len(results)} results "
                f"for {len(items)} items; it must return one per item, in order"
            )
        return results, seconds


def make_actors(
    actor_class: type,
    config: dict[str, Any],
    num_actors: int,
    num_cpus: float,
    num_gpus: float,
    max_restarts: int,
    max_task_retries: int,
) -> list[ray.actor.ActorHandle]:
    """Start `num_actors` actors of `actor_class(config)` and wait until each has built its
    component (errors in `config` surface here, not on the first call).

    `max_restarts` / `max_task_retries`: Ray restarts an actor that died (its component is
    rebuilt from `config`) and re-runs the calls it had in flight.
    """
    if num_actors < 1:
        raise ValueError(f"num_actors must be >= 1, got {num_actors}")
    remote_class = ray.remote(actor_class).options(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        max_restarts=max_restarts,
        max_task_retries=max_task_retries,
    )
    actors = [remote_class.remote(config) for _ in range(num_actors)]
    try:
        ray.get([actor.ready.remote() for actor in actors])
    except Exception:
        kill_actors(actors)  # the ones that did start must not hold their resources
        raise
    return actors


def kill_actors(actors: Sequence[ray.actor.ActorHandle]) -> None:
    """Kill for good (no restart): their resources go back to the cluster."""
    for actor in actors:
        ray.kill(actor, no_restart=True)


@dataclass(eq=False)
class _Item:
    """One unique request: its argument tuple and every caller's future waiting for it."""

    args: tuple
    key: Hashable | None
    arrival: float
    futures: list[Future] = field(default_factory=list)
    alone: bool = False  # its batch failed: it goes alone, to find the item at fault


@dataclass
class _ActorState:
    handle: ray.actor.ActorHandle
    in_flight: int = 0
    alive: bool = True
    busy_s: float = 0.0
    batches: int = 0
    items: int = 0

    def report(self, wall_s: float) -> dict[str, Any]:
        fraction = min(1.0, self.busy_s / wall_s)
        names = ("busy_s", "batches", "items", "alive")
        return {"busy_fraction": fraction, **{name: getattr(self, name) for name in names}}


class BatchedActorGroup:
    """`num_actors` `ComponentActor`s built from `config`, fed with dynamic batches of calls to
    the component's `method` (the generator pool and the judge pool).

    A batch leaves when `max_batch_size` items are waiting, or when the oldest has waited
    `max_wait_s`, and only while some live actor has fewer than `max_in_flight` batches (so
    under load requests pile up into full batches instead of small ones queueing on busy
    actors). It goes to the live actor with the fewest batches in flight, then the least busy.

    Requests with the same `key` that are waiting or in flight are served once; every caller
    gets the result. Failures: when a batch raises, its items are retried one by one so that
    only the item at fault fails (its future carries the exception; no result is made up).
    An actor that dies mid-call is restarted and the call re-run by Ray (`max_restarts`,
    `max_task_retries`). When a call still fails because its actor died (those are spent),
    the pool stops using that actor and sends the batch to the others; with none left, the
    items fail.
    """

    def __init__(
        self,
        config: dict[str, Any],
        method: str,
        num_actors: int,
        num_cpus: float,
        num_gpus: float,
        max_restarts: int,
        max_task_retries: int,
        max_batch_size: int,
        max_wait_s: float,
        max_in_flight: int = 2,
    ) -> None:
        if max_batch_size < 1 or max_wait_s < 0 or max_in_flight < 1:
            raise ValueError(
                f"need max_batch_size >= 1, max_wait_s >= 0, max_in_flight >= 1; got "
                f"{max_batch_size}, {max_wait_s}, {max_in_flight}"
            )
        self.method, self.max_batch_size, self.max_wait_s = method, max_batch_size, max_wait_s
        self.max_in_flight = max_in_flight
        resources = (num_actors, num_cpus, num_gpus, max_restarts, max_task_retries)
        self.actors = make_actors(ComponentActor, config, *resources)
        self._actors = [_ActorState(handle) for handle in self.actors]
        self._pending: deque[_Item] = deque()
        self._by_key: dict[Hashable, _Item] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.reset_stats()
        self._thread = threading.Thread(target=self._run, name=f"dispatch-{method}", daemon=True)
        self._thread.start()

    def _enqueue(
        self, args: Sequence[tuple], keys: Sequence[Hashable | None] | None = None
    ) -> list[Future]:
        """Queue one call per argument tuple; one future per tuple, in order."""
        keys = list(keys) if keys is not None else [None] * len(args)
        futures = [Future() for _ in args]
        with self._cond:
            if self._closed:
                raise RuntimeError(f"the {self.method!r} pool is shut down")
            now = time.monotonic()
            for item_args, key, future in zip(args, keys, futures, strict=True):
                self._counts["requests"] += 1
                item = self._by_key.get(key) if key is not None else None
                if item is not None:
                    self._counts["deduplicated"] += 1
                else:
                    item = _Item(tuple(item_args), key, now)
                    self._pending.append(item)
                    if key is not None:
                        self._by_key[key] = item
                item.futures.append(future)
            self._cond.notify_all()
        return futures

    def stats(self) -> dict[str, Any]:
        """Since start or `reset_stats`: per-actor busy fraction (seconds inside the component's
        method / wall seconds; a batch counts when it finishes), requests, deduplicated,
        served (unique items answered), failed, batches and mean batch size."""
        with self._cond:
            wall = max(time.monotonic() - self._since, 1e-9)
            actors = [a.report(wall) for a in self._actors]
            batches = sum(a.batches for a in self._actors)
            items = sum(a.items for a in self._actors)
            return {
                "actors": actors,
                **self._counts,
                "batches": batches,
                "mean_batch_size": items / batches if batches else 0.0,
                "wall_s": wall,
            }

    def reset_stats(self) -> None:
        with self._cond:
            self._since = time.monotonic()
            self._counts = dict.fromkeys(("requests", "deduplicated", "served", "failed"), 0)
            for actor in self._actors:
                actor.busy_s, actor.batches, actor.items = 0.0, 0, 0

    def shutdown(self) -> None:
        """Stop dispatching and kill the actors; unanswered requests fail. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            orphans = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        self._thread.join()
        self._finish(orphans, error=RuntimeError(f"the {self.method!r} pool was shut down"))
        kill_actors(self.actors)  # in-flight batches fail through their callbacks

    def __enter__(self) -> BatchedActorGroup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def _run(self) -> None:
        while True:
            with self._cond:
                picked = self._next_batch()
            if picked is None:
                return
            actor, batch = picked
            ref = actor.handle.call_batch.remote(self.method, [item.args for item in batch])
            # `r=ref` keeps the ObjectRef alive until its result has been read
            ref.future().add_done_callback(
                lambda done, a=actor, b=batch, r=ref: self._on_done(a, b, done)
            )

    def _on_done(self, actor: _ActorState, batch: list[_Item], done: Future) -> None:
        """Ray swallows callback errors: turn a bug here into failed items, never a hang."""
        try:
            self._done(actor, batch, done)
        except Exception as error:
            self._finish(batch, error=error)

    def _next_batch(self) -> tuple[_ActorState, list[_Item]] | None:
        """Wait (holding the condition) until a batch may leave; None once closed."""
        while not self._closed:
            live = [a for a in self._actors if a.alive and a.in_flight < self.max_in_flight]
            if self._pending and live:
                head = self._pending[0]
                wait = head.arrival + self.max_wait_s - time.monotonic()
                if head.alone or len(self._pending) >= self.max_batch_size or wait <= 0:
                    actor = min(live, key=lambda a: (a.in_flight, a.busy_s))
                    size = 1 if head.alone else self.max_batch_size
                    batch = [self._pending.popleft()]
                    while self._pending and len(batch) < size and not self._pending[0].alone:
                        batch.append(self._pending.popleft())
                    actor.in_flight += 1
                    return actor, batch
                self._cond.wait(wait)
            else:
                self._cond.wait()
        return None

    def _done(self, actor: _ActorState, batch: list[_Item], done: Future) -> None:
        """Runs in a Ray callback thread when a batch's ObjectRef resolves."""
        error = done.exception()
        with self._cond:
            actor.in_flight -= 1
            if error is None:
                results, seconds = done.result()
                actor.busy_s += seconds
                actor.batches += 1
                actor.items += len(batch)
            elif self._closed:
                pass  # failed below
            elif isinstance(error, RayActorError):
                actor.alive = False  # Ray's restarts and task retries for it are spent
                if any(a.alive for a in self._actors):
                    self._pending.extendleft(reversed(batch))
                    batch = []
            elif len(batch) > 1:  # find the item at fault: retry each alone, first in line
                for item in batch:
                    item.alone = True
                self._pending.extendleft(reversed(batch))
                batch = []
            self._cond.notify_all()
        self._finish(batch, results if error is None else None, error)

    def _finish(
        self,
        items: list[_Item],
        results: list[Any] | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Settle every caller's future for `items`: one result per item, or `error` for all."""
        with self._cond:
            self._counts["served" if error is None else "failed"] += len(items)
            for item in items:
                if item.key is not None and self._by_key.get(item.key) is item:
                    del self._by_key[item.key]
        for index, item in enumerate(items):
            for future in item.futures:
                with suppress(InvalidStateError):  # cancelled by its caller
                    if error is None:
                        future.set_result(results[index])
                    else:
                        future.set_exception(error)
