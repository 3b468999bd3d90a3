"""CoMM (github.com/HKUST-LongGroup/CoMM) tasks 3 and 4: interleaved step-by-step documents
judged by a VLM in three calls.

Task 3 (continuation): the first steps are given, the model writes the rest with images; task 4:
the model writes every step from the title. Per sample the judge (a) scores image coherence
(style, entity, trend, overall), completeness and image quality, 0–10; (b) describes, from the
text alone, what each image should show; (c) scores how well the images match those
descriptions, 0–10 ("text fidelity to images"). Each of the seven metrics is a plain mean over
samples; a metric given as "NA" or null counts 0; a sample with no readable result is left out.

Per-sample results use the official layout: a folder `{data_id}_task{3|4}` holding `results.json`
(the model's input and output text, `<IMAGE>` marking each image, and the image file lists)
and `evaluation_results.json` (the scores under the official keys).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

from itk_rl.eval.benchmarks.common import (
    BenchmarkDataMissing,
    BenchmarkFormatError,
    field,
    json_objects,
    read_json,
    read_rows,
)
from itk_rl.formats.files import write_atomic

SOURCE = "the hub dataset weisuxi/CoMM (test split; a .pth, or its records as JSON)"
TASKS = (3, 4)
COHERENCE = ("style_consistency", "entity_consistency", "trend_consistency", "overall_consistency")
METRICS = (*COHERENCE, "completeness", "image_quality", "text_fidelity")


@dataclass(frozen=True)
class CommEntry:
    type: str
    """"text" or "image"."""
    content: str
    image_path: str | None = None
    url: str | None = dataclass_field(default=None, compare=False)
    """Where the official download script fetches an image from (a third-party URL)."""


@dataclass(frozen=True)
class CommRecord:
    data_id: str
    title: str
    steps: tuple[tuple[CommEntry, ...], ...]


def load_records(path: Path) -> tuple[CommRecord, ...]:
    """Records of the official test data: the `.pth` file (read with torch, plain containers
    only) or the same records as a JSON list or JSON lines."""
    path = Path(path)
    what = f"the CoMM test data ({path.name})"
    if path.suffix != ".pth":
        rows = read_rows(path, what, SOURCE)
    elif not path.is_file():
        raise BenchmarkDataMissing(path, what, SOURCE)
    else:
        import torch  # only this format needs it

        rows = torch.load(path, weights_only=True)
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ValueError(f"{path}: expected a list of CoMM records (dicts)")
    return tuple(_record(row, path, i) for i, row in enumerate(rows))


def _record(row: dict[str, Any], path: Path, i: int) -> CommRecord:
    steps = field(row, "step_info", list, path, i)
    parsed = []
    for step in steps:
        entries = []
        if not isinstance(step, list):
            raise BenchmarkFormatError(path, i, "step_info", "must be a list of steps (lists)")
        for entry in step:
            if not isinstance(entry, dict) or entry.get("type") not in ("text", "image"):
                raise BenchmarkFormatError(path, i, "step_info", "holds a non text/image entry")
            content = entry.get("content") or ""
            entries.append(
                CommEntry(entry["type"], str(content), entry.get("image_path"), entry.get("url"))
            )
        parsed.append(tuple(entries))
    return CommRecord(
        data_id=str(field(row, "data_id", (str, int), path, i)),
        title=field(row, "title", str, path, i),
        steps=tuple(parsed),
    )


# --- per-sample results in the official layout -------------------------------------------------


def sample_dir(root: Path, data_id: str, task: int) -> Path:
    """A sample's folder: `{data_id}_task{task}` (the official scripts strip the suffix)."""
    if task not in TASKS:
        raise ValueError(f"CoMM task must be one of {TASKS}, got {task}")
    return Path(root) / f"{data_id}_task{task}"


@dataclass(frozen=True)
class CommOutput:
    """`results.json`: text with one `<IMAGE>` per image, images relative to the folder."""

    model_input: str
    model_output: str
    input_image_list: tuple[str, ...] = ()
    prediction_image_list: tuple[str, ...] = ()


def write_output(folder: Path, output: CommOutput) -> None:
    rows = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(output).items()}
    write_atomic(Path(folder) / "results.json", json.dumps(rows, ensure_ascii=False, indent=1))


def read_output(folder: Path) -> CommOutput:
    path = Path(folder) / "results.json"
    row = read_json(path, "a sample's results.json", "a generation run")
    if not isinstance(row, dict):
        raise BenchmarkFormatError(path, 0, "<record>", "is not a JSON object")
    values = {}
    for name in (f.name for f in fields(CommOutput)):
        value = field(row, name, list if name.endswith("_list") else str, path, 0)
        values[name] = tuple(value) if isinstance(value, list) else value
    return CommOutput(**values)


@dataclass(frozen=True)
class CommScores:
    """A sample's seven metrics; None stands for "NA" (counted as 0)."""

    style_consistency: float | None
    entity_consistency: float | None
    trend_consistency: float | None
    overall_consistency: float | None
    completeness: float | None
    image_quality: float | None
    text_fidelity: float | None


def write_evaluation(folder: Path, scores: CommScores) -> None:
    """`evaluation_results.json` under the official keys (the official averaging reads it)."""
    payload = {
        "coherence_score": {k: getattr(scores, k) for k in COHERENCE},
        "completeness": {"Score": scores.completeness},
        "Image_Quality": {"Score": scores.image_quality},
        "text fidelity to images": {"Score": scores.text_fidelity},
    }
    write_atomic(Path(folder) / "evaluation_results.json", json.dumps(payload, indent=1))


def read_evaluation(folder: Path) -> CommScores | None:
    """A sample's scores, or None when it has no readable `evaluation_results.json`."""
    path = Path(folder) / "evaluation_results.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        coherence = {k: _score(saved["coherence_score"][k]) for k in COHERENCE}
        return CommScores(
            **coherence,
            completeness=_score(saved["completeness"]["Score"]),
            image_quality=_score(saved["Image_Quality"]["Score"]),
            text_fidelity=_score(saved["text fidelity to images"]["Score"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- judge answers -----------------------------------------------------------------------------

_IMAGE_KEY = re.compile(r"content of image\s*(\d+)", re.IGNORECASE)


def _score(value: Any) -> float | None:
    """A 0–10 score; None for "NA"/null; ValueError for anything else."""
    if value is None or (isinstance(value, str) and value.strip().upper() == "NA"):
        return None
    if isinstance(value, str):
        value = float(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10:
        raise ValueError(f"not a 0–10 score: {value!r}")
    return float(value)


def _first_with(text: str, key: str) -> dict[str, Any] | None:
    return next((obj for obj in json_objects(text) if key in obj), None)


def parse_coherence_answer(text: str) -> dict[str, float | None] | None:
    """Call (a): the four coherence scores, completeness and image quality by metric name
    (None for NA), or None when unreadable."""
    answer = _first_with(text, "scores")
    try:
        scores = answer["scores"]  # type: ignore[index]
        overall = scores["Image_Coherence"]["overall_score"]
        values = {k: _score(overall[k]) for k in COHERENCE}
        values["completeness"] = _score(scores["Completeness"]["Score"])
        values["image_quality"] = _score(scores["Image_Quality"]["Score"])
    except (TypeError, KeyError, ValueError):
        return None
    return values


def parse_descriptions_answer(text: str) -> tuple[str, ...] | None:
    """Call (b): what each image should show, in image order, or None."""
    answer = _first_with(text, "Tasks")
    tasks = answer.get("Tasks") if answer else None
    document = next(iter(tasks.values()), None) if isinstance(tasks, dict) and tasks else None
    if not isinstance(document, dict):
        return None
    found = [(int(m.group(1)), v) for k, v in document.items() if (m := _IMAGE_KEY.search(k))]
    if not found or not all(isinstance(v, str) for _, v in found):
        return None
    return tuple(v for _, v in sorted(found))


def parse_fidelity_answer(text: str) -> dict[str, float | None] | None:
    """Call (c): `{"text_fidelity": overall 0–10, None for NA}`, or None when unreadable."""
    answer = _first_with(text, "Consistency")
    try:
        return {"text_fidelity": _score(answer["Consistency"]["overall_score"])}  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None


def sample_scores(
    coherence: dict[str, float | None] | None, fidelity: dict[str, float | None] | None
) -> CommScores | None:
    """A sample's seven metrics from calls (a) and (c); None when either is unreadable."""
    if coherence is None or fidelity is None:
        return None
    return CommScores(**coherence, **fidelity)


# --- aggregation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommResult:
    n_samples: int
    left_out: int
    metrics: dict[str, float | None]
    """Each metric's plain mean over the scored samples (NA as 0); None without samples."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_comm(samples: Iterable[CommScores | None]) -> CommResult:
    """Aggregate per-sample scores; None entries (no readable result) are left out."""
    samples = list(samples)
    scored = [s for s in samples if s is not None]
    metrics = {
        name: (sum(getattr(s, name) or 0.0 for s in scored) / len(scored) if scored else None)
        for name in METRICS
    }
    return CommResult(len(scored), len(samples) - len(scored), metrics)
