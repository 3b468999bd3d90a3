"""The Critic-RL / Critic-SFT record: the fields of DESIGN §1, and whether the step is
text-to-image.

`origin_prompt` is the planner's prompt for the step, `rewritten_prompt` the prompt the
attempt actually used, `origin_image` the image before the step (a white canvas for step 1),
`edited_image` the image after it, and `evaluation` the judge's scores of the edited image
against the original prompt plus the success label. The step-wise reward compares a re-render
of the critic's refinement against `evaluation.semantics` / `evaluation.quality`; the re-render
is text-to-image when `text_to_image` is true and an edit of `origin_image` otherwise.

`text_to_image` is a bool rather than the step's number: step 1 is an edit of the user's image
when the request brings one, so the number alone would not say it. The pixels cannot say it
either: a before-image may be white without being the blank canvas (an edit of a white image),
and step 1's canvas need not be white in a record made elsewhere. Files written before the field
existed are read with `legacy_text_to_image`.
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
TEXT_TO_IMAGE = "text_to_image"
"""The field added after DESIGN §1: files written before it lack it (`legacy_text_to_image`)."""


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
    """One critic training record; images are `[H, W, 3]` uint8 arrays. `text_to_image`: the
    step renders from nothing (its re-render takes no reference), not an edit of
    `origin_image`."""

    origin_prompt: str
    rewritten_prompt: str
    origin_image: np.ndarray
    edited_image: np.ndarray
    evaluation: Evaluation
    text_to_image: bool

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
        if not isinstance(self.text_to_image, (bool, np.bool_)):
            raise TypeError(
                f"text_to_image must be a bool, got {type(self.text_to_image).__name__}"
            )
        object.__setattr__(self, "text_to_image", bool(self.text_to_image))

    def to_json_dict(self, images: str | os.PathLike[str] | ImageStore) -> dict[str, Any]:
        """A JSON-ready dict; images go to `images` (a folder path or an ImageStore)."""
        store = as_store(images)
        return {
            "origin_prompt": self.origin_prompt,
            "rewritten_prompt": self.rewritten_prompt,
            "origin_image": store.put(self.origin_image),
            "edited_image": store.put(self.edited_image),
            "evaluation": self.evaluation.to_dict(),
            TEXT_TO_IMAGE: self.text_to_image,
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
            TEXT_TO_IMAGE: self.text_to_image,
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
        origin_image = image(require(data, "origin_image", where), f"{where}.origin_image")
        if TEXT_TO_IMAGE in data:
            text_to_image = data[TEXT_TO_IMAGE]
            if not isinstance(text_to_image, (bool, np.bool_)):
                raise RecordError(
                    f"{where}.{TEXT_TO_IMAGE}: expected true or false, got {text_to_image!r}"
                )
        else:
            text_to_image = legacy_text_to_image(origin_image)
        return cls(
            **prompts,
            origin_image=origin_image,
            edited_image=image(require(data, "edited_image", where), f"{where}.edited_image"),
            evaluation=Evaluation.from_dict(
                require(data, "evaluation", where), f"{where}.evaluation"
            ),
            text_to_image=text_to_image,
        )


def legacy_text_to_image(origin_image: np.ndarray) -> bool:
    """`text_to_image` of a record written before the field existed: a white before-image.

    Those files carry no other sign of it, and the data build wrote step 1's before-image as a
    white canvas (DESIGN §1); it is the rule GRPO used on them, so old datasets train as they
    did. An edit of an all-white image is misread as text-to-image: rebuild to record it.
    """
    return bool(origin_image.min() == 255)


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
            TEXT_TO_IMAGE: datasets.Value("bool"),
        }
    )
