"""What every benchmark module shares: errors that say what to download or which row is wrong,
readers of the official JSON files, and the JSON-in-text reader of judge answers.

The benchmarks' data may not be shipped with itk_rl (licences), so a missing file is the common
first error a user meets: it must name the file, where it comes from, and where to put it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class BenchmarkDataMissing(FileNotFoundError):
    """A benchmark file the user has to download is not there."""

    def __init__(self, path: Path, what: str, source: str) -> None:
        self.path = Path(path)
        super().__init__(
            f"benchmark data not found: {self.path} — download {what} from {source} "
            f"and put it at {self.path}"
        )


class BenchmarkFormatError(ValueError):
    """A row of an official file (or of an output file) is not in the official format."""

    def __init__(self, source: str | Path, row: int | str, field: str, problem: str) -> None:
        super().__init__(f"{source}, row {row}: field {field!r} {problem}")


def read_json(path: Path, what: str, source: str) -> Any:
    """The parsed JSON file at `path`; `what`/`source` say what to download when it is absent."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkDataMissing(path, what, source)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}") from err


def read_rows(path: Path, what: str, source: str) -> list[dict[str, Any]]:
    """Rows of a JSON list file or a JSON-lines file (`.jsonl`), each checked to be an object."""
    path = Path(path)
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise BenchmarkDataMissing(path, what, source)
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}, line {number}: not valid JSON: {err.msg}") from err
    else:
        rows = read_json(path, what, source)
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of records, got {type(rows).__name__}")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BenchmarkFormatError(path, index, "<record>", "is not a JSON object")
    return rows


def present(value: Any) -> bool:
    """Whether an optional official field holds a value (null, NaN and "" stand for absent)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return False
    return not (isinstance(value, float) and math.isnan(value))


def field(
    row: dict[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    source: Path | str,
    index: int | str,
) -> Any:
    """`row[name]`, which must exist and be of `kind` (bool is never an int here)."""
    if name not in row:
        raise BenchmarkFormatError(source, index, name, "is missing")
    value = row[name]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BenchmarkFormatError(source, index, name, f"must be {_names(kind)}, got bool")
    if not isinstance(value, kind):
        raise BenchmarkFormatError(
            source, index, name, f"must be {_names(kind)}, got {type(value).__name__}"
        )
    return value


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def strip_think(text: str) -> str:
    """The answer without a reasoning block (a thinking judge's `<think>…</think>`)."""
    text = _THINK.sub("", text)
    return text.split("</think>", 1)[1] if "</think>" in text else text


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """Every complete JSON object in `text`, outermost first, left to right.

    Judges wrap their JSON in prose or code fences; a complete object is read as written (no
    repair), so an answer whose JSON is broken yields nothing and counts as unreadable.
    """
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            yield value
        start = text.find("{", end)
