"""One run of the agent: request → plan → per step, attempts judged by the critic.

Stored as JSON with images as PNG files beside it (`to_json_dict(image_dir)`), or as a
`datasets` row (`to_row()`, features from `trajectory_features()`): the JSON text plus an image
column. Teacher trajectories become Planner-SFT pairs and critic samples from these records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from itk_rl.formats.critic import CriticVerdict
from itk_rl.formats.envelope import ParseResult
from itk_rl.formats.images import (
    ImageList,
    ImageStore,
    RecordError,
    as_store,
    check_image,
    read_image_file,
    require,
)
from itk_rl.formats.plan import Plan, Step
from itk_rl.formats.score import JudgeScore

if TYPE_CHECKING:
    import datasets


def _load(what: str, fn: Any, data: Any, where: str) -> Any:
    """Run a `from_dict`, turning KeyError/TypeError/ValueError into a RecordError naming it."""
    try:
        return fn(data)
    except KeyError as exc:
        raise RecordError(f"{where}: missing field {exc.args[0]!r} in {what}") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError(f"{where}: bad {what} ({exc})") from exc


@dataclass(frozen=True, eq=False)
class Request:
    """What the user asked: text, and optional input images `[H, W, 3]` uint8."""

    text: str
    images: tuple[np.ndarray, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"request text must be a str, got {type(self.text).__name__}")
        if not self.text.strip():
            raise ValueError("request text is empty")
        if isinstance(self.images, np.ndarray) or not isinstance(self.images, Sequence):
            raise TypeError(
                f"images must be a sequence of arrays, got {type(self.images).__name__}"
            )
        for i, image in enumerate(self.images):
            check_image(image, f"request image {i}")
        object.__setattr__(self, "images", tuple(self.images))

    @classmethod
    def from_user(cls, text: str, image_paths: Sequence[str | os.PathLike[str]] = ()) -> Request:
        """Build a request from user input, with errors that name the bad argument or file."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if isinstance(image_paths, (str, bytes, os.PathLike)) or not isinstance(
            image_paths, Sequence
        ):
            raise TypeError(
                f"image_paths must be a list of paths, got {type(image_paths).__name__}"
            )
        for i, path in enumerate(image_paths):
            if not isinstance(path, (str, os.PathLike)):
                raise TypeError(f"image_paths[{i}] must be a path, got {type(path).__name__}")
        if not text.strip():
            raise ValueError("request text is empty")
        images = tuple(read_image_file(p, "input image") for p in image_paths)
        return cls(text=text, images=images)

    def to_json_dict(self, images: str | os.PathLike[str] | ImageStore) -> dict[str, Any]:
        store = as_store(images)
        return {"text": self.text, "images": [store.put(im) for im in self.images]}

    @classmethod
    def from_json_dict(
        cls, data: Any, images: str | os.PathLike[str] | ImageStore, where: str = "request"
    ) -> Request:
        store = as_store(images)
        refs = require(data, "images", where)
        loaded = tuple(store.get(ref, f"{where}.images[{i}]") for i, ref in enumerate(refs))
        return cls(text=require(data, "text", where), images=loaded)


@dataclass(frozen=True, eq=False)
class Attempt:
    """One render of a step and its review.

    `critic` is None when no critic was asked (e.g. the last attempt, accepted unreviewed);
    `image` is None and `error` set when the render failed.
    """

    prompt: str
    seed: int
    image: np.ndarray | None = None
    critic: ParseResult[CriticVerdict] | None = None
    score: JudgeScore | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.image is not None:
            check_image(self.image, "attempt image")

    @property
    def verdict(self) -> CriticVerdict | None:
        return None if self.critic is None else self.critic.value

    def to_json_dict(self, images: str | os.PathLike[str] | ImageStore) -> dict[str, Any]:
        store = as_store(images)
        critic = self.critic
        return {
            "prompt": self.prompt,
            "seed": self.seed,
            "image": None if self.image is None else store.put(self.image),
            "critic": None if critic is None else critic.to_json_dict(CriticVerdict.to_dict),
            "score": None if self.score is None else self.score.to_dict(),
            "error": self.error,
        }

    @classmethod
    def from_json_dict(
        cls, data: Any, images: str | os.PathLike[str] | ImageStore, where: str = "attempt"
    ) -> Attempt:
        store = as_store(images)
        image_ref = require(data, "image", where)
        critic = require(data, "critic", where)
        score = require(data, "score", where)
        seed = require(data, "seed", where)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise RecordError(f"{where}.seed: expected an integer, got {seed!r}")
        return cls(
            prompt=str(require(data, "prompt", where)),
            seed=seed,
            image=None if image_ref is None else store.get(image_ref, f"{where}.image"),
            critic=None
            if critic is None
            else _load(
                "critic",
                lambda d: ParseResult.from_json_dict(d, CriticVerdict.from_dict),
                critic,
                f"{where}.critic",
            ),
            score=None
            if score is None
            else _load("score", JudgeScore.from_dict, score, f"{where}.score"),
            error=require(data, "error", where),
        )


@dataclass(frozen=True, eq=False)
class StepRecord:
    """A plan step, its attempts in order, and which one (index) was kept."""

    step: Step
    attempts: tuple[Attempt, ...] = ()
    final_attempt: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "attempts", tuple(self.attempts))
        if self.final_attempt is not None and not 0 <= self.final_attempt < len(self.attempts):
            raise ValueError(
                f"final_attempt {self.final_attempt} is out of range for "
                f"{len(self.attempts)} attempts (step {self.step.step_number})"
            )

    @property
    def final(self) -> Attempt | None:
        return None if self.final_attempt is None else self.attempts[self.final_attempt]

    def to_json_dict(self, images: str | os.PathLike[str] | ImageStore) -> dict[str, Any]:
        store = as_store(images)
        return {
            "step": self.step.to_dict(),
            "attempts": [a.to_json_dict(store) for a in self.attempts],
            "final_attempt": self.final_attempt,
        }

    @classmethod
    def from_json_dict(
        cls, data: Any, images: str | os.PathLike[str] | ImageStore, where: str = "step"
    ) -> StepRecord:
        store = as_store(images)
        attempts = require(data, "attempts", where)
        return cls(
            step=_load("step", Step.from_dict, require(data, "step", where), f"{where}.step"),
            attempts=tuple(
                Attempt.from_json_dict(a, store, f"{where}.attempts[{i}]")
                for i, a in enumerate(attempts)
            ),
            final_attempt=require(data, "final_attempt", where),
        )


@dataclass(frozen=True, eq=False)
class Trajectory:
    """A whole agent run: the request, the planner's parsed output, and every step's record."""

    request: Request
    planner: ParseResult[Plan]
    steps: tuple[StepRecord, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))

    @property
    def plan(self) -> Plan | None:
        return self.planner.value

    @property
    def planner_output(self) -> str:
        return self.planner.raw

    def to_json_dict(self, images: str | os.PathLike[str] | ImageStore) -> dict[str, Any]:
        """A JSON-ready dict; images go to `images` (a folder path or an ImageStore)."""
        store = as_store(images)
        return {
            "request": self.request.to_json_dict(store),
            "planner": self.planner.to_json_dict(Plan.to_dict),
            "steps": [s.to_json_dict(store) for s in self.steps],
        }

    @classmethod
    def from_json_dict(
        cls, data: Any, images: str | os.PathLike[str] | ImageStore, where: str = "trajectory"
    ) -> Trajectory:
        """Inverse of `to_json_dict`; a missing field raises RecordError naming it."""
        store = as_store(images)
        request = Request.from_json_dict(require(data, "request", where), store, f"{where}.request")
        planner = _load(
            "planner output",
            lambda d: ParseResult.from_json_dict(d, Plan.from_dict),
            require(data, "planner", where),
            f"{where}.planner",
        )
        steps = require(data, "steps", where)
        records = tuple(
            StepRecord.from_json_dict(s, store, f"{where}.steps[{i}]") for i, s in enumerate(steps)
        )
        return cls(request=request, planner=planner, steps=records)

    def to_row(self) -> dict[str, Any]:
        """A `datasets` row (see `trajectory_features`): JSON text plus its images."""
        store = ImageList()
        text = json.dumps(self.to_json_dict(store), ensure_ascii=False)
        return {"trajectory": text, "images": store.cells}

    @classmethod
    def from_row(cls, row: Any, where: str = "row") -> Trajectory:
        text = require(row, "trajectory", where)
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise RecordError(f"{where}.trajectory: not JSON ({exc})") from exc
        return cls.from_json_dict(data, ImageList(require(row, "images", where)), where)


def trajectory_features() -> datasets.Features:
    """Features of a trajectory dataset: the record as JSON text, its images as a list."""
    import datasets  # lazy: parsing in rollout workers should not pay for its import

    return datasets.Features(
        {"trajectory": datasets.Value("string"), "images": datasets.List(datasets.Image())}
    )
