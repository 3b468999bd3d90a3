"""Scenes, rendering and decoding: exact round trips, robustness to a smudge."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from itk_rl.testbed.lexicon import COLOURS, POSITIONS, SHAPES, SIZES
from itk_rl.testbed.render import (
    COLOUR_TOLERANCE,
    PALETTE,
    _palette_labels,
    add_smudge,
    decode,
    describe_image,
    render,
    unexplained_pixels,
)
from itk_rl.testbed.scene import Scene, ShapeObject, describe, parse_description

ALL_OBJECTS = [
    ShapeObject(shape, colour, size)
    for shape, colour, size in itertools.product(SHAPES, COLOURS, SIZES)
]


def random_scene(rng: np.random.Generator) -> Scene:
    slots = [
        None if rng.random() < 0.3 else ALL_OBJECTS[int(rng.integers(len(ALL_OBJECTS)))]
        for _ in POSITIONS
    ]
    return Scene(tuple(slots))


@pytest.mark.parametrize("size", [48, 64, (40, 90)])
def test_every_object_in_every_slot_round_trips(size: int | tuple[int, int]) -> None:
    for slot, obj in itertools.product(range(len(POSITIONS)), ALL_OBJECTS):
        scene = Scene.empty().with_slot(slot, obj)
        image = render(scene, size)
        assert decode(image) == scene, (size, slot, obj)
        assert unexplained_pixels(image) == 0


def test_render_is_a_white_uint8_canvas_of_the_requested_size() -> None:
    image = render(Scene.empty(), 48)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert (image == 255).all()
    assert decode(image) == Scene.empty()


def test_full_scenes_round_trip_and_survive_a_smudge() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        scene = random_scene(rng)
        image = render(scene)
        assert decode(image) == scene
        smudged = add_smudge(image, 3, rng)
        assert decode(smudged) == scene
        assert unexplained_pixels(smudged) == 9


def test_reads_follow_the_pixels_of_an_image_changed_in_place() -> None:
    # decode and unexplained_pixels remember images by content: the same array, edited after
    # a read, must be read anew.
    image = render(Scene.of(left=ALL_OBJECTS[0]))
    assert decode(image) == Scene.of(left=ALL_OBJECTS[0]) and unexplained_pixels(image) == 0
    image[:] = render(Scene.of(right=ALL_OBJECTS[-1]))
    image[:3, :3] = 70
    assert decode(image) == Scene.of(right=ALL_OBJECTS[-1])
    assert unexplained_pixels(image) == 9


def test_describe_image_names_a_smudge_only_when_there_is_one() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        scene = random_scene(rng)
        image = render(scene)
        assert describe_image(image) == describe(scene)
        assert describe_image(add_smudge(image, 3, rng)) == f"{describe(scene)}; smudge"


def test_different_objects_render_differently() -> None:
    images = {render(Scene.of(centre=obj)).tobytes() for obj in ALL_OBJECTS}
    assert len(images) == len(ALL_OBJECTS)


def test_describe_names_every_slot_and_parses_back() -> None:
    scene = Scene.of(
        left=ShapeObject("circle", "red"), right=ShapeObject("square", "blue", "small")
    )
    text = describe(scene)
    assert text == "left large red circle; centre none; right small blue square"
    assert parse_description(text) == scene
    rng = np.random.default_rng(1)
    for _ in range(20):
        scene = random_scene(rng)
        assert parse_description(describe(scene)) == scene


@pytest.mark.parametrize(
    "text", ["", "left red circle; centre none; right none", "left none; centre none", "x; y; z"]
)
def test_parse_description_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="scene description"):
        parse_description(text)


def test_invalid_objects_and_images_are_rejected_with_names() -> None:
    with pytest.raises(ValueError, match="colour 'purple'"):
        ShapeObject("circle", "purple")
    with pytest.raises(ValueError, match="shape"):
        ShapeObject("hexagon", "red")
    with pytest.raises(ValueError, match="3 slots"):
        Scene((None, None))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        decode(np.zeros((48, 48), dtype=np.uint8))


def test_pixel_colours_follow_the_per_channel_tolerance() -> None:
    """A pixel is palette colour c exactly when each channel is within COLOUR_TOLERANCE of c's
    (checked pixel by pixel against that definition, on noise around the palette)."""
    rng = np.random.default_rng(0)
    levels = np.array([PALETTE[c] for c in COLOURS] + [(255, 255, 255)])
    noisy = levels[rng.integers(0, len(levels), (24, 24))] + rng.integers(-60, 61, (24, 24, 3))
    image = np.clip(noisy, 0, 255).astype(np.uint8)
    labels = _palette_labels(image)
    for (row, col), label in np.ndenumerate(labels):
        pixel = image[row, col].astype(int)
        near = [
            i for i, c in enumerate(COLOURS) if np.abs(pixel - PALETTE[c]).max() <= COLOUR_TOLERANCE
        ]
        assert label == (near[0] if near else -1)
    assert 0.2 < (labels >= 0).mean() < 0.8  # both kinds of pixel were drawn
