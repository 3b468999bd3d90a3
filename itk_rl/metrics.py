"""Training metrics: TensorBoard event files, and one progress line per step on the console."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter


@dataclass(frozen=True)
class SampleView:
    """One rollout response to show: the critic's two input images and what it wrote."""

    before: np.ndarray
    after: np.ndarray
    text: str


class MetricsLog:
    """Scalars and sample images under `log_dir` (open it with `tensorboard --logdir`)."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        """`purge_step`: drop events logged at or after it (a resumed run redoes those steps)."""
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def samples(self, step: int, views: Sequence[SampleView]) -> None:
        """Each view as one image (before | after, side by side) plus the critic's text."""
        for index, view in enumerate(views):
            height = max(view.before.shape[0], view.after.shape[0])
            pair = np.full(
                (height, view.before.shape[1] + view.after.shape[1] + 2, 3), 128, np.uint8
            )
            pair[: view.before.shape[0], : view.before.shape[1]] = view.before
            pair[: view.after.shape[0], view.before.shape[1] + 2 :] = view.after
            self.writer.add_image(f"samples/{index}", pair, step, dataformats="HWC")
            self.writer.add_text(f"samples/{index}", f"```\n{view.text}\n```", step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def progress_line(step: int, total: int, metrics: Mapping[str, float], keys: Sequence[str]) -> str:
    """`step 3/20 · reward/total 0.612 · …` with the chosen keys that are present."""
    shown = [f"{key} {metrics[key]:.3g}" for key in keys if key in metrics]
    return " · ".join([f"step {step}/{total}", *shown])
