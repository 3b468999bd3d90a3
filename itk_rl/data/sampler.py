"""Shuffled batches over a fixed list of records, with a position that checkpoints can hold.

Epoch e's order is a permutation seeded by (seed, e), so the position (epoch, cursor) is all a
checkpoint needs to continue with exactly the batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BatchSampler:
    """Draws `batch_size` indices into a dataset of `num_records`, epoch after epoch.

    A batch never spans two epochs' orders: it takes the rest of the current epoch first, then
    continues in the next one.
    """

    num_records: int
    batch_size: int
    seed: int = 0
    epoch: int = 0
    cursor: int = 0

    def __post_init__(self) -> None:
        if self.num_records < 1:
            raise ValueError("the training data is empty")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_records)

    def next_batch(self) -> list[int]:
        indices: list[int] = []
        while len(indices) < self.batch_size:
            order = self._order(self.epoch)
            take = order[self.cursor : self.cursor + self.batch_size - len(indices)]
            indices.extend(int(i) for i in take)
            self.cursor += len(take)
            if self.cursor == self.num_records:
                self.epoch, self.cursor = self.epoch + 1, 0
        return indices

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
