"""Fault injection for chaos runs (`benchmarks/chaos.py`): testbed components that fail on cue.

A real generator hangs when a GPU kernel never returns; `HangingGenerator` does the same on
purpose, once, when a trigger file appears, so a run can show that the pool's time-out
restarts the actor and re-sends the work. The same held call is how a kill is made to land
mid-call: the injector arms the trigger (`arm`), waits until a call holds (`wait_until_held`
names its actor), then kills that actor, which is sure to be busy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray

from itk_rl.formats.score import JudgeScore
from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams
from itk_rl.interfaces.generator import RenderRequest
from itk_rl.testbed.generator import TestbedGenerator
from itk_rl.testbed.judge import TestbedJudge

POLL_S = 0.05


def hold_on_trigger(trigger: Path) -> None:
    """Return at once, unless `trigger` exists: then take it (one call in all takes it, on
    whichever actor), write `<trigger>.held` with this actor's name, and never return."""
    try:
        trigger.unlink()
    except FileNotFoundError:
        return
    Path(f"{trigger}.held").write_text(ray.get_runtime_context().get_actor_name() or "")
    while True:  # held until the actor is killed
        time.sleep(3600)


def arm(trigger: Path) -> None:
    """The next call that reaches `hold_on_trigger(trigger)` holds."""
    Path(f"{trigger}.held").unlink(missing_ok=True)
    trigger.touch()


def wait_until_held(trigger: Path, timeout_s: float = 300.0) -> str:
    """Wait until a call holds on the armed `trigger`; returns the name of the actor that runs
    it (its marker is removed, so the trigger can be armed again)."""
    held = Path(f"{trigger}.held")
    deadline = time.monotonic() + timeout_s
    while not held.exists() or not held.read_text():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no call took the trigger {trigger} within {timeout_s:g} s")
        time.sleep(POLL_S)
    name = held.read_text()
    held.unlink()
    return name


class HangingGenerator(TestbedGenerator):
    """The testbed generator, whose first call after `trigger` appears never returns
    (`hold_on_trigger`)."""

    def __init__(self, trigger: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trigger = Path(trigger)

    def __call__(self, requests: Sequence[RenderRequest]) -> list[np.ndarray]:
        hold_on_trigger(self.trigger)
        return super().__call__(requests)


class HangingJudge(TestbedJudge):
    """The testbed judge, whose first call after `trigger` appears never returns
    (`hold_on_trigger`)."""

    def __init__(self, trigger: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trigger = Path(trigger)

    def score_batch(
        self,
        instructions: Sequence[str],
        afters: Sequence[np.ndarray],
        befores: Sequence[np.ndarray | None] | None = None,
    ) -> list[JudgeScore]:
        hold_on_trigger(self.trigger)
        return super().score_batch(instructions, afters, befores)


class HangingEngine:
    """A rollout engine (`inner`, built by Hydra from the recipe) whose first `generate` after
    `trigger` appears never returns (`hold_on_trigger`): a rollout worker killed then dies
    mid-call."""

    def __init__(self, trigger: str, inner: Any) -> None:
        self.trigger = Path(trigger)
        self.inner = inner

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        hold_on_trigger(self.trigger)
        return self.inner.generate(requests, params)

    def update_weights(self, state_dict: dict[str, Any]) -> Any:
        return self.inner.update_weights(state_dict)
