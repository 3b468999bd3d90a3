"""Critic records on disk: exact round trip, and errors that name the file, row and field."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import numpy as np
import pytest

from itk_rl.data.critic_records import (
    critic_sft_features,
    load_critic_records,
    load_critic_sft_records,
    save_critic_records,
)
from itk_rl.formats.images import RecordError, white_canvas
from itk_rl.formats.records import CriticSample, Evaluation, critic_sample_features


def _sample(value: int, success: bool) -> CriticSample:
    rng = np.random.default_rng(value)
    before, after = (rng.integers(0, 256, (8, 12, 3), dtype=np.uint8) for _ in range(2))
    return CriticSample(
        f"draw {value}", f"paint {value}", before, after, Evaluation(3, 7.5, success), value == 0
    )


def test_records_round_trip_pixel_for_pixel(tmp_path: Path) -> None:
    samples = [_sample(0, False), _sample(1, True)]
    path = save_critic_records(samples, tmp_path / "rl" / "train.parquet")
    loaded = load_critic_records(path)
    assert not path.with_name("train.parquet.partial").exists()
    assert len(loaded) == 2
    for original, back in zip(samples, loaded, strict=True):
        assert back.origin_prompt == original.origin_prompt
        assert back.rewritten_prompt == original.rewritten_prompt
        np.testing.assert_array_equal(back.origin_image, original.origin_image)
        np.testing.assert_array_equal(back.edited_image, original.edited_image)
        assert back.evaluation == original.evaluation
        assert back.text_to_image == original.text_to_image


def test_a_bad_row_is_named_with_its_field(tmp_path: Path) -> None:
    rows = [_sample(0, False).to_row(), _sample(1, True).to_row()]
    rows[1]["evaluation"]["semantics"] = 11.0
    path = tmp_path / "bad.parquet"
    datasets.Dataset.from_list(rows, features=critic_sample_features()).to_parquet(str(path))
    with pytest.raises(RecordError, match=r"bad\.parquet row 1\.evaluation.*semantics"):
        load_critic_records(path)


def test_missing_file_and_missing_column_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.parquet"):
        load_critic_records(tmp_path / "nowhere.parquet")
    path = tmp_path / "partial.parquet"
    datasets.Dataset.from_list([{"origin_prompt": "x"}]).to_parquet(str(path))
    with pytest.raises(RecordError, match=r"missing column.*edited_image"):
        load_critic_records(path)


def test_a_file_written_before_text_to_image_loads_with_it_read_from_the_before_image(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # What the build wrote before the column existed: step 1 from a white canvas, an edit from
    # the previous step's image.
    step_1 = _sample(0, False)
    step_1 = CriticSample(
        "draw", "draw", white_canvas(8, 12), step_1.edited_image, step_1.evaluation, True
    )
    step_2 = _sample(1, True)
    rows = [{k: v for k, v in s.to_row().items() if k != "text_to_image"} for s in (step_1, step_2)]
    for features, load in (
        (critic_sample_features(), load_critic_records),
        (critic_sft_features(), load_critic_sft_records),
    ):
        old = datasets.Features({k: v for k, v in features.items() if k != "text_to_image"})
        path = tmp_path / f"old_{load.__name__}.parquet"
        table = [{**row, "target": "<answer>"} for row in rows] if "target" in old else rows
        datasets.Dataset.from_list(table, features=old).to_parquet(str(path))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="itk_rl.data.critic_records"):
            loaded = load(path)
        samples = [item[0] if isinstance(item, tuple) else item for item in loaded]
        assert [s.text_to_image for s in samples] == [True, False]
        np.testing.assert_array_equal(samples[1].origin_image, step_2.origin_image)
        assert [r.getMessage() for r in caplog.records] == [
            f"{path} predates the 'text_to_image' column: each row's is read from its "
            "before-image (all white: text-to-image), which misreads an edit of a white image; "
            "rebuild the data to record it"
        ]
