"""CoMM tasks 3–4: records (JSON and the official .pth), per-sample results in the official
layout, the three judge answers, and the seven plain means (NA → 0, unreadable left out)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itk_rl.eval.benchmarks import BenchmarkDataMissing, BenchmarkFormatError
from itk_rl.eval.benchmarks.comm import (
    CommEntry,
    CommOutput,
    CommScores,
    load_records,
    parse_coherence_answer,
    parse_descriptions_answer,
    parse_fidelity_answer,
    read_evaluation,
    read_output,
    sample_dir,
    sample_scores,
    score_comm,
    write_evaluation,
    write_output,
)

RECORD = {
    "data_id": "abc",
    "title": "Indoor garden",
    "step_info": [
        [
            {"type": "text", "content": "Pick a pot."},
            {"type": "image", "content": None, "image_path": "abc/0.jpg", "url": "http://x/0.jpg"},
        ],
        [{"type": "text", "content": "Add soil."}],
    ],
}


def test_records_load_from_json(tmp_path: Path) -> None:
    path = tmp_path / "test.json"
    path.write_text(json.dumps([RECORD]))
    (record,) = load_records(path)
    assert (record.data_id, record.title, len(record.steps)) == ("abc", "Indoor garden", 2)
    assert record.steps[0][1] == CommEntry("image", "", "abc/0.jpg")
    path.write_text(json.dumps([{**RECORD, "step_info": [[{"type": "video"}]]}]))
    with pytest.raises(BenchmarkFormatError, match=r"row 0: field 'step_info'"):
        load_records(path)
    with pytest.raises(BenchmarkDataMissing, match=r"test_data.pth.*weisuxi/CoMM"):
        load_records(tmp_path / "test_data.pth")


def test_records_load_from_the_official_pth(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "test_data.pth"
    torch.save([RECORD], path)
    assert load_records(path)[0].steps[1] == (CommEntry("text", "Add soil."),)


def test_sample_results_round_trip(tmp_path: Path) -> None:
    folder = sample_dir(tmp_path, "abc", 3)
    assert folder == tmp_path / "abc_task3"
    output = CommOutput(
        "(1) Pick a pot. <IMAGE>", "(2) Add soil. <IMAGE>", ("in_1.jpg",), ("predict_2.jpg",)
    )
    write_output(folder, output)
    assert json.loads((folder / "results.json").read_text())["prediction_image_list"] == [
        "predict_2.jpg"
    ]
    assert read_output(folder) == output
    scores = CommScores(8, 6, 7, 7, 9, 5, None)
    write_evaluation(folder, scores)
    saved = json.loads((folder / "evaluation_results.json").read_text())
    assert saved["coherence_score"]["trend_consistency"] == 7  # the official keys
    assert saved["Image_Quality"] == {"Score": 5} and saved["completeness"] == {"Score": 9}
    assert read_evaluation(folder) == scores
    assert read_evaluation(tmp_path / "abc_task4") is None  # never judged: left out
    with pytest.raises(ValueError, match="task must be one of"):
        sample_dir(tmp_path, "abc", 1)


COHERENCE = """Here is my evaluation.
{"scores": {"Image_Coherence": {"pair_scores": {}, "overall_score": {"justification": "ok",
 "style_consistency": 8, "entity_consistency": "6", "trend_consistency": 7,
 "overall_consistency": "NA"}},
 "Completeness": {"Score": 9}, "Image_Quality": {"Justification": "sharp", "Score": 5.5}}}
Done."""


def test_coherence_answer() -> None:
    assert parse_coherence_answer(COHERENCE) == {
        "style_consistency": 8.0,
        "entity_consistency": 6.0,
        "trend_consistency": 7.0,
        "overall_consistency": None,  # NA
        "completeness": 9.0,
        "image_quality": 5.5,
    }
    assert parse_coherence_answer(COHERENCE.replace('"Completeness"', '"Complete"')) is None
    assert parse_coherence_answer(COHERENCE.replace('"Score": 9', '"Score": 11')) is None
    assert parse_coherence_answer(COHERENCE.replace('"6"', '"six"')) is None
    assert parse_coherence_answer("no JSON here") is None


def test_descriptions_and_fidelity_answers() -> None:
    descriptions = (
        '{"Tasks": {"Create an Interleaved Text-Image Document": '
        '{"Content of Image 3": "soil in a pot", "Content of Image 2": "an empty pot"}}}'
    )
    assert parse_descriptions_answer(descriptions) == ("an empty pot", "soil in a pot")
    assert parse_descriptions_answer('{"Tasks": {"x": {}}}') is None
    assert parse_descriptions_answer('{"Tasks": {"x": {"Content of Image 0": 3}}}') is None
    fidelity = (
        '```json\n{"Consistency": {"image_1_score": 6, "overall_score": 6, "Justification": ""}}'
        "\n```"
    )
    assert parse_fidelity_answer(fidelity) == {"text_fidelity": 6.0}
    assert parse_fidelity_answer('{"Consistency": {"overall_score": "NA"}}') == {
        "text_fidelity": None
    }
    assert parse_fidelity_answer('{"Consistency": {"image_1_score": 6}}') is None


def test_seven_plain_means_with_na_as_zero() -> None:
    s1 = sample_scores(
        {
            "style_consistency": 8,
            "entity_consistency": 6,
            "trend_consistency": 7,
            "overall_consistency": 7,
            "completeness": 9,
            "image_quality": 5,
        },
        {"text_fidelity": 6},
    )
    s2 = sample_scores(
        {
            "style_consistency": None,
            "entity_consistency": 4,
            "trend_consistency": 5,
            "overall_consistency": 3,
            "completeness": 6,
            "image_quality": 7,
        },
        {"text_fidelity": None},
    )
    unreadable = sample_scores(None, {"text_fidelity": 9})
    assert unreadable is None
    result = score_comm([s1, s2, unreadable])
    assert (result.n_samples, result.left_out) == (2, 1)
    # style (8 + NA→0) / 2 = 4 (not 8, as skipping NA would give); entity (6 + 4) / 2 = 5;
    # trend (7 + 5) / 2 = 6; overall (7 + 3) / 2 = 5; completeness (9 + 6) / 2 = 7.5;
    # image quality (5 + 7) / 2 = 6; text fidelity (6 + NA→0) / 2 = 3
    assert result.metrics == {
        "style_consistency": 4.0,
        "entity_consistency": 5.0,
        "trend_consistency": 6.0,
        "overall_consistency": 5.0,
        "completeness": 7.5,
        "image_quality": 6.0,
        "text_fidelity": 3.0,
    }
    assert score_comm([]).metrics["completeness"] is None
    assert result.to_dict()["left_out"] == 1
