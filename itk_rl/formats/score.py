"""A judge's verdict on one render, VIEScore-style."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class JudgeScore:
    """Scores on 0–10.

    `semantics` (SC) is min(edit success, over-editing) for an edit, prompt following for
    text-to-image; `quality` (PQ) is min(naturalness, artifacts) judged on the image alone.
    """

    semantics: float
    quality: float

    @property
    def overall(self) -> float:
        """O = sqrt(SC · PQ), the paper's overall score."""
        return math.sqrt(self.semantics * self.quality)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "overall": self.overall}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JudgeScore:
        return cls(semantics=float(data["semantics"]), quality=float(data["quality"]))
