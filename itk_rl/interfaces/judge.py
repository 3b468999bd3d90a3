"""The one interface every judge implements: the testbed's exact judge, a VLM judge, an API judge.

`score_batch(instructions, afters, befores)` takes parallel lists; a `befores` entry of None means
text-to-image. A None in the result is an unreadable judgement, never a made-up score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from itk_rl.formats.score import JudgeScore


@runtime_checkable
class Judge(Protocol):
    """What the driver and the judge actors call. None entries: unreadable judgements."""

    def score_batch(
        self,
        instructions: Sequence[str],
        afters: Sequence[np.ndarray],
        befores: Sequence[np.ndarray | None],
    ) -> Sequence[JudgeScore | None]: ...
