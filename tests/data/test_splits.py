"""Planner-SFT truncation pairs, held-out sides, and the dataset files round trip."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from itk_rl.data.critic_records import load_critic_sft_records, save_critic_sft_records
from itk_rl.data.filters import FilterConfig
from itk_rl.data.planner_records import load_planner_pairs, save_planner_pairs
from itk_rl.data.splits import EVAL, critic_candidates, planner_pairs, side_of
from itk_rl.formats import parse_planner_output
from itk_rl.formats.images import RecordError


def test_every_truncation_is_consistent_with_the_plan(made_trajectory):
    made = made_trajectory([10.0], [8.0, 10.0], [0.0, 10.0], [9.0])
    plan = made.plan
    seen_cuts = set()
    for seed in range(20):
        pairs = planner_pairs("t", made, cuts=2, seed=seed)
        assert len(pairs) == 2 and pairs[0].cut < pairs[1].cut
        for pair in pairs:
            seen_cuts.add(pair.cut)
            k = pair.cut
            assert pair.num_steps == 4 and pair.request == "a request"
            assert pair.prefix_texts == tuple(s.display_text for s in plan.steps[:k])
            for image, record in zip(pair.prefix_images, made.steps[:k], strict=True):
                assert np.array_equal(image, record.final.image)  # the kept attempt's image
            rest = parse_planner_output(pair.target)
            assert rest.think == "plan it"
            # The target is the rest of the plan, its steps keeping their numbers (the parser
            # renumbers them 1..n, noting it), so prefix + rest is the whole plan.
            rest_steps = [replace(s, step_number=k + i) for i, s in enumerate(rest.value.steps, 1)]
            assert plan.steps[:k] + tuple(rest_steps) == plan.steps
            assert f'"step_number": {k + 1}' in pair.target
    assert seen_cuts == {0, 1, 2, 3}  # random cuts cover every point over seeds
    assert [p.cut for p in planner_pairs("t", made, 2, 5)] == [
        p.cut for p in planner_pairs("t", made, 2, 5)
    ]  # seeded
    assert [p.cut for p in planner_pairs("t", made, cuts=9, seed=0)] == [0, 1, 2, 3]


def test_held_out_side_is_a_stable_function_of_the_id():
    ids = [f"{i:06d}" for i in range(2000)]
    sides = [side_of(i, 0.2, seed=0) for i in ids]
    assert 0.17 < sides.count(EVAL) / len(ids) < 0.23
    assert sides == [side_of(i, 0.2, seed=0) for i in ids]
    assert all(side_of(i, 0.0, seed=0) != EVAL for i in ids)


def test_dataset_files_round_trip(tmp_path: Path, made_trajectory, think_fn):
    made = made_trajectory([10.0], [8.0, 10.0])
    pairs = planner_pairs("t", made, cuts=2, seed=0)
    loaded = load_planner_pairs(save_planner_pairs(pairs, tmp_path / "planner.parquet"))
    for pair, back in zip(pairs, loaded, strict=True):
        assert (back.id, back.cut, back.target, back.prefix_texts) == (
            pair.id,
            pair.cut,
            pair.target,
            pair.prefix_texts,
        )
        for a, b in zip(pair.prefix_images, back.prefix_images, strict=True):
            assert np.array_equal(a, b)
    _, candidates = critic_candidates("t", made, FilterConfig(), think_fn)
    samples = [c.sample for c in candidates]
    targets = [c.target for c in candidates]
    path = save_critic_sft_records(samples, targets, tmp_path / "sft.parquet")
    back = load_critic_sft_records(path)
    assert [t for _, t in back] == targets
    assert np.array_equal(back[1][0].edited_image, samples[1].edited_image)
    save_critic_sft_records(samples[:1], [""], tmp_path / "bad.parquet")
    with pytest.raises(RecordError, match=r"bad.parquet row 0.target"):
        load_critic_sft_records(tmp_path / "bad.parquet")
