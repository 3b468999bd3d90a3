"""WISE: loading both protocols' files, the judges' answer rules, and the official aggregation
(each protocol's range table and weights; no overall when an id is missing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itk_rl.eval.benchmarks import BenchmarkDataMissing, BenchmarkFormatError
from itk_rl.eval.benchmarks.wise import (
    LegacyScores,
    Protocol,
    category_of,
    image_path,
    load_prompts,
    parse_legacy_answer,
    parse_verified_answer,
    score_wise,
)


def _row(prompt_id: int, category: str) -> dict:
    return {
        "Prompt": f"prompt {prompt_id}",
        "Explanation": f"explanation {prompt_id}",
        "Category": category,
        "Subcategory": "sub",
        "prompt_id": prompt_id,
    }


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows), encoding="utf-8")


@pytest.fixture
def legacy_checkout(tmp_path: Path) -> Path:
    """A WISE checkout with the three legacy files, a few prompts each (ids as officially)."""
    data = tmp_path / "WISE_legacy" / "data"
    _write(data / "cultural_common_sense.json", [_row(1, "Cultural knowledge")])
    _write(data / "spatio-temporal_reasoning.json", [_row(530, "time"), _row(600, "Space")])
    _write(data / "natural_science.json", [_row(750, "Biology"), _row(990, "Chemistry")])
    return tmp_path


def test_legacy_files_load_from_a_checkout(legacy_checkout: Path) -> None:
    prompts = load_prompts(legacy_checkout, Protocol.LEGACY)
    assert [(p.prompt_id, p.category) for p in prompts] == [
        (1, "culture"),
        (530, "time"),
        (600, "space"),
        (750, "biology"),
        (990, "chemistry"),
    ]
    assert prompts[0].prompt == "prompt 1" and prompts[0].explanation == "explanation 1"


def test_legacy_files_under_the_verified_table_are_refused(legacy_checkout: Path) -> None:
    """The trap: id 530 is `time` in the legacy files but `space` in the verified table."""
    files = [legacy_checkout / "WISE_legacy/data/spatio-temporal_reasoning.json"]
    with pytest.raises(BenchmarkFormatError, match=r"row 0: field 'Category'.*legacy file"):
        load_prompts(files, Protocol.VERIFIED)


def test_verified_checkout_prefers_merge_json(tmp_path: Path) -> None:
    _write(tmp_path / "data_verified/merge.json", [_row(530, "Space"), _row(641, "Biology")])
    prompts = load_prompts(tmp_path, Protocol.VERIFIED)
    assert [(p.prompt_id, p.category) for p in prompts] == [(530, "space"), (641, "biology")]


def test_missing_file_says_what_to_download(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkDataMissing) as err:
        load_prompts(tmp_path, Protocol.LEGACY)
    message = str(err.value)
    assert "cultural_common_sense.json" in message and "PKU-YuanGroup/WISE" in message
    assert str(tmp_path / "WISE_legacy/data") in message


def test_bad_rows_name_file_row_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    _write(
        bad, [_row(1, "Cultural knowledge"), {**_row(2, "Cultural knowledge"), "prompt_id": "2"}]
    )
    with pytest.raises(BenchmarkFormatError, match=r"bad.json, row 1: field 'prompt_id'"):
        load_prompts(bad, Protocol.LEGACY)
    _write(bad, [_row(1, "Cultural knowledge"), _row(1, "Cultural knowledge")])
    with pytest.raises(BenchmarkFormatError, match="repeats"):
        load_prompts(bad, Protocol.LEGACY)


def test_image_path_is_the_official_layout(tmp_path: Path) -> None:
    assert image_path(tmp_path, 17) == tmp_path / "17.png"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Consistency: 2\nRealism: 1\nAesthetic Quality: 0", (2, 1, 0)),
        ("**Consistency:** 1\n**REALISM**: 2\n**Aesthetic Quality** : 1", (1, 2, 1)),
        ("consistency：0\nrealism 0\naesthetic  quality: 2", (0, 0, 2)),
        ("2\n1\n0\n", (2, 1, 0)),  # the bare-line fallback, read in order
        (
            "<think>Consistency: 0</think>Consistency: 2\nRealism: 2\nAesthetic Quality: 2",
            (2, 2, 2),
        ),
    ],
)
def test_legacy_answers_are_read(answer: str, expected: tuple[int, int, int]) -> None:
    assert parse_legacy_answer(answer) == LegacyScores(*expected)


@pytest.mark.parametrize(
    "answer",
    [
        "Consistency: 2\nRealism: 1",  # a name missing: no fallback to bare lines
        "Consistency: 3\nRealism: 1\nAesthetic Quality: 0",  # off the 0–2 scale
        "Consistency: 10\nRealism: 1\nAesthetic Quality: 0",  # not read as 1
        "2\n1\n",  # two bare lines only
        "A fine picture.",
    ],
)
def test_unreadable_legacy_answers_give_none(answer: str) -> None:
    assert parse_legacy_answer(answer) is None


def test_wiscore() -> None:
    # (0.7·2 + 0.2·1 + 0.1·0) / 2 = (1.4 + 0.2) / 2 = 0.8
    assert LegacyScores(2, 1, 0).wiscore == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Score: 1", 1),
        ("**Score:** 0", 0),
        ("The image is wrong.\nscore：0", 0),
        ("Looks right.\n1\n", 1),  # a bare 0/1 line
        ("Score: 10", None),
        ("Score: 2", None),
        ("I cannot tell.", None),
    ],
)
def test_verified_answers(answer: str, expected: int | None) -> None:
    assert parse_verified_answer(answer) == expected


def _by_range(protocol: Protocol, ones: set[str]) -> dict[int, float]:
    """1.0 for the ids of the named categories under `protocol`'s table, 0.0 for all others."""
    return {i: float(category_of(i, protocol) in ones) for i in range(1, 1001)}


def test_the_two_range_tables_differ_in_five_categories() -> None:
    """Verified scores: culture, time, biology, chemistry right (1), space and physics wrong."""
    scores = _by_range(Protocol.VERIFIED, {"culture", "time", "biology", "chemistry"})
    verified = score_wise(scores, Protocol.VERIFIED)
    assert verified.categories == {
        "culture": 1.0,
        "time": 1.0,
        "space": 0.0,
        "biology": 1.0,
        "physics": 0.0,
        "chemistry": 1.0,
    }
    # 0.4·1 + 0.12·(1 + 0 + 1 + 0 + 1) = 0.4 + 0.36 = 0.76
    assert verified.overall == pytest.approx(0.76)
    # The same scores under the legacy table (the trap):
    # time 401–567: 120 ones (401–520) + 47 zeros → 120/167
    # space 568–700: 73 zeros (568–640) + 60 ones (641–700) → 60/133
    # biology 701–800: 60 ones (701–760) + 40 zeros → 0.6; physics 801–900: 80 zeros + 20 ones
    # (881–900) → 0.2; culture and chemistry unchanged (1.0)
    wrong = score_wise(scores, Protocol.LEGACY)
    assert wrong.categories["time"] == pytest.approx(120 / 167)
    assert wrong.categories["space"] == pytest.approx(60 / 133)
    assert wrong.categories["biology"] == pytest.approx(0.6)
    assert wrong.categories["physics"] == pytest.approx(0.2)
    assert wrong.categories["chemistry"] == verified.categories["chemistry"] == 1.0
    assert wrong.counts == {
        "culture": 400,
        "time": 167,
        "space": 133,
        "biology": 100,
        "physics": 100,
        "chemistry": 100,
    }
    assert verified.counts["time"] == verified.counts["physics"] == 120


def test_each_protocol_weighs_its_categories() -> None:
    """Only the time category right: the overall is that category's weight."""
    assert score_wise(_by_range(Protocol.LEGACY, {"time"}), Protocol.LEGACY).overall == (
        pytest.approx(0.167)
    )
    assert score_wise(_by_range(Protocol.VERIFIED, {"time"}), Protocol.VERIFIED).overall == (
        pytest.approx(0.12)
    )
    # Only culture right: 0.4 under both (not the plain mean of six categories, 1/6).
    for protocol in Protocol:
        result = score_wise(_by_range(protocol, {"culture"}), protocol)
        assert result.overall == pytest.approx(0.4)


def test_a_missing_or_unreadable_id_gives_no_overall() -> None:
    scores = _by_range(Protocol.LEGACY, {"culture"})
    del scores[1000]
    scores[5] = None
    result = score_wise(scores, Protocol.LEGACY)
    assert result.overall is None
    assert result.missing_ids == (5, 1000)
    # Categories still average what was scored: chemistry 99 zeros, culture 399 ones.
    assert result.counts["chemistry"] == 99 and result.counts["culture"] == 399
    assert result.categories["culture"] == 1.0
    assert result.to_dict()["overall"] is None


def test_legacy_category_means_from_answers() -> None:
    # id 1: (2, 2, 2) → (1.4 + 0.4 + 0.2) / 2 = 1.0; id 2: (1, 0, 2) → (0.7 + 0 + 0.2) / 2 = 0.45
    # culture = (1.0 + 0.45) / 2 = 0.725; no other category has samples.
    answers = {1: "Consistency: 2\nRealism: 2\nAesthetic Quality: 2", 2: "1\n0\n2"}
    scores = {i: parse_legacy_answer(a).wiscore for i, a in answers.items()}
    result = score_wise(scores, Protocol.LEGACY)
    assert result.categories["culture"] == pytest.approx(0.725)
    assert result.categories["time"] is None and result.overall is None


def test_ids_outside_the_benchmark_are_refused() -> None:
    with pytest.raises(ValueError, match="1001"):
        score_wise({1001: 1.0}, Protocol.VERIFIED)
