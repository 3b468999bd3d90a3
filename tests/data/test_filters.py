"""The data filters: each rule on hand-made trajectories, then balancing and the 2:1 ratio."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from itk_rl.data.filters import (
    AMBIGUOUS,
    FALLING,
    LOW,
    RL,
    SFT,
    FilterConfig,
    balance_labels,
    balance_labels_within,
    classify_step,
    enforce_ratio,
    is_falling,
    score_variance,
)
from itk_rl.data.splits import SplitConfig, _balance, critic_candidates
from itk_rl.formats import Request, parse_critic_output

CONFIG = FilterConfig(
    success_threshold=10.0, low_threshold=5.0, fall_tolerance=0.5, var_low=1.0, var_high=4.0
)


def test_score_rules_on_score_lists():
    assert is_falling([10, 6], 0.5) and is_falling([6, 9, 7], 0.5)  # a drop in between counts
    assert not is_falling([6, 6.3, 6.1], 0.5) and not is_falling([2, 10], 0.0)
    assert score_variance([7.0]) == 0.0 and score_variance([0, 10]) == 25.0
    assert classify_step([10, 6], CONFIG) == FALLING
    assert classify_step([3, 4.9, 4.9], CONFIG) == LOW
    assert classify_step([3.0], CONFIG) == LOW  # one bad attempt the teacher accepted
    assert classify_step([10.0], CONFIG) == SFT
    assert classify_step([8, 10], CONFIG) == SFT  # variance 1.0 <= var_low
    assert classify_step([6, 10], CONFIG) == RL  # variance 4.0 >= var_high
    assert classify_step([7, 10], CONFIG) == AMBIGUOUS  # variance 2.25 in between
    with pytest.raises(ValueError, match="var_low"):
        FilterConfig(var_low=5, var_high=4)


def test_each_rule_on_hand_made_trajectories(made_trajectory, think_fn):
    steps = ([10.0], [8.0, 10.0], [0.0, 10.0], [9.0, 6.0], [2.0, 3.0, 4.0], [7.0, 10.0])
    made = made_trajectory(*steps)
    outcomes, candidates = critic_candidates("t", made, CONFIG, think_fn)
    assert [o.bin for o in outcomes] == [SFT, SFT, RL, FALLING, LOW, AMBIGUOUS]
    assert outcomes[1].scores == pytest.approx((8.0, 10.0))
    # Only the kept steps (1, 2, 3) give records: one per attempt, labelled by the judge.
    got = [(c.step, c.attempt, c.bin, c.label) for c in candidates]
    assert got == [
        (1, 1, SFT, True),
        (2, 1, SFT, False),
        (2, 2, SFT, True),
        (3, 1, RL, False),
        (3, 2, RL, True),
    ]
    # Records: the planner's prompt, the prompt used, the image before (white for step 1).
    first, failed = candidates[0].sample, candidates[1].sample
    assert first.origin_image.min() == 255 and first.rewritten_prompt == "prompt 0"
    assert failed.origin_prompt == "prompt 1" and failed.rewritten_prompt == "prompt 1"
    assert np.array_equal(failed.origin_image, made.steps[0].final.image)
    assert failed.evaluation.semantics == pytest.approx(6.4) and not failed.evaluation.success
    # Step 1 renders from nothing, step 2 edits step 1's image: the record says which.
    assert first.text_to_image and not failed.text_to_image


def test_step_1_of_a_request_with_an_image_is_an_edit_of_it(made_trajectory, think_fn):
    photo = np.full((6, 6, 3), 255, dtype=np.uint8)  # white, yet an image to edit
    made = replace(made_trajectory([10.0]), request=Request("edit my photo", (photo,)))
    _, (first,) = critic_candidates("t", made, CONFIG, think_fn)
    assert not first.sample.text_to_image and first.sample.origin_image is photo


def test_sft_targets_use_the_successful_refinement(made_trajectory, think_fn):
    made = made_trajectory([8.0, 8.2, 10.0], [8.0, 8.4])
    _, candidates = critic_candidates("t", made, CONFIG, think_fn)
    targets = {(c.step, c.attempt): c.target for c in candidates}
    # A failure's refine_prompt is the prompt of the first later attempt the judge passed.
    for attempt in (1, 2):
        verdict = parse_critic_output(targets[(1, attempt)])
        assert verdict.format_valid
        assert verdict.value.success is False
        assert verdict.value.refine_prompt == "prompt 0 refined 2"
        assert verdict.think == f"seen {made.steps[0].attempts[attempt - 1].prompt}"
    success = parse_critic_output(targets[(1, 3)]).value
    assert success.success and success.refine_prompt == ""
    # Step 2 never succeeded: its failures have no target (left out of Critic-SFT).
    assert targets[(2, 1)] is None and targets[(2, 2)] is None
    # RL records need no target.
    _, rl = critic_candidates("t", made_trajectory([0.0, 10.0]), CONFIG, think_fn)
    assert [c.target for c in rl] == [None, None]


def _pool(yes: int, no: int, tag: str) -> tuple[list[str], list[bool]]:
    items = [f"{tag}+{i}" for i in range(yes)] + [f"{tag}-{i}" for i in range(no)]
    return items, [True] * yes + [False] * no


def test_balance_down_and_up():
    items, labels = _pool(30, 7, "a")
    down, down_labels = balance_labels(items, labels, np.random.default_rng(0), "down")
    assert sum(down_labels) == 7 and len(down) == 14
    assert set(down) <= set(items) and len(set(down)) == 14
    assert all(
        item.startswith("a+") == label for item, label in zip(down, down_labels, strict=True)
    )
    up, up_labels = balance_labels(items, labels, np.random.default_rng(0), "up")
    assert sum(up_labels) == 30 and len(up) == 60 and set(up) == set(items)
    again = balance_labels(items, labels, np.random.default_rng(0), "down")
    assert again == (down, down_labels)  # seeded
    assert balance_labels(items[:3], labels[:3], np.random.default_rng(0), "down") == ([], [])
    with pytest.raises(ValueError, match="balance mode"):
        balance_labels(items, labels, np.random.default_rng(0), "sideways")


def test_balance_within_attempts_removes_the_attempt_as_a_label_cue():
    # First attempts mostly fail, later ones mostly succeed: balanced overall, the attempt
    # alone would predict the label.
    first, first_labels = _pool(3, 20, "first")
    later, later_labels = _pool(20, 4, "later")
    items, labels = first + later, first_labels + later_labels
    attempts = [0] * len(first) + [1] * len(later)
    rng = np.random.default_rng(0)
    kept, kept_labels = balance_labels_within(items, labels, attempts, rng, "down")
    for tag, size in (("first", 3), ("later", 4)):
        flags = [label for item, label in zip(kept, kept_labels, strict=True) if tag in item]
        assert len(flags) == 2 * size and sum(flags) == size  # balanced inside each attempt
    assert kept == sorted(kept, key=items.index)  # original order kept
    up, up_labels = balance_labels_within(items, labels, attempts, rng, "up")
    assert len(up) == 2 * 20 + 2 * 20 and sum(up_labels) == 40
    assert up[: len(items)] == items  # originals first, in order; copies after
    with pytest.raises(ValueError, match="groups"):
        balance_labels_within(items, labels, attempts[:-1], rng)


def test_split_config_balances_per_attempt_only_when_asked():
    candidates = [
        SimpleNamespace(label=label, attempt=attempt)
        for attempt, yes, no in ((0, 2, 8), (1, 8, 2))
        for label in [True] * yes + [False] * no
    ]
    rng = np.random.default_rng(0)
    overall, _ = _balance(candidates, SplitConfig(), rng)
    assert len(overall) == 20  # 10 yes, 10 no: the attempt still predicts the label
    per_attempt, labels = _balance(candidates, SplitConfig(balance_per_attempt=True), rng)
    assert len(per_attempt) == 8 and sum(labels) == 4
    for attempt in (0, 1):
        kept = [c.label for c in per_attempt if c.attempt == attempt]
        assert kept.count(True) == kept.count(False) == 2
    with pytest.raises(ValueError, match=r"splits\.balance_per_attempt"):
        SplitConfig(balance_per_attempt="false")


@pytest.mark.parametrize(("sft_size", "rl_size"), [(40, 40), (100, 10), (13, 6), (0, 5)])
def test_ratio_is_two_to_one_and_keeps_the_balance(sft_size, rl_size):
    rng = np.random.default_rng(1)
    sft, sft_labels = balance_labels(*_pool(sft_size, sft_size + 3, "s"), rng)
    rl, rl_labels = balance_labels(*_pool(rl_size + 5, rl_size, "r"), rng)
    (sft2, sft2_labels), (rl2, rl2_labels) = enforce_ratio(sft, sft_labels, rl, rl_labels, 2.0, rng)
    assert len(sft2) == 2 * len(rl2)
    assert len(sft2) == len(sft) or len(rl2) == len(rl)  # only the larger side was cut
    assert abs(2 * sum(sft2_labels) - len(sft2)) <= 1 and abs(2 * sum(rl2_labels) - len(rl2)) <= 1
    assert set(sft2) <= set(sft) and set(rl2) <= set(rl)
