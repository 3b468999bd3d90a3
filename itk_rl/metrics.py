"""Metrics and progress: TensorBoard event files, one progress line per training step, and
progress reports for long work over many items (a data build's prompts)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


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


class ProgressReport:
    """Progress over `total` items, never a line per item: a live bar on a terminal; elsewhere
    (Ray job logs, CI, files, where a bar's carriage returns make one endless line) a summary
    line every `every_s` seconds and one at the end."""

    def __init__(
        self,
        total: int,
        what: str,
        *,
        stream: TextIO | None = None,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.what, self.every_s, self.clock = total, what, every_s, clock
        self.stream = stream if stream is not None else sys.stdout
        self.done = self.failed = 0
        self.start = self.last_line = clock()
        interactive = self.stream.isatty()
        self.bar = tqdm(total=total, desc=what, file=self.stream) if interactive else None

    def advance(self, ok: bool = True) -> None:
        """One item done (`ok` False: it failed; failures are counted, not hidden)."""
        self.done += 1
        self.failed += not ok
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(failed=self.failed, refresh=False)
        elif self.clock() - self.last_line >= self.every_s:
            self._line()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            self._line()

    def _line(self) -> None:
        self.last_line = now = self.clock()
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        left = f", about {(self.total - self.done) / rate / 60:.0f} min left" if rate else ""
        share = 100 * self.done / max(self.total, 1)
        print(
            f"{self.what}: {self.done}/{self.total} ({share:.0f} %), {self.failed} failed, "
            f"{rate:.1f}/s{left if self.done < self.total else ''}",
            file=self.stream,
            flush=True,
        )
