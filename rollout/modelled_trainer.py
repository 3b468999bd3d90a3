"""A trainer group whose update lasts as long as a latency model says: the 8B update of a
GPU cluster, simulated on a CPU around the tiny trainer (`benchmarks/pipeline_overlap.py`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from itk_rl.rollout.latency import LatencyModel, TokenCounts, stream

if TYPE_CHECKING:  # the trainer layer sits beside this one; it is handed in, not imported
    from itk_rl.trainer.batch import TrainSample
    from itk_rl.trainer.group import TrainerGroup


class ModelledTrainer:
    """The tiny trainer group, its update phase (log-probs + update) lasting as long as `model`
    says for the step's tokens as the modelled critic counts them (`counts`): the log-probs and
    the update run for real, so the tiny critic learns, then it sleeps the rest. The gather for
    weight sync is real and small (the modelled engines charge the load)."""

    def __init__(self, group: TrainerGroup, model: LatencyModel, counts: TokenCounts) -> None:
        self.group, self.model, self.counts = group, model, counts
        self._rng = stream(model.seed, 0)
        self._began = 0.0

    @property
    def world_size(self) -> int:
        return self.group.world_size

    def compute_logprobs(self, samples: Sequence[TrainSample]) -> list[np.ndarray]:
        self._began = time.perf_counter()
        return self.group.compute_logprobs(samples)

    def update(self, samples: Sequence[TrainSample], *args: Any, **kwargs: Any) -> dict:
        metrics = self.group.update(samples, *args, **kwargs)
        tokens = sum(
            self.counts.prompt(s.messages, len(s.images))
            + self.counts.output(len(s.response_ids), "")
            for s in samples
        )
        rest = self._began + self.model.seconds(tokens, self._rng) - time.perf_counter()
        time.sleep(max(0.0, rest))
        return metrics

    def state_dict_for_sync(self) -> dict:
        return self.group.state_dict_for_sync()

    def shutdown(self) -> None:
        self.group.shutdown()
