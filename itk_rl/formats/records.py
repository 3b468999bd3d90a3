"""The Critic-RL / Critic-SFT record, with exactly the fields of DESIGN §1.

`origin_prompt` is the planner's prompt for the step, `rewritten_prompt` the prompt the
attempt actually used, `origin_image` the image before the step (a white canvas for step 1),
`edited_image` the image after it, and `evaluation` the judge's scores of the edited image
against the original prompt plus the success label. The step-wise reward compares a re-render
of the critic's refinement against `evaluation.semantics` / `evaluation.quality`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from itk_rl.formats.images import (
    ImageStore,
    RecordError,
    as_store,
    check_image,
    decode_image,
    encode_png,
    require,
)

if TYPE_CHECKING:
    import datasets

SCORE_RANGE = (0.0, 10.0)


@dataclass(frozen=True)
class Evaluation:
    """Judge scores on 0–10 (SC and PQ) of the edited image, and whether the step succeeded."""

    semantics: float
    quality: float
    success: bool

    def __post_init__(self) -> None:
        for name in ("semantics", "quality"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"evaluation.{name} must be a number, got {type(value).__name__}")
            if not (math.isfinite(value) and SCORE_RANGE[0] <= value <= SCORE_RANGE[1]):
                raise ValueError(f"evaluation.{name} must be within 0–10, got {value}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.success, (bool, np.bool_)):
            raise TypeError(f"evaluation.success must be a bool, got {type(self.success).__name__}")
        object.__setattr__(self, "success", bool(self.success))

    def to_dict(self) -> dict[str, Any]:
        return {"semantics": self.semantics, "quality": self.quality, "success": self.success}

    @classmethod
    def from_dict(cls, data: Any, where: str = "evaluation") -> Evaluation:
        try:
            return cls(
                semantics=require(data, "semantics", where),
                quality=require(data, "quality", where),
                success=require(data, "success", where),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, RecordError):
                raise
            raise RecordError(f"{where}: {exc}") from exc


@dataclass(frozen=True, eq=False)
class CriticSample:
    """One critic training record; images are `[H, W, 3]` uint8 arrays."""

    origin_prompt: str
    rewritten_prompt: str
    origin_image: np.ndarray
    edited_image: np.ndarray
    evaluation: Evaluation

    def __post_init__(self) -> None:
        for name in ("origin_prompt", "rewritten_prompt"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str, got {type(getattr(self, name)).__name__}")
        check_image(self.origin_image, "origin_image")
        check_image(self.edited_image, "edited_image")
        if not isinstance(self.evaluation, Evaluation):
            raise TypeError(
                f"evaluation must be an Evaluation, got {type(self.evaluation).__name__}"
            )

    def to_json_dict(self, images: str | os.PathLike[str] | ImageStore) -> dict[str, Any]:
        """A JSON-ready dict; images go to `images` (a folder path or an ImageStore)."""
        store = as_store(images)
        return {
            "origin_prompt": self.origin_prompt,
            "rewritten_prompt": self.rewritten_prompt,
            "origin_image": store.put(self.origin_image),
            "edited_image": store.put(self.edited_image),
            "evaluation": self.evaluation.to_dict(),
        }

    @classmethod
    def from_json_dict(
        cls, data: Any, images: str | os.PathLike[str] | ImageStore, where: str = "critic sample"
    ) -> CriticSample:
        """Inverse of `to_json_dict`; a missing field raises RecordError naming it."""
        store = as_store(images)
        return cls._build(data, where, lambda ref, w: store.get(ref, w))

    def to_row(self) -> dict[str, Any]:
        """A `datasets` row for `critic_sample_features()`; images as lossless PNG bytes."""
        return {
            "origin_prompt": self.origin_prompt,
            "rewritten_prompt": self.rewritten_prompt,
            "origin_image": {"bytes": encode_png(self.origin_image), "path": None},
            "edited_image": {"bytes": encode_png(self.edited_image), "path": None},
            "evaluation": self.evaluation.to_dict(),
        }

    @classmethod
    def from_row(cls, row: Any, where: str = "row") -> CriticSample:
        """A sample from a dataset row (images decoded to PIL, or undecoded cells)."""
        return cls._build(row, where, decode_image)

    @classmethod
    def _build(cls, data: Any, where: str, image: Any) -> CriticSample:
        prompts = {}
        for name in ("origin_prompt", "rewritten_prompt"):
            value = require(data, name, where)
            if not isinstance(value, str):
                raise RecordError(f"{where}.{name}: expected text, got {type(value).__name__}")
            prompts[name] = value
        return cls(
            **prompts,
            origin_image=image(require(data, "origin_image", where), f"{where}.origin_image"),
            edited_image=image(require(data, "edited_image", where), f"{where}.edited_image"),
            evaluation=Evaluation.from_dict(
                require(data, "evaluation", where), f"{where}.evaluation"
            ),
        )


def critic_sample_features() -> datasets.Features:
    """Features of a critic dataset; images as `datasets.Image()` (PNG bytes in parquet)."""
    import datasets  # lazy: parsing in rollout workers should not pay for its import

    return datasets.Features(
        {
            "origin_prompt": datasets.Value("string"),
            "rewritten_prompt": datasets.Value("string"),
            "origin_image": datasets.Image(),
            "edited_image": datasets.Image(),
            "evaluation": {
                "semantics": datasets.Value("float64"),
                "quality": datasets.Value("float64"),
                "success": datasets.Value("bool"),
            },
        }
    )
