"""The instruction grammar: parsing, writing back, canonicalizing and applying edits."""

from __future__ import annotations

import pytest

from itk_rl.testbed.edits import (
    Add,
    AddMany,
    Edit,
    Modify,
    Move,
    ObjectSpec,
    Place,
    Reference,
    Remove,
    apply,
)
from itk_rl.testbed.lexicon import CORE_LEXICON, FULL_LEXICON
from itk_rl.testbed.parser import canonicalize, format_edit, parse_instruction
from itk_rl.testbed.scene import Scene, ShapeObject
from itk_rl.testbed.tasks import TaskSampler

RED_CIRCLE = ShapeObject("circle", "red")
BLUE_SQUARE = ShapeObject("square", "blue", "small")
SCENE = Scene.of(left=RED_CIRCLE, right=BLUE_SQUARE)


@pytest.mark.parametrize(
    ("text", "ops"),
    [
        (
            "Draw a large red circle on the left and a blue square in the centre.",
            (
                Add(ObjectSpec("circle", "red", "large"), Place(slot=0)),
                Add(ObjectSpec("square", "blue"), Place(slot=1)),
            ),
        ),
        ("add 2 green triangles", (AddMany(2, ObjectSpec("triangle", "green")),)),
        ("make the circle yellow", (Modify(Reference(shape="circle"), colour="yellow"),)),
        (
            "make the object on the left small and green",
            (Modify(Reference(slot=0), colour="green", size="small"),),
        ),
        (
            "turn the blue square into a triangle",
            (Modify(Reference(shape="square", colour="blue"), shape="triangle"),),
        ),
        ("move the circle to the centre", (Move(Reference(shape="circle"), Place(slot=1)),)),
        ("remove the object on the right", (Remove(Reference(slot=2)),)),
    ],
)
def test_core_instructions_parse_to_their_operations(text: str, ops: tuple) -> None:
    edit = parse_instruction(text, CORE_LEXICON)
    assert edit.ops == tuple(_with_verb(op, got) for op, got in zip(ops, edit.ops, strict=True))
    assert edit.unknown == frozenset()


def _with_verb(expected: object, got: object) -> object:
    """Add/AddMany keep the verb for wording only; compare the rest."""
    if isinstance(expected, (Add, AddMany)) and isinstance(got, type(expected)):
        return type(expected)(**{**vars(expected), "verb": got.verb})
    return expected


@pytest.mark.parametrize(
    ("text", "unknown", "canonical"),
    [
        ("draw a crimson circle on the left", {"colour"}, "draw a red circle on the left"),
        ("draw a huge azure disc in the middle", {"size", "colour", "shape", "position"},
         "draw a large blue circle in the centre"),
        ("add three emerald blocks", {"count", "colour", "shape"}, "add 3 green squares"),
        ("make the disc golden", {"target", "colour"}, "make the circle yellow"),
        ("remove the object in the middle", {"target"}, "remove the object in the centre"),
        ("turn the wedge into a tiny box", {"target", "size", "shape"},
         "turn the triangle into a small square"),
    ],
)  # fmt: skip
def test_synonyms_mean_the_same_and_are_marked_unknown(
    text: str, unknown: set[str], canonical: str
) -> None:
    edit = parse_instruction(text, FULL_LEXICON)
    assert edit.unknown == unknown
    assert canonicalize(text) == canonical
    assert CORE_LEXICON.is_core_text(canonical) and not CORE_LEXICON.is_core_text(text)
    assert [type(op) for op in parse_instruction(canonical, CORE_LEXICON).ops] == [
        type(op) for op in edit.ops
    ]
    with pytest.raises(ValueError, match="cannot parse"):
        parse_instruction(text, CORE_LEXICON)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello world",
        "draw a red",
        "draw a red circle",
        "draw a purple circle on the left",
        "make the circle",
        "make the circle red red",
        "move the circle",
        "draw a red circle on the left and",
        "move the circle to the centre of the square",
    ],
)
def test_junk_raises_a_value_error_naming_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="cannot parse instruction") as error:
        parse_instruction(text)
    assert repr(text) in str(error.value)


def test_relative_places_resolve_against_the_scene() -> None:
    text = "add a green triangle to the right of the circle"
    edit = parse_instruction(text)
    assert edit.unknown == {"position"}
    assert apply(edit, SCENE).slots[1] == ShapeObject("triangle", "green")
    assert canonicalize(text, SCENE) == "add a green triangle in the centre"
    with pytest.raises(ValueError, match="needs the scene"):
        canonicalize(text)
    moved = apply(parse_instruction("move the square to the left of the circle"), Scene.of(
        centre=RED_CIRCLE, right=BLUE_SQUARE))  # fmt: skip
    assert moved == Scene.of(left=BLUE_SQUARE, centre=RED_CIRCLE)


def test_apply_edits() -> None:
    assert apply(parse_instruction("add two yellow squares"), Scene.of(centre=RED_CIRCLE)) == (
        Scene.of(ShapeObject("square", "yellow"), RED_CIRCLE, ShapeObject("square", "yellow"))
    )
    assert apply(parse_instruction("make the circle green and small"), SCENE).slots[0] == (
        ShapeObject("circle", "green", "small")
    )
    assert apply(parse_instruction("turn the object on the right into a red circle"), SCENE) == (
        Scene.of(left=RED_CIRCLE, right=ShapeObject("circle", "red", "small"))
    )
    assert apply(parse_instruction("move the red circle to the centre"), SCENE) == Scene.of(
        centre=RED_CIRCLE, right=BLUE_SQUARE
    )
    assert apply(parse_instruction("remove the square"), SCENE) == Scene.of(left=RED_CIRCLE)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("make the triangle red", "matches no object"),
        ("draw a red circle on the left", "holds a large red circle"),
        ("add three red circles", "only 1 free slot"),
        ("move the circle to the right", "holds a small blue square"),
        ("add a red circle to the left of the circle", "off canvas"),
    ],
)
def test_strict_apply_rejects_what_does_not_fit_the_scene(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply(parse_instruction(text), SCENE)


def test_ambiguous_reference_is_strict_error_and_leftmost_when_lenient() -> None:
    two_circles = Scene.of(left=RED_CIRCLE, centre=ShapeObject("circle", "blue"))
    edit = parse_instruction("remove the circle")
    with pytest.raises(ValueError, match="matches 2 objects"):
        apply(edit, two_circles)
    assert apply(edit, two_circles, strict=False) == Scene.of(centre=ShapeObject("circle", "blue"))


def test_format_edit_writes_what_parses_back_to_the_same_edit() -> None:
    for task in TaskSampler(seed=3, synonym_rate=0.5).sample(40):
        for step in task.plan.steps:
            edit = parse_instruction(step.prompt)
            again = parse_instruction(format_edit(edit))
            assert [_known(op) for op in again.ops] == [_known(op) for op in edit.ops]
            assert again.unknown <= {"position"}  # relative places stay relative


def _known(op: object) -> object:
    return type(op)(**{**vars(op), "unknown": frozenset()})


def test_canonical_text_is_unchanged_by_canonicalize() -> None:
    text = "draw a small red circle on the left and a blue square in the centre"
    assert canonicalize(text) == text
    assert format_edit(Edit((Remove(Reference(slot=1)),))) == "remove the object in the centre"
