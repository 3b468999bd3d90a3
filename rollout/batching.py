"""The driver-side batcher the generator and judge pools share (`BatchedActorGroup`).

A pool keeps one driver-side dispatcher thread that collects submissions from any number of
callers (threads, or asyncio code through `asyncio.wrap_future`), cuts them into batches and
sends each batch to the least-busy actor; Ray resolves the batch's ObjectRef through
`ObjectRef.future()` callbacks, which settle the callers' futures. ObjectRefs alone would not
do: a batch does not exist yet when a request is submitted, so there is no ref to return, and
deduplication and per-item failure need a place that sees every request.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

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


@dataclass(eq=False)
class _Item:
    """One unique request: its argument tuple and every caller's future waiting for it."""

    args: tuple
    key: Hashable | None
    arrival: float
    futures: list[Future] = field(default_factory=list)
    alone: bool = False  # its batch failed: it goes alone, to find the item at fault
    tries: int = 0  # calls of it lost because their actor died or hung
    avoid: _ActorState | None = None  # that actor: the next try goes elsewhere if it can


@dataclass(eq=False)
class _Call:
    """One call in flight on one actor: a batch, or a `ready` probe (no items) after the actor
    was restarted. `settled` once answered or given up (a late answer is then ignored)."""

    actor: _ActorState
    items: list[_Item]
    deadline: float
    settled: bool = False


@dataclass(eq=False)
class _ActorState:
    handle: ray.actor.ActorHandle
    name: str
    calls: list[_Call] = field(default_factory=list)  # in flight, in the order they run
    alive: bool = True
    probing: bool = False  # died or hung: no batch until its `ready` answers
    lost_at: float = 0.0  # when it died or hung (while probing): its restart deadline counts
    gone: str = ""  # gone for good: why (it is left out once `alive` is False)
    busy_s: float = 0.0
    batches: int = 0
    items: int = 0
    timeouts: int = 0

    def report(self, wall_s: float) -> dict[str, Any]:
        fraction = min(1.0, self.busy_s / wall_s)
        names = ("busy_s", "batches", "items", "alive", "timeouts")
        return {"busy_fraction": fraction, **{name: getattr(self, name) for name in names}}


class BatchedActorGroup:
    """`num_actors` `ComponentActor`s built from `config`, fed with dynamic batches of calls to
    the component's `method` (the generator pool and the judge pool).

    A batch leaves when `max_batch_size` items are waiting, or when the oldest has waited
    `max_wait_s`, and only while some live actor has fewer than `max_in_flight` batches (so
    under load requests pile up into full batches instead of small ones queueing on busy
    actors). It goes to the live actor with the fewest batches in flight, then the least busy.

    Requests with the same `key` that are waiting or in flight are served once; every caller
    gets the result. Failures, none of which is ever answered with a made-up result:
    - a batch that raises: its items are retried one by one, so only the item at fault fails
      (its future carries the exception);
    - an actor that dies mid-call: Ray restarts it (`max_restarts`); the pool sends the lost
      batch's items to another live actor and probes the dead one with `ready` before using it
      again (a probe that fails: restarts spent, the actor is left out for good);
    - a call not answered within `call_timeout_s` (None: no limit; a batch queued behind
      another on its actor gets its own limit after that one's): the actor is taken as hung,
      killed and restarted by Ray, and every batch in flight on it is sent elsewhere, as for a
      death;
    - an actor not back within `restart_timeout_s` of its death or hang (its node died and no
      live node has its resources, or its labels): it is killed for good (Ray stops trying to
      place it) and the pool goes on with the others; an actor Ray placed on another node in
      time rejoins.
    An item whose call was running when its actor died or hung more than `max_task_retries`
    times fails with that error (`TimeoutError` for a hang; calls queued behind it on that actor
    never ran and are re-sent as they are). With no actor left, every waiting item and every
    later request fails with `ActorGroupLost`, naming the actors and what no live node has.
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
        resources: Mapping[str, float] | None = None,
        label_selector: Mapping[str, str] | None = None,
        call_timeout_s: float | None = None,
        restart_timeout_s: float = RESTART_TIMEOUT_S,
        group: str = "pool",
    ) -> None:
        if max_batch_size < 1 or max_wait_s < 0 or max_in_flight < 1:
            raise ValueError(
                f"need max_batch_size >= 1, max_wait_s >= 0, max_in_flight >= 1; got "
                f"{max_batch_size}, {max_wait_s}, {max_in_flight}"
            )
        if call_timeout_s is not None and call_timeout_s <= 0:
            raise ValueError(f"call_timeout_s must be > 0 or None, got {call_timeout_s}")
        if restart_timeout_s <= 0:
            raise ValueError(f"restart_timeout_s must be > 0, got {restart_timeout_s}")
        self.method, self.max_batch_size, self.max_wait_s = method, max_batch_size, max_wait_s
        self.max_in_flight, self.max_task_retries = max_in_flight, max_task_retries
        self.call_timeout_s, self.restart_timeout_s = call_timeout_s, restart_timeout_s
        self.group, self._needs = group, (num_cpus, num_gpus, resources, label_selector)
        # Ray re-runs no call itself (0 task retries): the pool re-sends lost batches, to
        # another actor where it can, and knows which call is a hung one's re-run.
        counts = (num_actors, num_cpus, num_gpus, max_restarts, 0)
        self.actors, self.names = make_actors(
            ComponentActor, config, *counts, resources, label_selector, group=group
        )
        self._actors = [_ActorState(h, n) for h, n in zip(self.actors, self.names, strict=True)]
        self._lost: ActorGroupLost | None = None  # set once no actor is left
        self._pending: deque[_Item] = deque()
        self._by_key: dict[Hashable, _Item] = {}
        self._probes: deque[_Call] = deque()  # to send: actors that died or hung
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
            if self._lost is not None:
                self._counts["requests"] += len(args)
                self._counts["failed"] += len(args)
                for future in futures:
                    future.set_exception(self._lost)
                return futures
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
        method / wall seconds; a batch counts when it finishes) and time-outs, requests,
        deduplicated, served (unique items answered), failed, retried (items re-sent after
        their actor died or hung), timeouts, batches and mean batch size."""
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
            names = ("requests", "deduplicated", "served", "failed", "retried", "timeouts")
            self._counts = dict.fromkeys(names, 0)
            for actor in self._actors:
                actor.busy_s, actor.batches, actor.items, actor.timeouts = 0.0, 0, 0, 0

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
            call = picked
            if call.items:
                args = [item.args for item in call.items]
                ref = call.actor.handle.call_batch.remote(self.method, args)
            else:
                ref = call.actor.handle.ready.remote()
            # `r=ref` keeps the ObjectRef alive until its result has been read
            ref.future().add_done_callback(lambda done, c=call, r=ref: self._on_done(c, done))

    def _on_done(self, call: _Call, done: Future) -> None:
        """Ray swallows callback errors: turn a bug here into failed items, never a hang. It
        runs on a thread of Ray's own, where a Ray call (`ray.kill`, `ray.nodes`) deadlocks:
        those are left to the dispatcher thread."""
        try:
            self._done(call, done)
        except Exception as error:
            self._finish(call.items, error=error)

    def _deadline(self, actor: _ActorState, now: float) -> float:
        """When a batch sent now to `actor` is overdue: `call_timeout_s` after it can start."""
        if self.call_timeout_s is None:
            return float("inf")
        start = max([now, *(call.deadline for call in actor.calls)])
        return start + self.call_timeout_s

    def _send(self, actor: _ActorState, items: list[_Item]) -> _Call:
        """Record a batch call to `actor` (hold the condition); `_run` makes it."""
        call = _Call(actor, items, self._deadline(actor, time.monotonic()))
        actor.calls.append(call)
        return call

    def _next_batch(self) -> _Call | None:
        """Wait (holding the condition) until a call may leave; None once closed. Overdue
        calls are handled on the way (their actors killed, their items sent back)."""
        while not self._closed:
            now = time.monotonic()
            self._expire_overdue(now)
            while self._probes:
                probe = self._probes.popleft()
                if not probe.settled:  # else its actor was left out meanwhile
                    return probe
            live = [
                a
                for a in self._actors
                if a.alive and not a.probing and len(a.calls) < self.max_in_flight
            ]
            wait = min([call.deadline for a in self._actors for call in a.calls] or [now + 3600])
            wait -= now
            if self._pending and live:
                head = self._pending[0]
                fill = head.arrival + self.max_wait_s - now
                if head.alone or len(self._pending) >= self.max_batch_size or fill <= 0:
                    others = [a for a in live if a is not head.avoid] or live
                    actor = min(others, key=lambda a: (len(a.calls), a.busy_s))
                    size = 1 if head.alone else self.max_batch_size
                    batch = [self._pending.popleft()]
                    while self._pending and len(batch) < size and not self._pending[0].alone:
                        batch.append(self._pending.popleft())
                    return self._send(actor, batch)
                wait = min(wait, fill)
            self._cond.wait(min(max(wait, 0.0), 3600.0))
        return None

    def _expire_overdue(self, now: float) -> None:
        """An actor with an overdue call is taken as hung: killed (Ray restarts it), its calls
        given up and their items sent back. One whose probe failed, or is overdue (it was not
        back within `restart_timeout_s`), is left out (hold the condition)."""
        for actor in self._actors:
            overdue = any(call.deadline <= now for call in actor.calls)
            if actor.alive and actor.gone:
                self._leave_out(actor, actor.gone)
            elif actor.alive and overdue and actor.probing:
                self._leave_out(
                    actor, f"was not back within restart_timeout_s={self.restart_timeout_s:g} s"
                )
            elif actor.alive and overdue:
                self._counts["timeouts"] += 1
                actor.timeouts += 1
                ray.kill(actor.handle, no_restart=False)
                hung = TimeoutError(
                    f"a {self.method!r} call was not answered within call_timeout_s="
                    f"{self.call_timeout_s}; its actor was restarted"
                )
                self._lose_calls(actor, hung)

    def _lose_calls(self, actor: _ActorState, error: BaseException) -> None:
        """Give up `actor`'s calls in flight (hold the condition): their items go back first in
        line, or fail with `error` if lost too often; the actor is probed before it gets more.
        Its probes are due `restart_timeout_s` after it was lost (a restart may load a large
        model); past that it is left out."""
        running = actor.calls[0].items if actor.calls else []  # calls run in order
        lost = [item for call in actor.calls for item in call.items]
        for call in actor.calls:
            call.settled = True
        actor.calls.clear()
        actor.probing, actor.lost_at = True, time.monotonic()
        retry, failed = [], []
        for item in lost:
            item.tries += item in running  # the calls queued behind it never ran
            item.avoid = actor
            (retry if item.tries <= self.max_task_retries else failed).append(item)
        self._counts["retried"] += len(retry)
        self._pending.extendleft(reversed(retry))
        self._cond.notify_all()
        if failed:
            threading.Thread(target=self._finish, args=(failed, None, error), daemon=True).start()
        self._queue_probe(actor)

    def _probe_again(self, actor: _ActorState) -> None:
        with self._cond:
            if not self._closed and actor.probing:
                self._queue_probe(actor)
                self._cond.notify_all()

    def _queue_probe(self, actor: _ActorState) -> None:
        """A `ready` call for the dispatcher to send `actor`, due `restart_timeout_s` after the
        actor was lost (hold the condition)."""
        probe = _Call(actor, [], actor.lost_at + self.restart_timeout_s)
        actor.calls.append(probe)
        self._probes.append(probe)

    def _leave_out(self, actor: _ActorState, why: str) -> None:
        """`actor` is gone for good (hold the condition): killed, so Ray stops trying to place
        it; once no actor is left, every waiting item fails with `ActorGroupLost`."""
        for call in actor.calls:
            call.settled = True
        actor.calls.clear()
        actor.alive, actor.probing, actor.gone = False, False, why
        ray.kill(actor.handle, no_restart=True)
        if any(a.alive for a in self._actors):
            return
        gone = {a.name: a.gone for a in self._actors}
        self._lost = group_lost(self.group, gone, unmet_needs(self.group, *self._needs))
        waiting, self._pending = list(self._pending), deque()
        self._cond.notify_all()
        threading.Thread(target=self._finish, args=(waiting, None, self._lost), daemon=True).start()

    def _done(self, call: _Call, done: Future) -> None:
        """Runs in a Ray callback thread when a call's ObjectRef resolves."""
        error = done.exception()
        items = call.items
        with self._cond:
            if call.settled:  # given up already (its actor hung): the late answer is ignored
                return
            call.settled = True
            actor = call.actor
            actor.calls.remove(call)
            if not items and isinstance(error, ActorUnavailableError):  # still restarting
                threading.Timer(PROBE_INTERVAL_S, self._probe_again, (actor,)).start()
                return
            if not items:  # a probe: the actor is back, or gone for good
                if error is None:
                    actor.probing = False
                else:  # left out by the dispatcher: no Ray call from a Ray callback thread
                    actor.gone = f"died for good ({type(error).__name__})"
                self._cond.notify_all()
                return
            if error is None:
                results, seconds = done.result()
                actor.busy_s += seconds
                actor.batches += 1
                actor.items += len(items)
            elif self._closed:
                pass  # failed below
            elif isinstance(error, RayActorError):  # died mid-call: its items go elsewhere
                call.settled = False  # lost with the actor's other calls
                actor.calls.insert(0, call)
                self._lose_calls(actor, error)
                return
            elif len(items) > 1:  # find the item at fault: retry each alone, first in line
                for item in items:
                    item.alone = True
                self._pending.extendleft(reversed(items))
                items = []
            self._cond.notify_all()
        self._finish(items, results if error is None else None, error)

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
