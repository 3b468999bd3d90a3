"""The exact judge: 10/10 for a correct render, strictly less for every kind of mistake."""

from __future__ import annotations

import numpy as np
import pytest

from itk_rl.testbed.judge import TestbedJudge, perceptual_quality
from itk_rl.testbed.render import add_smudge, render
from itk_rl.testbed.scene import Scene, ShapeObject

RED_CIRCLE = ShapeObject("circle", "red", "large")
BLUE_SQUARE = ShapeObject("square", "blue", "small")
BEFORE = Scene.of(left=RED_CIRCLE, right=BLUE_SQUARE)
judge = TestbedJudge()


def test_correct_text_to_image_and_edit_score_ten() -> None:
    score = judge.score("draw a large red circle on the left", render(Scene.of(left=RED_CIRCLE)))
    assert (score.semantics, score.quality, score.overall) == (10.0, 10.0, 10.0)
    after = render(Scene.of(left=RED_CIRCLE.with_changes(colour="green"), right=BLUE_SQUARE))
    score = judge.score("make the circle green", after, render(BEFORE))
    assert (score.semantics, score.quality) == (10.0, 10.0)
    # Unsaid attributes are not checked: any size will do for "a red circle".
    small = render(Scene.of(left=RED_CIRCLE.with_changes(size="small")))
    assert judge.score("draw a red circle on the left", small).semantics == 10.0


TEXT_TO_IMAGE_MISTAKES = {
    "wrong colour": Scene.of(left=ShapeObject("circle", "blue", "large")),
    "wrong shape": Scene.of(left=ShapeObject("triangle", "red", "large")),
    "wrong size": Scene.of(left=ShapeObject("circle", "red", "small")),
    "wrong position": Scene.of(centre=RED_CIRCLE),
    "extra object": Scene.of(left=RED_CIRCLE, right=BLUE_SQUARE),
    "nothing drawn": Scene.empty(),
}


@pytest.mark.parametrize("mistake", TEXT_TO_IMAGE_MISTAKES)
def test_text_to_image_mistakes_score_less(mistake: str) -> None:
    score = judge.score(
        "draw a large red circle on the left", render(TEXT_TO_IMAGE_MISTAKES[mistake])
    )
    assert score.semantics < 10.0
    assert score.quality == 10.0  # a clean render of the wrong scene is still a clean image


EDIT_MISTAKES = {
    "wrong colour": Scene.of(left=RED_CIRCLE.with_changes(colour="yellow"), right=BLUE_SQUARE),
    "wrong shape kept": Scene.of(left=ShapeObject("square", "green", "large"), right=BLUE_SQUARE),
    "wrong size kept": Scene.of(left=ShapeObject("circle", "green", "small"), right=BLUE_SQUARE),
    "wrong object": Scene.of(left=RED_CIRCLE, right=BLUE_SQUARE.with_changes(colour="green")),
    "moved": Scene.of(centre=RED_CIRCLE.with_changes(colour="green"), right=BLUE_SQUARE),
    "collateral change": Scene.of(
        left=RED_CIRCLE.with_changes(colour="green"), right=BLUE_SQUARE.with_changes(size="large")
    ),
    "collateral addition": Scene.of(
        RED_CIRCLE.with_changes(colour="green"), ShapeObject("triangle", "red"), BLUE_SQUARE
    ),
    "unchanged": BEFORE,
}


@pytest.mark.parametrize("mistake", EDIT_MISTAKES)
def test_edit_mistakes_score_less(mistake: str) -> None:
    score = judge.score("make the circle green", render(EDIT_MISTAKES[mistake]), render(BEFORE))
    assert score.semantics < 10.0


def test_semantic_scores_follow_the_documented_formula() -> None:
    # Wrong colour, right shape: 1 of 2 checks → 5.
    wrong_colour = render(TEXT_TO_IMAGE_MISTAKES["wrong colour"])
    assert judge.score("draw a red circle on the left", wrong_colour).semantics == 5.0
    # Right edit, one of the two untouched slots changed → over-editing 1/2 → 5.
    collateral = render(EDIT_MISTAKES["collateral addition"])
    assert judge.score("make the circle green", collateral, render(BEFORE)).semantics == 5.0
    # Remove: emptiness of its slot is the only check.
    after = render(Scene.of(left=RED_CIRCLE))
    assert judge.score("remove the square", after, render(BEFORE)).semantics == 10.0
    assert judge.score("remove the circle", after, render(BEFORE)).semantics == 0.0


def test_artifacts_lower_quality_only() -> None:
    clean = render(Scene.of(left=RED_CIRCLE))
    noisy = add_smudge(clean, 3, np.random.default_rng(0))
    score = judge.score("draw a large red circle on the left", noisy)
    assert score.semantics == 10.0
    assert score.quality == pytest.approx(10.0 * (1 - 9 / (0.01 * 48 * 48)))
    worse = add_smudge(clean, 5, np.random.default_rng(0))
    assert perceptual_quality(worse) == 0.0
    assert (
        TestbedJudge(artifact_tolerance=0.05).score("draw a red circle on the left", noisy).quality
        > score.quality
    )


def test_score_batch_matches_score() -> None:
    instructions = ["draw a red circle on the left", "make the circle green", "remove the square"]
    afters = [
        render(Scene.of(left=RED_CIRCLE)),
        render(EDIT_MISTAKES["wrong colour"]),
        render(BEFORE),
    ]
    befores = [None, render(BEFORE), render(BEFORE)]
    batch = judge.score_batch(instructions, afters, befores)
    assert batch == [judge.score(*args) for args in zip(instructions, afters, befores, strict=True)]
    assert [s.semantics for s in batch] == [10.0, pytest.approx(20 / 3), 0.0]  # 2 of 3 checks
    assert judge.score_batch(instructions[:1], afters[:1]) == batch[:1]
    with pytest.raises(ValueError, match="equal lengths"):
        judge.score_batch(instructions, afters[:2])


def test_unparseable_instruction_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="'paint it black'"):
        judge.score("paint it black", render(BEFORE))


def test_instruction_that_does_not_apply_to_the_before_scene_scores_zero_semantics() -> None:
    score = judge.score("make the triangle red", render(BEFORE), render(BEFORE))
    assert score.semantics == 0.0
    assert score.quality == 10.0
