"""Fault injection for chaos runs (`benchmarks/chaos.py`): testbed components that fail on cue.

A real generator hangs when a GPU kernel never returns; `HangingGenerator` does the same on
purpose, once, when a trigger file appears, so a run can show that the pool's time-out
restarts the actor and re-sends the work.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from itk_rl.interfaces.generator import RenderRequest
from itk_rl.testbed.generator import TestbedGenerator


class HangingGenerator(TestbedGenerator):
    """The testbed generator, whose first call after `trigger` appears never returns; the
    trigger is removed by that call, so one call hangs in all, on whichever actor takes it."""

    def __init__(self, trigger: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trigger = Path(trigger)

    def __call__(self, requests: Sequence[RenderRequest]) -> list[np.ndarray]:
        try:
            self.trigger.unlink()
        except FileNotFoundError:
            return super().__call__(requests)
        while True:  # hangs until the actor is killed
            time.sleep(3600)
