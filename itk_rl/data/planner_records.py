"""Planner-SFT pairs: (a truncated interleaved sequence → the rest of the plan), on disk.

The paper's Planner-SFT data keeps every teacher trajectory and cuts its interleaved sequence
(request, then per step its text and image) at a random step: the input is the request and the
steps done so far, the target the planner's answer for the steps still to come. Cut 0 is the
ordinary example (nothing done yet, the whole plan as target).

Columns:
    id              trajectory id (the prompt id)
    cut             steps already done (0 … num_steps − 1)
    num_steps       steps in the whole plan
    request         the user's request text
    request_images  the user's input images (often none)
    prefix_texts    each done step's shown text (`auxiliary_text`, else `instruction`)
    prefix_images   each done step's final image, in order (as many as prefix_texts)
    target          `format_planner_answer` of the remaining steps, which keep their step
                    numbers (cut + 1 …) so the answer continues the sequence it was cut from
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from itk_rl.data.critic_records import read_parquet, write_parquet
from itk_rl.formats.images import RecordError, check_image, decode_image, encode_png, require

if TYPE_CHECKING:
    import datasets


@dataclass(frozen=True, eq=False)
class PlannerPair:
    """One Planner-SFT example (fields as the module docstring's columns); images `[H, W, 3]`."""

    id: str
    cut: int
    num_steps: int
    request: str
    request_images: tuple[np.ndarray, ...]
    prefix_texts: tuple[str, ...]
    prefix_images: tuple[np.ndarray, ...]
    target: str

    def __post_init__(self) -> None:
        if not 0 <= self.cut < self.num_steps:
            raise ValueError(f"pair {self.id}: cut {self.cut} not in [0, {self.num_steps})")
        if not len(self.prefix_texts) == len(self.prefix_images) == self.cut:
            raise ValueError(
                f"pair {self.id}: cut {self.cut} needs as many prefix texts and images, got "
                f"{len(self.prefix_texts)} and {len(self.prefix_images)}"
            )
        for i, image in enumerate((*self.request_images, *self.prefix_images)):
            check_image(image, f"pair {self.id} image {i}")

    def to_row(self) -> dict[str, Any]:
        def cells(images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
            return [{"bytes": encode_png(image), "path": None} for image in images]

        return {
            "id": self.id,
            "cut": self.cut,
            "num_steps": self.num_steps,
            "request": self.request,
            "request_images": cells(self.request_images),
            "prefix_texts": list(self.prefix_texts),
            "prefix_images": cells(self.prefix_images),
            "target": self.target,
        }

    @classmethod
    def from_row(cls, row: Any, where: str = "row") -> PlannerPair:
        def images(key: str) -> tuple[np.ndarray, ...]:
            cells = require(row, key, where)
            return tuple(decode_image(c, f"{where}.{key}[{i}]") for i, c in enumerate(cells))

        try:
            return cls(
                id=str(require(row, "id", where)),
                cut=int(require(row, "cut", where)),
                num_steps=int(require(row, "num_steps", where)),
                request=str(require(row, "request", where)),
                request_images=images("request_images"),
                prefix_texts=tuple(str(t) for t in require(row, "prefix_texts", where)),
                prefix_images=images("prefix_images"),
                target=str(require(row, "target", where)),
            )
        except (TypeError, ValueError) as error:
            if isinstance(error, RecordError):
                raise
            raise RecordError(f"{where}: {error}") from error


def planner_pair_features() -> datasets.Features:
    import datasets

    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "cut": datasets.Value("int32"),
            "num_steps": datasets.Value("int32"),
            "request": datasets.Value("string"),
            "request_images": datasets.List(datasets.Image()),
            "prefix_texts": datasets.List(datasets.Value("string")),
            "prefix_images": datasets.List(datasets.Image()),
            "target": datasets.Value("string"),
        }
    )


def save_planner_pairs(pairs: Sequence[PlannerPair], path: str | Path) -> Path:
    return write_parquet([p.to_row() for p in pairs], planner_pair_features(), path)


def load_planner_pairs(path: str | Path) -> list[PlannerPair]:
    """Read and validate a Planner-SFT parquet file; RecordError names the row and field."""
    dataset = read_parquet(path, planner_pair_features(), "planner SFT pairs")
    return [PlannerPair.from_row(row, where=f"{path} row {i}") for i, row in enumerate(dataset)]
