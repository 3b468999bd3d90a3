"""The testbed generator: exact on core words, misrenders synonyms, deterministic per seed."""

from __future__ import annotations

import numpy as np
import pytest

from itk_rl.interfaces.generator import RenderRequest
from itk_rl.testbed.generator import TestbedGenerator
from itk_rl.testbed.judge import TestbedJudge
from itk_rl.testbed.parser import canonicalize
from itk_rl.testbed.render import decode, render
from itk_rl.testbed.scene import Scene, ShapeObject

RED_CIRCLE = ShapeObject("circle", "red", "large")
BLUE_SQUARE = ShapeObject("square", "blue", "small")
BEFORE = render(Scene.of(left=RED_CIRCLE, right=BLUE_SQUARE))
judge = TestbedJudge()


def make_request(prompt: str, before: np.ndarray | None = None, seed: int = 0) -> RenderRequest:
    """Text-to-image if `before` is None, else an edit of `before`."""
    return RenderRequest(prompt, () if before is None else (before,), seed)


# (instruction with out-of-vocabulary words, before-image or None for text-to-image)
OUT_OF_VOCABULARY = [
    ("draw a crimson circle on the left", None),
    ("draw a red disc on the left", None),
    ("draw a huge red circle on the left", None),
    ("draw a red circle in the middle", None),
    ("draw a red circle on the left and a blue square to the right of the circle", None),
    ("add two green triangles", None),
    ("make the disc green", BEFORE),
    ("make the circle emerald", BEFORE),
    ("turn the box into a wedge", BEFORE),
    ("make the square huge", BEFORE),
    ("move the circle to the middle", BEFORE),
    ("remove the box", BEFORE),
    ("remove the object in the middle", render(Scene.of(centre=RED_CIRCLE))),
    ("add a yellow circle to the left of the square", BEFORE),
]


def test_core_prompts_render_exactly() -> None:
    generator = TestbedGenerator()
    [image] = generator(
        [make_request("draw a large red circle on the left and a small blue square on the right")]
    )
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert np.array_equal(image, BEFORE)
    [edited] = generator([make_request("make the circle green", BEFORE)])
    assert decode(edited) == Scene.of(
        left=RED_CIRCLE.with_changes(colour="green"), right=BLUE_SQUARE
    )
    [big] = TestbedGenerator(image_size=64)([make_request("add a red circle in the centre")])
    assert big.shape == (64, 64, 3)


@pytest.mark.parametrize(("text", "before"), OUT_OF_VOCABULARY)
def test_synonyms_misrender_and_canonical_rewrite_fixes_them(
    text: str, before: np.ndarray | None
) -> None:
    generator = TestbedGenerator(misrender_prob=1.0)
    before_scene = decode(before) if before is not None else Scene.empty()
    for seed in range(4):
        [raw] = generator([make_request(text, before, seed)])
        assert judge.score(text, raw, before).semantics < 10.0, seed
        [fixed] = generator([make_request(canonicalize(text, before_scene), before, seed)])
        assert judge.score(text, fixed, before).semantics == 10.0, seed


@pytest.mark.parametrize(("text", "before"), OUT_OF_VOCABULARY)
def test_no_gap_renders_synonyms_correctly(text: str, before: np.ndarray | None) -> None:
    [image] = TestbedGenerator(misrender_prob=0.0)([make_request(text, before, seed=5)])
    assert judge.score(text, image, before).semantics == 10.0


def test_deterministic_per_seed_and_different_across_seeds() -> None:
    generator = TestbedGenerator(misrender_prob=1.0, artifact_prob=0.5)
    requests = [make_request("make the disc crimson", BEFORE, seed) for seed in range(12)]
    first, second = generator(requests), generator(requests)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert len({image.tobytes() for image in first}) > 3
    # Batching changes nothing: each request's render depends on its own seed only.
    assert all(
        np.array_equal(generator([r])[0], image) for r, image in zip(requests, first, strict=True)
    )


def test_misrender_prob_sets_the_size_of_the_gap() -> None:
    requests = [make_request("draw a crimson circle on the left", seed=s) for s in range(40)]

    def failure_rate(prob: float) -> float:
        images = TestbedGenerator(misrender_prob=prob)(requests)
        return np.mean(
            [
                judge.score(r.prompt, image).semantics < 10
                for r, image in zip(requests, images, strict=True)
            ]
        )

    assert failure_rate(0.0) == 0.0
    assert 0.2 < failure_rate(0.5) < 0.8
    assert failure_rate(1.0) == 1.0


def test_artifacts_lower_quality_not_content() -> None:
    generator = TestbedGenerator(artifact_prob=1.0, artifact_size=3)
    [image] = generator([make_request("make the circle green", BEFORE, seed=3)])
    score = judge.score("make the circle green", image, BEFORE)
    assert score.semantics == 10.0 and score.quality < 10.0


def test_unparseable_prompts_change_nothing() -> None:
    generator = TestbedGenerator()
    blank, edited = generator([make_request("a cat on a mat"), make_request("make it pop", BEFORE)])
    assert decode(blank) == Scene.empty()
    assert np.array_equal(edited, BEFORE)


def test_rejects_bad_probabilities() -> None:
    with pytest.raises(ValueError, match="misrender_prob"):
        TestbedGenerator(misrender_prob=1.5)
