"""RISEBench: records and their judge calls, the output layout, "Final Score" answers, and the
official aggregation (logical mapping, consistency-free samples, full marks, missing = not
solved, accuracy over all samples and per category, the secondary score)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itk_rl.eval.benchmarks import BenchmarkDataMissing, BenchmarkFormatError
from itk_rl.eval.benchmarks.rise import (
    find_output_image,
    judge_calls,
    load_records,
    output_image,
    parse_final_score,
    read_dimension,
    score_rise,
    score_sample,
)

ROWS = [
    {
        "index": "temporal_reasoning_1",
        "category": "temporal_reasoning",
        "instruction": "a year",
        "image": "temporal_reasoning_images/1.png",
        "reference": "Rotten banana.",
        "subtask": "life",
    },
    {
        "index": "temporal_reasoning_2",
        "category": "temporal_reasoning",
        "instruction": "a day",
        "image": "t/2.png",
        "reference": "Wilted.",
        "subtask": "life",
        "consistency_free": None,
    },
    {
        "index": "causal_reasoning_1",
        "category": "causal_reasoning",
        "instruction": "drop it",
        "image": "c/1.png",
        "reference": "Broken.",
        "consistency_free": True,
        "reasoning_img": "x",
    },
    {
        "index": "causal_reasoning_2",
        "category": "causal_reasoning",
        "instruction": "heat it",
        "image": "c/2.png",
        "reference": "Melted.",
    },
    {
        "index": "spatial_reasoning_1",
        "category": "spatial_reasoning",
        "instruction": "assemble",
        "image": "s/1.png",
        "reference_img": "s/1_ref.png",
    },
    {
        "index": "spatial_reasoning_2",
        "category": "spatial_reasoning",
        "instruction": "view top",
        "image": "s/2.png",
        "reference": "A circle.",
        "reference_img": float("nan"),
    },
    {
        "index": "logical_reasoning_1",
        "category": "logical_reasoning",
        "instruction": "solve",
        "image": "l/1.png",
        "reference_txt": "B2",
    },
    {
        "index": "logical_reasoning_2",
        "category": "logical_reasoning",
        "instruction": "maze",
        "image": "l/2.png",
        "reference_img": "l/2_ref.png",
    },
    {
        "index": 9,
        "category": "logical_reasoning",
        "instruction": "sudoku",
        "image": "l/3.png",
        "reference_txt": "1 2 3",
    },
]


@pytest.fixture
def records(tmp_path: Path):
    path = tmp_path / "data_total.json"
    # json.dumps writes NaN as the official pandas-made files may hold it.
    path.write_text(json.dumps(ROWS), encoding="utf-8")
    return {r.index: r for r in load_records(path)}


def test_records_load_with_their_dimensions(records) -> None:
    assert list(records)[-1] == "9"  # integer indices become the strings of the file names
    assert records["temporal_reasoning_1"].subtask == "life"
    assert not records["temporal_reasoning_2"].consistency_free  # null: not consistency-free
    assert records["causal_reasoning_1"].consistency_free
    assert records["spatial_reasoning_2"].reference_img is None  # NaN: absent
    assert records["temporal_reasoning_1"].dimensions == (
        "consistency",
        "reasoning",
        "plausibility",
    )
    assert records["causal_reasoning_1"].dimensions == ("reasoning", "plausibility")
    assert records["logical_reasoning_1"].dimensions == ("consistency", "reasoning")


def test_judge_calls_follow_the_category(records) -> None:
    def calls(index):
        return [(c.dimension, c.role, c.images) for c in judge_calls(records[index])]

    assert calls("temporal_reasoning_1") == [
        ("consistency", "rise_consistency", ("input", "output")),
        ("reasoning", "rise_reasoning", ("output",)),
        ("plausibility", "rise_plausibility", ("output",)),
    ]
    assert calls("causal_reasoning_1") == [  # consistency-free; reasoning sees the input too
        ("reasoning", "rise_reasoning", ("input", "output")),
        ("plausibility", "rise_plausibility", ("output",)),
    ]
    assert calls("spatial_reasoning_1")[:2] == [  # a reference image: both judged against it
        ("consistency", "rise_consistency", ("reference", "output")),
        ("reasoning", "rise_reasoning_image", ("reference", "output")),
    ]
    assert calls("logical_reasoning_1") == [
        ("consistency", "rise_logical_consistency", ("input", "output")),
        ("reasoning", "rise_logical_reasoning", ("output",)),
    ]
    assert calls("logical_reasoning_2") == [
        ("consistency", "rise_logical_consistency", ("reference", "output")),
        ("reasoning", "rise_logical_reasoning_image", ("reference", "output")),
    ]
    assert judge_calls(records["logical_reasoning_1"])[1].values == {
        "instruction": "solve",
        "reference": "B2",
    }


def test_output_layout(records, tmp_path: Path) -> None:
    record = records["temporal_reasoning_1"]
    assert output_image(tmp_path, record) == (
        tmp_path / "images/temporal_reasoning/temporal_reasoning_1.png"
    )
    assert find_output_image(tmp_path, record) is None
    jpg = output_image(tmp_path, record, "jpg")
    jpg.parent.mkdir(parents=True)
    jpg.write_bytes(b"")
    assert find_output_image(tmp_path, record) == jpg
    output_image(tmp_path, record).write_bytes(b"")
    assert find_output_image(tmp_path, record).suffix == ".png"  # png first, as officially


def test_missing_data_file_says_what_to_download(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkDataMissing, match=r"data_total.json.*PhoenixZ810/RISEBench"):
        load_records(tmp_path / "data_total.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"category": "moral_reasoning"}, r"row 0: field 'category'"),
        ({"category": "logical_reasoning"}, r"row 0: field 'reference_txt'"),
        ({"instruction": None}, r"row 0: field 'instruction' must be str"),
        (
            {"category": "logical_reasoning", "reference_txt": "A", "consistency_free": 1},
            r"field 'consistency_free'",
        ),
    ],
)
def test_bad_rows_name_row_and_field(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{**ROWS[0], **change}]), encoding="utf-8")
    with pytest.raises(BenchmarkFormatError, match=message):
        load_records(path)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("**Final Score:** **4**", 4),
        ("Reasoning... Final Score: 3", 3),
        ("final score 5", 5),
        ("**Final Scores**: 2", 2),
        ("I give the final score below.\nFinal Score: 1\n", 1),
        ("Final Score: X", None),
        ("Score: 4", None),
    ],
)
def test_final_score_answers(answer: str, expected: int | None) -> None:
    assert parse_final_score(answer) == expected


def test_dimensions_off_their_scale_are_unreadable(records) -> None:
    temporal, logical = records["temporal_reasoning_1"], records["logical_reasoning_1"]
    assert read_dimension("Final Score: 5", temporal) == 5
    assert read_dimension("Final Score: 0", temporal) is None
    assert read_dimension("Final Score: 6", temporal) is None
    assert read_dimension("Final Score: 0", logical) == 0
    assert read_dimension("Final Score: 5", logical) is None  # 0/1 scale


def test_aggregation_by_hand(records) -> None:
    raw = {
        # 5,5,5: solved; 0.3·5 + 0.5·5 + 0.2·5 = 5
        "temporal_reasoning_1": {"consistency": 5, "reasoning": 5, "plausibility": 5},
        # AC 4: not solved; 1.2 + 2.5 + 1.0 = 4.7
        "temporal_reasoning_2": {"consistency": 4, "reasoning": 5, "plausibility": 5},
        # consistency-free, R 5, VP 5: solved without consistency; 0.2·5 + 0.8·5 = 5
        "causal_reasoning_1": {"reasoning": 5, "plausibility": 5},
        # R 1: 1.5 + 0.5 + 1.0 = 3.0 → max(3.0·0.5, 1) = 1.5; not solved
        "causal_reasoning_2": {"consistency": 5, "reasoning": 1, "plausibility": 5},
        # spatial_reasoning_1: no judgment at all (no image): not solved, no score
        # spatial_reasoning_2: reasoning unreadable → every dimension missing
        "spatial_reasoning_2": {"consistency": 5, "reasoning": None, "plausibility": 5},
        # logical 1/1 → 4·1+1 = 5 each: solved; 0.3·5 + 0.7·5 = 5
        "logical_reasoning_1": {"consistency": 1, "reasoning": 1},
        # logical c 1, r 0 → AC 5, R 1: 1.5 + 0.7 = 2.2 → max(1.1, 1) = 1.1
        "logical_reasoning_2": {"consistency": 1, "reasoning": 0},
        # logical c 0, r 1 → AC 1, R 5: 0.3 + 3.5 = 3.8; not solved
        "9": {"consistency": 0, "reasoning": 1},
    }
    result = score_rise(list(records.values()), raw)
    # solved: temporal_reasoning_1, causal_reasoning_1, logical_reasoning_1 → 3 of 9
    assert result.overall.accuracy == pytest.approx(3 / 9)
    assert result.to_dict()["overall"]["accuracy_pct"] == 33.3
    accuracy = {c: g.accuracy for c, g in result.categories.items()}
    assert accuracy == pytest.approx(
        {
            "temporal_reasoning": 0.5,
            "causal_reasoning": 0.5,
            "spatial_reasoning": 0.0,
            "logical_reasoning": 1 / 3,
        }
    )
    # secondary score over the 7 scored samples: (5 + 4.7 + 5 + 1.5 + 5 + 1.1 + 3.8) / 7 = 26.1 / 7
    assert result.overall.score == pytest.approx(26.1 / 7)
    assert result.to_dict()["overall"]["score_pct"] == pytest.approx(25 * (26.1 / 7 - 1))
    assert result.unscored == ("spatial_reasoning_1", "spatial_reasoning_2")
    # dimension means skip missing values: causal consistency only from causal_reasoning_2
    assert result.categories["causal_reasoning"].consistency == 5
    assert result.categories["temporal_reasoning"].consistency == pytest.approx(4.5)
    assert result.categories["logical_reasoning"].consistency == pytest.approx((5 + 5 + 1) / 3)
    assert result.categories["logical_reasoning"].plausibility is None
    assert result.categories["spatial_reasoning"].score is None
    # subtask "life": temporal_reasoning_1 solved, temporal_reasoning_2 not → 0.5
    assert result.subtasks["life"].accuracy == 0.5 and result.subtasks["life"].n == 2


def test_full_marks_need_every_dimension(records) -> None:
    sample = score_sample(
        records["temporal_reasoning_1"], {"consistency": 5, "reasoning": 5, "plausibility": 4}
    )
    assert not sample.solved
    # 1.5 + 2.5 + 0.8 = 4.8
    assert sample.score == pytest.approx(4.8)
    # consistency-free: a consistency value given anyway plays no part (0.2·5 + 0.8·5 = 5)
    free = score_sample(
        records["causal_reasoning_1"], {"consistency": 1, "reasoning": 5, "plausibility": 5}
    )
    assert free.solved and free.consistency is None and free.score == 5
