"""Critic samples (the RL/SFT record) through JSON + PNG files and a real `datasets.Dataset`."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from itk_rl.formats.images import RecordError, white_canvas
from itk_rl.formats.records import CriticSample, Evaluation, critic_sample_features


def _sample(seed: int, success: bool) -> CriticSample:
    rng = np.random.default_rng(seed)
    return CriticSample(
        origin_prompt="a red circle on the left",
        rewritten_prompt="a crimson disc on the left",
        origin_image=white_canvas(10, 14),
        edited_image=rng.integers(0, 256, (10, 14, 3), dtype=np.uint8),
        evaluation=Evaluation(semantics=3.5 + seed, quality=8, success=success),
        text_to_image=seed % 2 == 0,
    )


def _assert_same(a: CriticSample, b: CriticSample) -> None:
    assert (a.origin_prompt, a.rewritten_prompt, a.evaluation, a.text_to_image) == (
        b.origin_prompt,
        b.rewritten_prompt,
        b.evaluation,
        b.text_to_image,
    )
    np.testing.assert_array_equal(a.origin_image, b.origin_image)
    np.testing.assert_array_equal(a.edited_image, b.edited_image)


def test_fields_are_the_design_fields_and_text_to_image() -> None:
    assert set(critic_sample_features()) == {
        "origin_prompt",
        "rewritten_prompt",
        "origin_image",
        "edited_image",
        "evaluation",
        "text_to_image",
    }
    assert set(critic_sample_features()["evaluation"]) == {"semantics", "quality", "success"}


def test_json_round_trip(tmp_path: Path) -> None:
    samples = [_sample(0, False), _sample(1, True)]
    rows = [s.to_json_dict(tmp_path) for s in samples]
    text = json.dumps(rows)
    assert len(list(tmp_path.iterdir())) == 3  # the white canvas is stored once
    for sample, row in zip(samples, json.loads(text), strict=True):
        assert row["evaluation"] == sample.evaluation.to_dict()
        _assert_same(sample, CriticSample.from_json_dict(row, tmp_path))


def test_dataset_round_trip_save_to_disk_and_parquet(tmp_path: Path) -> None:
    datasets.disable_progress_bars()
    samples = [_sample(i, i % 2 == 0) for i in range(3)]
    table = datasets.Dataset.from_list(
        [s.to_row() for s in samples], features=critic_sample_features()
    )
    table.save_to_disk(str(tmp_path / "ds"))
    table.to_parquet(str(tmp_path / "critic.parquet"))
    from_disk = datasets.load_from_disk(str(tmp_path / "ds"))
    from_parquet = datasets.Dataset.from_parquet(
        str(tmp_path / "critic.parquet"), cache_dir=str(tmp_path / "cache")
    )
    undecoded = from_disk.cast_column("edited_image", datasets.Image(decode=False))
    for table in (from_disk, from_parquet, undecoded):
        assert table.features == critic_sample_features() or table is undecoded
        for i, sample in enumerate(samples):
            _assert_same(sample, CriticSample.from_row(table[i], where=f"row {i}"))


def test_missing_field_is_named(tmp_path: Path) -> None:
    row = _sample(0, True).to_json_dict(tmp_path)
    del row["evaluation"]["success"]
    with pytest.raises(RecordError, match=r"critic sample\.evaluation: missing field 'success'"):
        CriticSample.from_json_dict(row, tmp_path)
    row = _sample(0, True).to_row()
    del row["rewritten_prompt"]
    with pytest.raises(RecordError, match="row 7: missing field 'rewritten_prompt'"):
        CriticSample.from_row(row, where="row 7")
    row = _sample(0, True).to_row()
    row["edited_image"] = {"bytes": b"not a png", "path": None}
    with pytest.raises(RecordError, match=r"row\.edited_image: bytes are not a readable image"):
        CriticSample.from_row(row)


def test_evaluation_is_validated() -> None:
    with pytest.raises(ValueError, match=r"evaluation\.quality must be within 0–10, got 11"):
        Evaluation(5.0, 11, True)
    with pytest.raises(TypeError, match=r"evaluation\.success must be a bool, got str"):
        Evaluation(5.0, 5.0, "yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"evaluation\.semantics must be a number"):
        Evaluation(True, 5.0, True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"edited_image must be a uint8 array"):
        CriticSample(
            "a", "b", white_canvas(2, 2), np.zeros((2, 2, 3)), Evaluation(1, 1, False), True
        )


def test_text_to_image_is_validated_and_named() -> None:
    sample = _sample(0, True)
    with pytest.raises(TypeError, match=r"text_to_image must be a bool, got str"):
        CriticSample("a", "b", sample.origin_image, sample.edited_image, sample.evaluation, "yes")
    row = sample.to_row()
    row["text_to_image"] = None
    with pytest.raises(RecordError, match=r"row 3\.text_to_image: expected true or false"):
        CriticSample.from_row(row, where="row 3")


def test_a_record_written_before_text_to_image_reads_it_from_a_white_before_image(
    tmp_path: Path,
) -> None:
    # The data build wrote step 1's before-image as a white canvas and nothing else said so.
    first, edit = _sample(0, False), _sample(1, True)
    edit = CriticSample("a", "b", edit.edited_image, edit.edited_image, edit.evaluation, False)
    for sample, expected in ((first, True), (edit, False)):
        row = sample.to_json_dict(tmp_path)
        del row["text_to_image"]
        assert CriticSample.from_json_dict(row, tmp_path).text_to_image is expected
