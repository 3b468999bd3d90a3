"""The generator pool on a local Ray cluster, with the testbed generator.

Test-only components are passed as classes in `_target_` and this module is pickled by value:
Ray workers cannot import test modules by name (pytest's importlib mode, and a `tests`
package from site-packages shadows ours).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import ray

from itk_rl.interfaces.generator import RenderRequest
from itk_rl.rollout.actors import ActorGroupLost
from itk_rl.rollout.pool import GeneratorPool, request_key
from itk_rl.testbed import TestbedGenerator
from itk_rl.testbed.render import render
from itk_rl.testbed.scene import Scene, ShapeObject

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

GENERATOR = {"_target_": "itk_rl.testbed.TestbedGenerator", "image_size": 32, "artifact_prob": 0.5}
BEFORE = render(Scene.of(left=ShapeObject("circle", "red", "large")), (32, 32))
PROMPTS = ["draw a blue square on the right", "draw a crimson disc in the middle"]
EDITS = ["make the circle green", "move the circle to the right", "add a yellow triangle"]


def requests(count: int, offset: int = 0) -> list[RenderRequest]:
    """`count` distinct requests, text-to-image and edits of `BEFORE`, seeds from `offset`."""
    out = []
    for i in range(offset, offset + count):
        if i % 2:
            out.append(RenderRequest(EDITS[i % len(EDITS)], (BEFORE.copy(),), seed=i))
        else:
            out.append(RenderRequest(PROMPTS[i % len(PROMPTS)], seed=i))
    return out


def local(requests: Sequence[RenderRequest], config: dict = GENERATOR) -> list[np.ndarray]:
    kwargs = {key: value for key, value in config.items() if key != "_target_"}
    return TestbedGenerator(**kwargs)(requests)


def make_pool(**overrides: object) -> GeneratorPool:
    options = {
        "generator_config": GENERATOR,
        "num_actors": 2,
        "num_cpus": 0.5,
        "num_gpus": 0,
        "max_batch_size": 4,
        "max_wait_s": 0.0,
        "max_restarts": 0,
        "max_task_retries": 0,
    }
    return GeneratorPool(**{**options, **overrides})


@pytest.fixture(scope="module")
def pool(ray_local: None) -> Iterator[GeneratorPool]:
    """Two actors, batches of up to 8, shared by the tests that kill nothing."""
    with make_pool(max_batch_size=8, max_wait_s=0.2) as pool:
        yield pool


def test_pool_renders_what_the_generator_renders_in_order(pool: GeneratorPool) -> None:
    batch = requests(11)
    pool.reset_stats()
    images = pool.render(batch, timeout=60)
    stats = pool.stats()
    assert len(images) == len(batch)
    for got, want in zip(images, local(batch), strict=True):
        np.testing.assert_array_equal(got, want)
    assert stats["served"] == stats["requests"] == 11 and stats["failed"] == 0
    assert (stats["batches"], stats["mean_batch_size"]) == (2, 5.5)  # 8 at once, 3 after 0.2 s
    fractions = [actor["busy_fraction"] for actor in stats["actors"]]
    assert all(0.0 <= f <= 1.0 for f in fractions) and sum(fractions) > 0


def test_concurrent_single_requests_are_batched(pool: GeneratorPool) -> None:
    batch, start = requests(24, offset=50), threading.Barrier(24)
    results: dict[int, np.ndarray] = {}

    def caller(i: int) -> None:
        start.wait()
        results[i] = pool.render([batch[i]], timeout=60)[0]

    pool.reset_stats()
    threads = [threading.Thread(target=caller, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = pool.stats()
    assert [results[i].tobytes() for i in range(24)] == [x.tobytes() for x in local(batch)]
    assert stats["requests"] == 24 and stats["batches"] <= 6, stats  # 3 when none times out
    assert stats["mean_batch_size"] >= 4


def test_identical_requests_are_rendered_once(ray_local: None) -> None:
    first = RenderRequest("make the circle blue", (BEFORE,), seed=7)
    same = RenderRequest("make the circle blue", (BEFORE.copy(),), seed=7)  # equal pixels
    other = RenderRequest("make the circle blue", (BEFORE,), seed=8)
    assert request_key(first) == request_key(same) != request_key(other)
    # a batch of 2 leaves only when full: `other` completes it only if `same` joined `first`
    with make_pool(num_actors=1, max_batch_size=2, max_wait_s=30.0) as pool:
        futures = pool.submit([first]) + pool.submit([same]) + pool.submit([other])
        images = [future.result(timeout=60) for future in futures]
        stats = pool.stats()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit([first])
    np.testing.assert_array_equal(images[0], images[1])
    np.testing.assert_array_equal(images[0], local([first])[0])
    assert (stats["requests"], stats["deduplicated"], stats["served"]) == (3, 1, 2)
    assert stats["batches"] == 1


class Gate:
    """A named actor the test and a generator meet at: counts arrivals, holds calls until open."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.changed = asyncio.Condition()
        self.opened = asyncio.Event()

    async def arrive(self, what: str) -> None:
        async with self.changed:
            self.counts[what] += 1
            self.changed.notify_all()

    async def reached(self, what: str, count: int) -> int:
        async with self.changed:
            await self.changed.wait_for(lambda: self.counts[what] >= count)
            return self.counts[what]

    async def count(self, what: str) -> int:
        return self.counts[what]

    async def open(self) -> None:
        self.opened.set()

    async def passage(self) -> None:
        await self.opened.wait()


class GatedGenerator(TestbedGenerator):
    """The testbed generator, but each call reports to the gate and waits for it to open."""

    def __init__(self, gate: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.gate = ray.get_actor(gate)
        ray.get(self.gate.arrive.remote("build"))

    def __call__(self, requests: Sequence[RenderRequest]) -> list[np.ndarray]:
        ray.get(self.gate.arrive.remote("call"))
        ray.get(self.gate.passage.remote())
        return super().__call__(requests)


def test_generator_killed_mid_batch_is_restarted_and_nothing_is_lost(ray_local: None) -> None:
    name = f"gate-{uuid.uuid4().hex}"
    gate = ray.remote(Gate).options(name=name).remote()
    config = {**GENERATOR, "_target_": GatedGenerator, "gate": name}
    batch = requests(4)
    with make_pool(
        generator_config=config, num_actors=1, max_restarts=1, max_task_retries=1
    ) as pool:
        futures = pool.submit(batch)
        ray.get(gate.reached.remote("call", 1))  # the batch is inside the generator
        ray.kill(pool.actors[0], no_restart=False)
        ray.get(gate.reached.remote("build", 2))  # the old process is gone: restarted
        ray.get(gate.open.remote())
        images = [future.result(timeout=60) for future in futures]
        stats = pool.stats()
    for got, want in zip(images, local(batch), strict=True):
        np.testing.assert_array_equal(got, want)
    assert ray.get(gate.count.remote("call")) == 2  # the killed call, re-sent once
    assert (stats["served"], stats["failed"], stats["batches"]) == (4, 0, 1)
    ray.kill(gate)


def test_batch_of_an_actor_gone_for_good_goes_to_another(ray_local: None) -> None:
    name = f"gate-{uuid.uuid4().hex}"
    gate = ray.remote(Gate).options(name=name).remote()
    config = {**GENERATOR, "_target_": GatedGenerator, "gate": name}
    batch = requests(4)
    # no restarts; the batch it lost may be sent once more
    with make_pool(generator_config=config, max_batch_size=4, max_task_retries=1) as pool:
        futures = pool.submit(batch)
        ray.get(gate.reached.remote("call", 1))  # inside the first actor (ties go to it)
        ray.kill(pool.actors[0], no_restart=True)
        ray.get(gate.open.remote())
        images = [future.result(timeout=60) for future in futures]
        stats = pool.stats()
    for got, want in zip(images, local(batch), strict=True):
        np.testing.assert_array_equal(got, want)
    assert [actor["alive"] for actor in stats["actors"]] == [False, True]
    assert stats["actors"][1]["items"] == 4 and (stats["served"], stats["failed"]) == (4, 0)
    ray.kill(gate)


class HangingGenerator(TestbedGenerator):
    """The testbed generator, hanging on prompts that say "hang": for good, or only the first
    time (`once`: a marker file is made before hanging), as a GPU stuck in a kernel."""

    def __init__(self, marker: str, once: bool, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.marker, self.once = Path(marker), once

    def __call__(self, requests: Sequence[RenderRequest]) -> list[np.ndarray]:
        if any("hang" in r.prompt for r in requests) and not (self.once and self.marker.exists()):
            self.marker.touch()
            threading.Event().wait()  # never set
        return super().__call__(requests)


def test_a_hung_call_is_given_up_its_actor_restarted_and_its_batch_sent_elsewhere(
    ray_local: None, tmp_path: Path
) -> None:
    # The first call of "hang" never returns: past call_timeout_s its actor is killed and
    # restarted, and the batch goes to the other actor; nothing is lost, and the restarted
    # actor serves again once it answers its probe.
    config = {
        **GENERATOR,
        "_target_": HangingGenerator,
        "marker": str(tmp_path / "m"),
        "once": True,
    }
    batch = [RenderRequest("hang a red circle on the left", seed=1), *requests(3)]
    with make_pool(
        generator_config=config, max_restarts=1, max_task_retries=1, call_timeout_s=2.0
    ) as pool:
        images = [future.result(timeout=60) for future in pool.submit(batch)]
        more = pool.render(requests(8, offset=10), timeout=60)
        stats = pool.stats()
    for got, want in zip(images + more, local(batch + requests(8, offset=10)), strict=True):
        np.testing.assert_array_equal(got, want)
    assert (stats["timeouts"], stats["retried"], stats["failed"]) == (1, 4, 0)
    assert [a["timeouts"] for a in stats["actors"]] == [1, 0]
    assert all(a["alive"] for a in stats["actors"])


def test_a_request_that_hangs_every_actor_fails_with_a_timeout_and_the_rest_are_served(
    ray_local: None, tmp_path: Path
) -> None:
    # "hang" hangs every time: its first try and its one retry (on the other actor) time out,
    # then it fails with TimeoutError, never waited on forever; the other requests are served
    # (those queued behind it never ran: they are re-sent without using up their retries).
    config = {
        **GENERATOR,
        "_target_": HangingGenerator,
        "marker": str(tmp_path / "m"),
        "once": False,
    }
    with make_pool(
        generator_config=config,
        max_batch_size=1,
        max_restarts=2,
        max_task_retries=1,
        call_timeout_s=1.5,
    ) as pool:
        hung = pool.submit([RenderRequest("hang a red circle", seed=1)])[0]
        served = pool.render(requests(4), timeout=60)
        with pytest.raises(TimeoutError, match=r"call_timeout_s=1\.5"):
            hung.result(timeout=60)
        stats = pool.stats()
    assert len(served) == 4 and (stats["timeouts"], stats["failed"]) == (2, 1)


class NeverBackGenerator(TestbedGenerator):
    """The testbed generator whose restart never completes (a model load stuck for good): each
    actor's second build blocks (a file in `folder`, named after the actor, marks its first).
    A prompt "gate:NAME" reports to the `Gate` actor NAME and waits until it opens."""

    def __init__(self, folder: str, **kwargs: object) -> None:
        super().__init__(**kwargs)
        built = Path(folder) / ray.get_runtime_context().get_actor_name()
        if built.exists():
            threading.Event().wait()  # never set
        built.touch()

    def __call__(self, requests: Sequence[RenderRequest]) -> list[np.ndarray]:
        for request in requests:
            if request.prompt.startswith("gate:"):
                gate = ray.get_actor(request.prompt.removeprefix("gate:"))
                ray.get(gate.arrive.remote("call"))
                ray.get(gate.passage.remote())
        return super().__call__(requests)


def test_an_actor_not_back_in_time_is_left_out_and_with_none_left_requests_fail_naming_them(
    ray_local: None, tmp_path: Path
) -> None:
    # Actor 0 dies mid-call and never comes back: its call goes to actor 1, which serves on
    # alone. Then actor 1 dies mid-call too: past restart_timeout_s the waiting request and
    # every later one fail with ActorGroupLost naming both actors, instead of waiting forever.
    gates = [f"gate-{uuid.uuid4().hex}" for _ in range(2)]
    first, second = (ray.remote(Gate).options(name=name).remote() for name in gates)
    config = {**GENERATOR, "_target_": NeverBackGenerator, "folder": str(tmp_path)}
    with make_pool(
        generator_config=config, max_restarts=1, max_task_retries=2, restart_timeout_s=0.5
    ) as pool:
        names = sorted(path.name for path in tmp_path.iterdir())
        held = pool.submit([RenderRequest(f"gate:{gates[0]}", seed=0)])[0]
        ray.get(first.reached.remote("call", 1))  # inside actor 0 (ties go to it)
        ray.kill(pool.actors[0], no_restart=False)
        ray.get(first.reached.remote("call", 2))  # sent again, to actor 1
        ray.get(first.open.remote())
        held.result(timeout=60)
        served = pool.render(requests(4), timeout=60)
        blocked = pool.submit([RenderRequest(f"gate:{gates[1]}", seed=1)])[0]
        ray.get(second.reached.remote("call", 1))  # inside actor 1, the only one left
        ray.kill(pool.actors[1], no_restart=False)
        with pytest.raises(ActorGroupLost) as lost:
            blocked.result(timeout=60)
        later = pool.submit(requests(1, offset=4))[0]
        stats = pool.stats()
    for got, want in zip(served, local(requests(4)), strict=True):
        np.testing.assert_array_equal(got, want)
    message = str(lost.value)
    assert message.startswith("no generator actor is left (")
    assert all(f"{name} was not back within restart_timeout_s=0.5 s" in message for name in names)
    assert "generator needs {'CPU': 0.5}; a live node has it" in message
    assert later.exception(timeout=0) is lost.value
    assert [a["alive"] for a in stats["actors"]] == [False, False]
    assert (stats["served"], stats["failed"]) == (5, 2)
    for gate in (first, second):
        ray.kill(gate)
