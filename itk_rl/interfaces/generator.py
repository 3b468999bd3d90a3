"""The one interface every image generator implements: the diffusers pool and the testbed alike.

Images cross this boundary as `uint8` numpy arrays of shape `[height, width, 3]` (RGB), which
Ray moves through its object store without copies or base64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True, eq=False)
class RenderRequest:
    """One image to render.

    `references` empty means text-to-image; otherwise `prompt` is an edit instruction applied
    to them (InterleaveThinker edits condition on the previous step's final image only, but
    generators such as FLUX.2-klein accept several). `seed` makes the render reproducible:
    the pipeline derives it from (step, attempt).
    """

    prompt: str
    references: tuple[np.ndarray, ...] = ()
    seed: int = 0

    @property
    def is_edit(self) -> bool:
        return bool(self.references)


class ImageGenerator(Protocol):
    """Renders a batch of requests; returns one `[H, W, 3]` uint8 image per request, in order."""

    def __call__(self, requests: Sequence[RenderRequest]) -> list[np.ndarray]: ...
