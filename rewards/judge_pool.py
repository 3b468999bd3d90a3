"""Judge actors: K actors, each holding one judge, scoring renders as they stream in.

A judge is anything with `score_batch(instructions, afters, befores) -> list[JudgeScore]`
(the testbed judge, a VLM judge, an API judge). Scoring requests are batched like renders in
the generator pool, and callers get `concurrent.futures.Future`s (the async style of every
actor group: see `itk_rl.rollout.actors`), so a render can go to a judge the moment it is done.

A failure is visible per item: when a batch raises, its items are scored one by one and only
the item at fault gets the exception on its future. No score is ever made up; retrying or
dropping the sample is the driver's choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from itk_rl.formats.score import JudgeScore
from itk_rl.rollout.actors import RESTART_TIMEOUT_S
from itk_rl.rollout.batching import BatchedActorGroup


class JudgePool(BatchedActorGroup):
    """`num_actors` actors, each building one judge from `judge_config` (a plain dict with
    `_target_`). Resources, placement, restarts, time-outs and batching as in `GeneratorPool`."""

    def __init__(
        self,
        judge_config: dict[str, Any],
        num_actors: int,
        num_cpus: float,
        num_gpus: float,
        max_restarts: int,
        max_task_retries: int,
        max_batch_size: int = 16,
        max_wait_s: float = 0.01,
        max_in_flight: int = 2,
        resources: Mapping[str, float] | None = None,
        label_selector: Mapping[str, str] | None = None,
        call_timeout_s: float | None = None,
        restart_timeout_s: float = RESTART_TIMEOUT_S,
    ) -> None:
        super().__init__(
            config=judge_config,
            method="score_batch",
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
            group="judge",
        )

    def submit(
        self, instruction: str, after: np.ndarray, before: np.ndarray | None = None
    ) -> Future[JudgeScore]:
        """Score `after` as `instruction` applied to `before` (None: text-to-image)."""
        return self._enqueue([(instruction, after, before)])[0]

    def score_batch(
        self,
        instructions: Sequence[str],
        afters: Sequence[np.ndarray],
        befores: Sequence[np.ndarray | None] | None = None,
        timeout: float | None = None,
    ) -> list[JudgeScore]:
        """Scores for parallel lists, in order; raises the first item's failure, if any."""
        befores = list(befores) if befores is not None else [None] * len(instructions)
        if not len(instructions) == len(afters) == len(befores):
            raise ValueError(
                f"score_batch needs equal lengths, got {len(instructions)} instructions, "
                f"{len(afters)} afters, {len(befores)} befores"
            )
        futures = self._enqueue(list(zip(instructions, afters, befores, strict=True)))
        return [future.result(timeout) for future in futures]
