"""UEval: items from the hub export, the output file, the `criteria_met` rule, and the
aggregation (None rates skipped, missing outputs judged as empty, Avg over the 8 tasks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itk_rl.eval.benchmarks import BenchmarkDataMissing, BenchmarkFormatError
from itk_rl.eval.benchmarks.ueval import (
    TASKS,
    UEvalItem,
    UEvalOutput,
    load_items,
    output_for,
    parse_criteria_answer,
    read_outputs,
    score_item,
    score_ueval,
    write_outputs,
)


def _item(id_: str, task: str, texts: int, images: int) -> UEvalItem:
    return UEvalItem(
        id=id_,
        prompt=f"question {id_}",
        task=task,
        text_rubrics=tuple(f"text criterion {i}" for i in range(texts)),
        image_rubrics=tuple(f"image criterion {i}" for i in range(images)),
    )


def test_items_load_from_json_and_jsonl(tmp_path: Path) -> None:
    rows = [
        {
            "id": "1",
            "prompt": "How to tie a knot?",
            "task": "life",
            "text_ref": "Loop…",
            "text_rubrics": ["names the knot", ""],
            "image_rubrics": [{"criterion": "shows a loop"}],
        },
        {
            "id": 2,
            "prompt": "Draw the orbit.",
            "task": "Space",
            "text_rubrics": None,
            "image_rubrics": ["an ellipse"],
        },
    ]
    path = tmp_path / "ueval.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    items = load_items(path)
    assert items[0] == UEvalItem(
        "1", "How to tie a knot?", "life", ("names the knot",), ("shows a loop",), "Loop…"
    )  # the empty rubric entry is dropped, as officially
    assert (items[1].id, items[1].task, items[1].text_rubrics) == ("2", "space", ())
    assert items[0].is_open and not items[1].is_open
    lines = tmp_path / "ueval.jsonl"  # older exports name the task `task_type`
    older = {k: v for k, v in rows[1].items() if k != "task"}
    lines.write_text(json.dumps({**older, "task_type": "paper"}) + "\n")
    rows_read = load_items(lines)
    assert rows_read[0].task == "paper"


def test_bad_rows_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "ueval.json"
    path.write_text(json.dumps([{"id": "1", "prompt": "q", "task": "cooking"}]))
    with pytest.raises(BenchmarkFormatError, match=r"row 0: field 'task'"):
        load_items(path)
    path.write_text(json.dumps([{"id": "1", "prompt": "q", "task": "art", "text_rubrics": "x"}]))
    with pytest.raises(BenchmarkFormatError, match=r"row 0: field 'text_rubrics' must be a list"):
        load_items(path)
    with pytest.raises(BenchmarkDataMissing, match=r"absent.json.*zlab-princeton/UEval"):
        load_items(tmp_path / "absent.json")


def test_output_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "outputs.json"
    write_outputs(path, [UEvalOutput("1", "Step 1: loop.", ("images/1_1.png", "images/1_2.png"))])
    assert json.loads(path.read_text()) == [
        {
            "id": "1",
            "text_answer": "Step 1: loop.",
            "image_answer": ["images/1_1.png", "images/1_2.png"],
        }
    ]
    path.write_text(json.dumps([{"id": 7, "text_answer": None, "image_answer": "a.png"}]))
    assert read_outputs(path) == {"7": UEvalOutput("7", "", ("a.png",))}
    path.write_text(json.dumps([{"id": 7, "image_answer": [3]}]))
    with pytest.raises(BenchmarkFormatError, match=r"row 0: field 'image_answer'"):
        read_outputs(path)


def test_a_missing_output_is_an_empty_answer() -> None:
    item = _item("9", "art", 1, 1)
    assert output_for(item, {}) == UEvalOutput("9", "", ())
    given = UEvalOutput("9", "text", ("a.png",))
    assert output_for(item, {"9": given}) is given


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"criteria_met": true}', True),
        ('{"criteria_met": false}', False),
        ('```json\n{"criteria_met": "not sure"}\n```', False),  # stays in the denominator
        ('The text covers it. {"criteria_met": "Yes", "explanation": "ok"}', True),
        ('Missing {nodel} here; {"criteria_met": "TRUE"}', True),
        ('{"criteria_met": "unknown"}', False),
        ('{"criteria_met": 1}', False),  # only true-like values: a JSON number is not one
        ('{"explanation": "no verdict"}', None),
        ('{"criteria_met": tru', None),
        ("Yes, it is met.", None),
    ],
)
def test_criteria_answers(answer: str, expected: bool | None) -> None:
    assert parse_criteria_answer(answer) is expected


def test_aggregation_by_hand() -> None:
    a, b = _item("a", "art", 4, 2), _item("b", "art", 2, 0)
    c, d = _item("c", "space", 0, 3), _item("d", "space", 2, 1)
    not_sure = parse_criteria_answer('{"criteria_met": "not sure"}')
    scores = [
        # text: met, not met, not sure, unreadable after retries → 1/4; image 2/2
        score_item(a, [True, False, not_sure, None], [True, True]),
        # text 2/2; no image rubrics → image rate None (skipped, not 0)
        score_item(b, [True, True], []),
        # no text rubrics → None; image 1/3
        score_item(c, [], [True, False, False]),
        # "d" had no output: judged as empty, nothing met → 0/2 and 0/1
        score_item(d, [False, False], [False]),
    ]
    assert (scores[0].text_rate, scores[1].image_rate, scores[2].text_rate) == (0.25, None, None)
    result = score_ueval(scores)
    # text over items with text rubrics: (0.25 + 1.0 + 0.0) / 3; image: (1.0 + 1/3 + 0.0) / 3
    assert result.overall.text == pytest.approx(1.25 / 3)
    assert result.overall.image == pytest.approx((4 / 3) / 3)
    # art: text (0.25 + 1.0) / 2 = 0.625, image 1.0 (a only) → column (0.625 + 1.0) / 2 = 0.8125
    assert result.tasks["art"].score == pytest.approx(0.8125)
    # space: text 0.0 (d only), image (1/3 + 0) / 2 = 1/6 → column 1/12
    assert result.tasks["space"].score == pytest.approx(1 / 12)
    assert result.tasks["life"].score is None
    assert result.avg is None  # six tasks have no items
    assert result.to_dict()["tasks"]["art"]["n_items"] == 2


def test_avg_is_the_mean_of_the_eight_task_columns() -> None:
    # one text and one image rubric per item; (text, image) verdicts per item
    verdicts = {
        "space": [(True, True), (False, True)],  # text (1 + 0)/2 = .5, image 1 → column .75
        "textbook": [(True, False)],  # .5
        "diagram": [(False, False)],  # 0
        "paper": [(True, True)],  # 1
        "art": [(False, True)],  # .5
        "life": [(False, False)],  # 0
        "tech": [(True, True)],  # 1
        "exercise": [(True, False)],  # .5
    }
    scores = [
        score_item(_item(f"{task}{i}", task, 1, 1), [t], [m])
        for task, pairs in verdicts.items()
        for i, (t, m) in enumerate(pairs)
    ]
    result = score_ueval(scores)
    assert list(result.tasks) == list(TASKS)
    # (.75 + .5 + 0 + 1 + .5 + 0 + 1 + .5) / 8 = 4.25 / 8 — not the mean over the 9 items
    # ((1 + .5 + .5 + 0 + 1 + .5 + 0 + 1 + .5) / 9 = 5 / 9)
    assert result.avg == pytest.approx(4.25 / 8)


def test_verdicts_must_match_the_rubric() -> None:
    with pytest.raises(ValueError, match="item x: 1 text verdicts for 2 text rubric items"):
        score_item(_item("x", "art", 2, 0), [True], [])
