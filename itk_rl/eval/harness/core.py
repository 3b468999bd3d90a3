"""What the harness passes between its phases: samples, a system's output, judge calls and
answers, the scores, and the protocol each benchmark adapter implements.

A benchmark adapter (wise.py, rise.py, ueval.py, comm.py) binds one scoring module of
`itk_rl.eval.benchmarks` to the harness: it turns the official records into requests, writes a
system's output in the official layout, lists the judge calls of a sample, and aggregates the
answers with the official rules. The phases (generation.py, judging.py, report.py) know
nothing of any benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from itk_rl.formats import Request
from itk_rl.formats.files import write_atomic_bytes
from itk_rl.formats.images import encode_png, read_image_file

Part = str | Path | np.ndarray
"""Content a judge call attaches after its template's user text: a text, an image file or an
image array, in order."""


@dataclass(frozen=True)
class Sample:
    """One benchmark item as the system under test sees it.

    `key` names it everywhere (file names, cache, report); `group` is its category or task;
    `record` is the benchmark module's record.
    """

    key: str
    prompt: str
    group: str
    record: Any
    input_images: tuple[Path, ...] = ()

    def request(self) -> Request:
        what = f"input image of sample {self.key}"
        images = tuple(read_image_file(p, what) for p in self.input_images)
        return Request(text=self.prompt, images=images)


@dataclass(frozen=True, eq=False)
class SystemOutput:
    """What a system produced for a sample: each step's text (empty without a planner) and
    each step's final image, in order."""

    texts: tuple[str, ...]
    images: tuple[np.ndarray, ...]

    @property
    def text(self) -> str:
        """The steps' texts joined, as InterleaveThinker's own UEval runner joins them."""
        return "\n\n".join(t for t in self.texts if t)


@dataclass(frozen=True)
class JudgeCall:
    """One question to the judge about one sample.

    `name` is unique within the sample (it keys the cache); `role` picks the template, filled
    with `values`; `parts` follow the user text; `parse` reads an answer into a value, None when
    it is unreadable (the official reading rules of the benchmark module).
    """

    sample: str
    name: str
    role: str
    values: Mapping[str, str]
    parts: tuple[Part, ...]
    parse: Callable[[str], Any] = field(compare=False)


@dataclass(frozen=True)
class Answer:
    """The judge's last answer to a call: its text (None when every try failed), the parsed
    value (None: unreadable or failed), tries made this run (0: from the cache), the error."""

    text: str | None
    value: Any
    tries: int = 0
    error: str | None = None


Answers = Mapping[str, Mapping[str, Answer]]
"""sample key → call name → answer."""


@dataclass(frozen=True)
class View:
    """What the gallery shows of a sample's output: its text and its images (files)."""

    text: str
    images: tuple[Path, ...]


@dataclass(frozen=True)
class Scores:
    """A run's figures: the headline `overall`, a table (one row per group, `columns` named,
    the first column the one compared across systems), the benchmark module's full result, a
    one-line score per sample for the gallery, notes on what the figures leave out, and the
    decimals the official scripts print."""

    metric: str
    overall: float | None
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[Any, ...]], ...]
    official: dict[str, Any]
    per_sample: dict[str, str]
    notes: tuple[str, ...] = ()
    digits: int = 3


class Benchmark(Protocol):
    """What every benchmark adapter provides (see the module docstring)."""

    name: str

    def samples(self) -> list[Sample]:
        """The samples, in the official order; fetches the data when missing and allowed."""
        ...

    def provenance(self) -> dict[str, Any]:
        """Where the data came from (files, repository, revision and, for a hub dataset, the
        commit the data folder holds), for the run record."""
        ...

    def has_output(self, run: Path, sample: Sample) -> bool: ...

    def write_output(self, run: Path, sample: Sample, output: SystemOutput) -> None: ...

    def view(self, run: Path, sample: Sample) -> View | None: ...

    def count_judge_calls(self, sample: Sample) -> int:
        """How many judge calls a sample with an output needs (for the paid-call estimate)."""
        ...

    def judge_calls(
        self, run: Path, sample: Sample, answers: Mapping[str, Answer]
    ) -> list[JudgeCall]:
        """The calls the sample needs given the answers so far (a call may need another's
        answer, as CoMM's fidelity call needs the descriptions); [] without an output."""
        ...

    def score(self, run: Path, samples: Sequence[Sample], answers: Answers) -> Scores: ...


def save_png(path: Path, image: np.ndarray) -> None:
    """An output image, written whole or not at all (a resumed run trusts existing files)."""
    write_atomic_bytes(path, encode_png(image))


def load_image(part: Path | np.ndarray, max_side: int | None) -> np.ndarray:
    """An image part as an array, shrunk so its longer side is at most `max_side` (as the
    official judges thumbnail), aspect kept."""
    image = read_image_file(part, "judge image") if isinstance(part, Path) else part
    if max_side is None or max(image.shape[:2]) <= max_side:
        return image
    pil = Image.fromarray(image)
    pil.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return np.asarray(pil, dtype=np.uint8)


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers rounded, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
