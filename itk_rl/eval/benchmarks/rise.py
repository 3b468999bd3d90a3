"""RISEBench (github.com/PhoenixZ810/RISEBench): reasoning-informed image editing in four
categories, scored by full marks.

Dimensions, each one judge call answered with "Final Score: n": temporal, causal and spatial
samples are judged on appearance consistency, reasoning and visual plausibility (1–5); logical
samples on consistency and reasoning only, each 0/1, mapped to 1–5 by 4·min(s, 1) + 1.
`consistency_free` samples skip consistency. A sample is solved when every dimension it has is
5 (the rule after the official fix of 2026-04-13); a sample without an image or with an
unreadable dimension has every dimension missing and is not solved. Accuracy is the share of
solved samples over all samples (and per category), shown ×100 to one decimal. The secondary
score is 0.3·AC + 0.5·R + 0.2·VP (consistency-free 0.2·VP + 0.8·R; logical 0.3·AC + 0.7·R),
max(0.5·score, 1) when R = 1, shown as 25·(score − 1); it averages the samples that have one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from itk_rl.eval.benchmarks.common import BenchmarkFormatError, field, present, read_rows

SOURCE = (
    "https://github.com/PhoenixZ810/RISEBench (data/data_total.json and data/*_images, "
    "RISEBench-64) or its hub dataset (datav2_total_w_subtask.json with images, RISEBench-360)"
)
CATEGORIES = ("temporal_reasoning", "causal_reasoning", "spatial_reasoning", "logical_reasoning")
LOGICAL = "logical_reasoning"
IMAGE_SUFFIXES = ("png", "jpg", "jpeg")


@dataclass(frozen=True)
class RiseRecord:
    index: str
    category: str
    instruction: str
    image: str
    """The input image, relative to the data folder."""
    reference: str | None = None
    reference_img: str | None = None
    reference_txt: str | None = None
    subtask: str | None = None
    consistency_free: bool = False
    reasoning_img: bool = False
    """The reasoning judge also sees the input image."""

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The dimensions this sample is judged on."""
        dims = ("reasoning",) if self.category == LOGICAL else ("reasoning", "plausibility")
        return dims if self.consistency_free else ("consistency", *dims)


# The reference fields a record of each category needs (one of them).
_REFERENCES = {
    "temporal_reasoning": ("reference",),
    "causal_reasoning": ("reference",),
    "spatial_reasoning": ("reference", "reference_img"),
    LOGICAL: ("reference_txt", "reference_img"),
}
_OPTIONAL = ("reference", "reference_img", "reference_txt", "subtask")


def load_records(path: Path) -> tuple[RiseRecord, ...]:
    """The records of an official RISEBench JSON file (v1 `data_total.json` or v2)."""
    path = Path(path)
    records = [
        _record(row, path, i)
        for i, row in enumerate(read_rows(path, f"the RISEBench data file {path.name}", SOURCE))
    ]
    indices = [r.index for r in records]
    for i, index in enumerate(indices):
        if index in indices[:i]:
            raise BenchmarkFormatError(path, i, "index", f"{index!r} repeats")
    return tuple(records)


def _record(row: dict[str, Any], path: Path, i: int) -> RiseRecord:
    category = field(row, "category", str, path, i)
    if category not in CATEGORIES:
        raise BenchmarkFormatError(path, i, "category", f"{category!r} not in {CATEGORIES}")
    optional = {k: str(row[k]) if present(row.get(k)) else None for k in _OPTIONAL}
    needed = _REFERENCES[category]
    if not any(optional[k] for k in needed):
        problem = f"(or {needed[-1]}) is needed for a {category} record"
        raise BenchmarkFormatError(path, i, needed[0], problem)
    free = present(row.get("consistency_free"))  # present and not null, as the official tests it
    if free and category == LOGICAL:
        problem = "is not defined for logical records by the official scoring"
        raise BenchmarkFormatError(path, i, "consistency_free", problem)
    return RiseRecord(
        index=str(field(row, "index", (str, int), path, i)),
        category=category,
        instruction=field(row, "instruction", str, path, i),
        image=field(row, "image", str, path, i),
        consistency_free=free,
        reasoning_img=present(row.get("reasoning_img")),
        **optional,
    )


def output_image(root: Path, record: RiseRecord, suffix: str = "png") -> Path:
    """Where the official layout puts a sample's output: `images/{category}/{index}.{suffix}`."""
    return Path(root) / "images" / record.category / f"{record.index}.{suffix}"


def find_output_image(root: Path, record: RiseRecord) -> Path | None:
    """The sample's output image (png, then jpg, then jpeg), or None when there is none."""
    for suffix in IMAGE_SUFFIXES:
        if (path := output_image(root, record, suffix)).is_file():
            return path
    return None


@dataclass(frozen=True)
class JudgeCall:
    """One judge call: the dimension, its template role, the images in order (`input`,
    `reference` or `output`), and the template's values."""

    dimension: str
    role: str
    images: tuple[str, ...]
    values: dict[str, str]


def judge_calls(record: RiseRecord) -> tuple[JudgeCall, ...]:
    """The judge calls a sample needs, per its category and references."""
    ins = {"instruction": record.instruction}
    if record.category == LOGICAL:
        if record.reference_txt is None:  # a reference image: both judges compare with it
            seen = ("reference", "output")
            return (
                JudgeCall("consistency", "rise_logical_consistency", seen, ins),
                JudgeCall("reasoning", "rise_logical_reasoning_image", seen, ins),
            )
        answer = {**ins, "reference": record.reference_txt}
        return (
            JudgeCall("consistency", "rise_logical_consistency", ("input", "output"), ins),
            JudgeCall("reasoning", "rise_logical_reasoning", ("output",), answer),
        )
    # A spatial sample with a reference image is judged against it for consistency too.
    spatial_by_image = record.category == "spatial_reasoning" and record.reference_img is not None
    against = "reference" if spatial_by_image else "input"
    calls = (
        []
        if record.consistency_free
        else [JudgeCall("consistency", "rise_consistency", (against, "output"), ins)]
    )
    if against == "reference":
        calls.append(JudgeCall("reasoning", "rise_reasoning_image", ("reference", "output"), ins))
    else:
        seen = ("input", "output") if record.reasoning_img else ("output",)
        answer = {**ins, "reference": record.reference or ""}
        calls.append(JudgeCall("reasoning", "rise_reasoning", seen, answer))
    calls.append(JudgeCall("plausibility", "rise_plausibility", ("output",), {}))
    return tuple(calls)


# --- judge answers -----------------------------------------------------------------------------

_FINAL = re.compile(r"final\s+scores?[\s*:：]*(\d+)", re.IGNORECASE)


def parse_final_score(text: str) -> int | None:
    """The integer after the first "Final Score" that has one (bold and colon allowed)."""
    match = _FINAL.search(text)
    return int(match.group(1)) if match else None


def read_dimension(text: str, record: RiseRecord) -> int | None:
    """A dimension's raw score, None when unreadable or off its scale (logical 0–1, else 1–5)."""
    value = parse_final_score(text)
    low, high = (0, 1) if record.category == LOGICAL else (1, 5)
    return value if value is not None and low <= value <= high else None


# --- aggregation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RiseSample:
    index: str
    category: str
    subtask: str | None
    consistency: float | None
    reasoning: float | None
    plausibility: float | None
    """The 1–5 dimensions (logical mapped); all None when a needed one is missing."""
    solved: bool
    score: float | None


def score_sample(record: RiseRecord, raw: Mapping[str, int | None] | None) -> RiseSample:
    """A sample's dimensions, full-marks flag and secondary score from its raw judge values
    (`{dimension: value}`; None or a missing needed dimension: every dimension missing)."""
    raw = raw or {}
    values = {d: raw.get(d) for d in record.dimensions}
    if any(v is None for v in values.values()):
        return RiseSample(
            record.index, record.category, record.subtask, None, None, None, False, None
        )
    if record.category == LOGICAL:
        values = {d: 4 * min(v, 1) + 1 for d, v in values.items()}
    ac, r, vp = (values.get(d) for d in ("consistency", "reasoning", "plausibility"))
    if record.category == LOGICAL:
        score = 0.3 * ac + 0.7 * r
    elif record.consistency_free:
        score = 0.2 * vp + 0.8 * r
    else:
        score = 0.3 * ac + 0.5 * r + 0.2 * vp
    if r == 1:
        score = max(score * 0.5, 1.0)
    solved = all(v == 5 for v in values.values())
    return RiseSample(record.index, record.category, record.subtask, ac, r, vp, solved, score)


@dataclass(frozen=True)
class RiseGroup:
    """Accuracy and means of one group of samples (all, a category or a subtask)."""

    n: int
    accuracy: float | None
    """Share of solved samples; None for an empty group."""
    score: float | None
    consistency: float | None
    reasoning: float | None
    plausibility: float | None

    def to_dict(self) -> dict[str, Any]:
        score_pct = None if self.score is None else 25 * (self.score - 1)
        accuracy_pct = None if self.accuracy is None else round(100 * self.accuracy, 1)
        return {**asdict(self), "accuracy_pct": accuracy_pct, "score_pct": score_pct}


@dataclass(frozen=True)
class RiseResult:
    overall: RiseGroup
    categories: dict[str, RiseGroup]
    subtasks: dict[str, RiseGroup]
    unscored: tuple[str, ...]
    """Indices without a full set of readable dimensions (not solved, no secondary score)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_dict(),
            "categories": {k: v.to_dict() for k, v in self.categories.items()},
            "subtasks": {k: v.to_dict() for k, v in self.subtasks.items()},
            "unscored": list(self.unscored),
        }


def score_rise(
    records: Sequence[RiseRecord], raw: Mapping[str, Mapping[str, int | None] | None]
) -> RiseResult:
    """Aggregate raw judge values by record index; an index absent from `raw` is not solved."""
    samples = [score_sample(r, raw.get(r.index)) for r in records]
    subtasks = sorted({s.subtask for s in samples if s.subtask is not None})
    return RiseResult(
        overall=_group(samples),
        categories={c: _group([s for s in samples if s.category == c]) for c in CATEGORIES},
        subtasks={t: _group([s for s in samples if s.subtask == t]) for t in subtasks},
        unscored=tuple(s.index for s in samples if s.score is None),
    )


def _group(samples: Sequence[RiseSample]) -> RiseGroup:
    def mean(name: str) -> float | None:
        values = [getattr(s, name) for s in samples if getattr(s, name) is not None]
        return sum(values) / len(values) if values else None

    solved = sum(s.solved for s in samples)
    return RiseGroup(
        n=len(samples),
        accuracy=solved / len(samples) if samples else None,
        score=mean("score"),
        consistency=mean("consistency"),
        reasoning=mean("reasoning"),
        plausibility=mean("plausibility"),
    )
