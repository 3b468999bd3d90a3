"""What the drivers share (`itk_rl.job`): the metrics log trimmed on resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itk_rl.eval.report import read_metrics
from itk_rl.job import trim_metrics


def _line(step: int) -> str:
    return json.dumps({"step": step, "loss": 1.0 / step}) + "\n"


def _write(path: Path, steps: range, tail: str = "") -> None:
    path.write_text("".join(_line(step) for step in steps) + tail)


def test_a_torn_last_line_is_dropped_and_complete_records_up_to_the_step_kept(
    tmp_path: Path,
) -> None:
    # A run killed while appending step 6 leaves half a record and no newline.
    path = tmp_path / "metrics.jsonl"
    _write(path, range(1, 6), tail=_line(6)[:17])
    trim_metrics(path, 3)
    assert path.read_text() == "".join(_line(step) for step in range(1, 4))

    _write(path, range(1, 6), tail=_line(6)[:17])
    trim_metrics(path, 10)  # the checkpoint is newer than every complete record
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]
    with path.open("a") as handle:  # what the resumed run appends reads back whole
        handle.write(_line(6))
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5, 6]


def test_a_whole_last_record_without_its_newline_is_kept_on_a_line_of_its_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, range(1, 3), tail=_line(3).rstrip("\n"))
    trim_metrics(path, 3)
    with path.open("a") as handle:
        handle.write(_line(4))
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]


def test_an_unreadable_line_before_the_last_raises_naming_the_file_and_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "metrics.jsonl"
    _write(path, range(1, 3), tail=_line(3)[:10] + "\n" + _line(4))
    before = path.read_text()
    with pytest.raises(ValueError, match=r"metrics\.jsonl line 3 of 4: .*corrupt"):
        trim_metrics(path, 4)
    assert path.read_text() == before  # nothing is lost to the error


def test_a_missing_log_stays_missing(tmp_path: Path) -> None:
    trim_metrics(tmp_path / "metrics.jsonl", 3)
    assert not (tmp_path / "metrics.jsonl").exists()
