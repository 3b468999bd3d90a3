"""UEval (github.com/zlab-princeton/UEval): interleaved text-image answers judged against
per-question rubrics, 8 tasks.

The judge answers each rubric item with `{"criteria_met": true|false|"not sure"}`; only
true-like values count as met, so "not sure" stays in the denominator. Per item and modality
the rate is met / rubric items, None when the item has no rubric of that modality (skipped, not
0). Averages are means over the items that have a rate; an item missing from the model's
output is judged as an empty text with no images. Open tasks (art, life, tech, exercise) show
the image judge the question, the text answer and the images; closed tasks (space, textbook,
diagram, paper) the question and the images only.

The official script prints only the text and image averages over all items; the leaderboard
has one column per task and Avg, the mean of the 8 columns. BENCHMARKS.md does not define a
task column; we take the mean of the task's text and image averages, and report both beside it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from itk_rl.eval.benchmarks.common import BenchmarkFormatError, field, json_objects, read_rows
from itk_rl.formats.files import write_atomic

SOURCE = "the hub dataset zlab-princeton/UEval (split test), exported as JSON or JSON lines"
TASKS = ("space", "textbook", "diagram", "paper", "art", "life", "tech", "exercise")
OPEN_TASKS = frozenset({"art", "life", "tech", "exercise"})
CLOSED_TASKS = frozenset({"space", "textbook", "diagram", "paper"})
_TRUE = frozenset({"true", "yes", "y", "1"})


@dataclass(frozen=True)
class UEvalItem:
    id: str
    prompt: str
    task: str
    text_rubrics: tuple[str, ...]
    image_rubrics: tuple[str, ...]
    text_ref: str = ""

    @property
    def is_open(self) -> bool:
        """Whether the image judge also sees the text answer (open tasks)."""
        return self.task in OPEN_TASKS


def load_items(path: Path) -> tuple[UEvalItem, ...]:
    """The items of a JSON or JSON-lines export of the hub dataset."""
    path = Path(path)
    return items_from_rows(read_rows(path, f"the UEval test split ({path.name})", SOURCE), path)


def items_from_rows(rows: Iterable[Mapping[str, Any]], source: str | Path) -> tuple[UEvalItem, ...]:
    """Items from dataset rows (`datasets` rows or a file's), checked; `source` names them."""
    items, seen = [], set()
    for i, row in enumerate(rows):
        row = dict(row)
        task_key = "task" if "task" in row else "task_type"
        task = field(row, task_key, str, source, i).strip().lower()
        if task not in TASKS:
            raise BenchmarkFormatError(source, i, task_key, f"{task!r} is not one of {TASKS}")
        item = UEvalItem(
            id=str(field(row, "id", (str, int), source, i)),
            prompt=field(row, "prompt", str, source, i),
            task=task,
            text_rubrics=_rubrics(row, "text_rubrics", source, i),
            image_rubrics=_rubrics(row, "image_rubrics", source, i),
            text_ref=row.get("text_ref") or "",
        )
        if item.id in seen:
            raise BenchmarkFormatError(source, i, "id", f"{item.id!r} repeats")
        seen.add(item.id)
        items.append(item)
    return tuple(items)


def _rubrics(row: dict[str, Any], name: str, source: str | Path, i: int) -> tuple[str, ...]:
    """A rubric list: strings, or `{"criterion": …}` objects in older versions; empty entries
    are dropped as the official script drops them."""
    value = row.get(name) or []
    if not isinstance(value, list):
        raise BenchmarkFormatError(source, i, name, f"must be a list, got {type(value).__name__}")
    rubrics = []
    for entry in value:
        text = entry.get("criterion") if isinstance(entry, dict) else entry
        if not isinstance(text, str):
            raise BenchmarkFormatError(source, i, name, "holds an entry that is not a criterion")
        if text.strip():
            rubrics.append(text)
    return tuple(rubrics)


# --- the model's output file: [{"id", "text_answer", "image_answer": [paths]}] ----------------


@dataclass(frozen=True)
class UEvalOutput:
    id: str
    text_answer: str = ""
    image_answer: tuple[str, ...] = ()
    """Image paths as written: absolute, or relative to the folder the judge runs in (the
    official script resolves them against its working directory)."""


def write_outputs(path: Path, outputs: Iterable[UEvalOutput]) -> None:
    """Write the official output file (atomically, so a resumed run never reads half a file)."""
    rows = [
        {"id": o.id, "text_answer": o.text_answer, "image_answer": list(o.image_answer)}
        for o in outputs
    ]
    write_atomic(Path(path), json.dumps(rows, ensure_ascii=False, indent=1) + "\n")


def read_outputs(path: Path) -> dict[str, UEvalOutput]:
    """The output file by item id (ids compared as strings, as the official script does)."""
    path = Path(path)
    outputs: dict[str, UEvalOutput] = {}
    for i, row in enumerate(read_rows(path, "the model's UEval output file", "a generation run")):
        images = row.get("image_answer") or []
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
            raise BenchmarkFormatError(path, i, "image_answer", "must be a list of paths")
        text = row.get("text_answer") or ""
        if not isinstance(text, str):
            raise BenchmarkFormatError(path, i, "text_answer", "must be a string")
        key = str(field(row, "id", (str, int), path, i))
        outputs[key] = UEvalOutput(key, text, tuple(p for p in images if p))
    return outputs


def output_for(item: UEvalItem, outputs: Mapping[str, UEvalOutput]) -> UEvalOutput:
    """The item's output, or an empty one (empty text, no images) when the model gave none."""
    return outputs.get(item.id) or UEvalOutput(item.id)


# --- judge answers -----------------------------------------------------------------------------

_FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


def parse_criteria_answer(text: str) -> bool | None:
    """Whether the rubric item is met: True only for a true-like `criteria_met` (true, "yes",
    "y", "1"); False for false, "not sure" or anything else; None when no JSON object with
    `criteria_met` can be read (unreadable: ask again)."""
    fenced = [m.group(1) for m in _FENCED.finditer(text)]
    for candidate in [*fenced, text]:
        for obj in json_objects(candidate):
            if "criteria_met" in obj:
                value = obj["criteria_met"]
                if isinstance(value, bool):
                    return value
                return isinstance(value, str) and value.strip().lower() in _TRUE
    return None


# --- aggregation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UEvalItemScore:
    id: str
    task: str
    text_met: int
    text_total: int
    image_met: int
    image_total: int

    @property
    def text_rate(self) -> float | None:
        return self.text_met / self.text_total if self.text_total else None

    @property
    def image_rate(self) -> float | None:
        return self.image_met / self.image_total if self.image_total else None


def score_item(
    item: UEvalItem, text_verdicts: Sequence[bool | None], image_verdicts: Sequence[bool | None]
) -> UEvalItemScore:
    """An item's counts from one verdict per rubric item, in rubric order. A verdict that stayed
    unreadable after retries (None) counts as not met, as the item stays in the denominator."""
    for name, verdicts, rubrics in (
        ("text", text_verdicts, item.text_rubrics),
        ("image", image_verdicts, item.image_rubrics),
    ):
        if len(verdicts) != len(rubrics):
            raise ValueError(
                f"UEval item {item.id}: {len(verdicts)} {name} verdicts for "
                f"{len(rubrics)} {name} rubric items"
            )
    return UEvalItemScore(
        id=item.id,
        task=item.task,
        text_met=sum(v is True for v in text_verdicts),
        text_total=len(text_verdicts),
        image_met=sum(v is True for v in image_verdicts),
        image_total=len(image_verdicts),
    )


@dataclass(frozen=True)
class UEvalGroup:
    n_items: int
    text: float | None
    """Mean text rate over the items with text rubrics; None when there are none."""
    image: float | None
    score: float | None
    """A task's column: mean of its text and image averages (the one present if only one)."""


@dataclass(frozen=True)
class UEvalResult:
    overall: UEvalGroup
    """The official script's text and image averages over all items."""
    tasks: dict[str, UEvalGroup]
    avg: float | None
    """Mean of the 8 task columns; None when a task has no score."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_ueval(scores: Sequence[UEvalItemScore]) -> UEvalResult:
    """Aggregate item scores into the official averages, the task columns and Avg."""
    tasks = {t: _group([s for s in scores if s.task == t]) for t in TASKS}
    columns = [g.score for g in tasks.values()]
    avg = None if any(c is None for c in columns) else sum(columns) / len(columns)
    return UEvalResult(overall=_group(scores), tasks=tasks, avg=avg)


def _group(scores: Sequence[UEvalItemScore]) -> UEvalGroup:
    text = [s.text_rate for s in scores if s.text_rate is not None]
    image = [s.image_rate for s in scores if s.image_rate is not None]
    text_avg = sum(text) / len(text) if text else None
    image_avg = sum(image) / len(image) if image else None
    both = [v for v in (text_avg, image_avg) if v is not None]
    return UEvalGroup(len(scores), text_avg, image_avg, sum(both) / len(both) if both else None)
