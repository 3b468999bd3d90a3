"""What a testbed image shows: three slots (left, centre, right), each empty or one object.

A scene is the ground truth behind every image: the generator edits scenes and renders them,
the judge decodes images back into scenes and compares them. Both are frozen dataclasses, so
they are hashable, comparable and safe to send across Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from itk_rl.testbed.lexicon import COLOURS, POSITIONS, SHAPES, SIZES

NUM_SLOTS = len(POSITIONS)


@dataclass(frozen=True)
class ShapeObject:
    """One object: a `shape` in {circle, square, triangle}, a `colour` in {red, green, blue,
    yellow} and a `size` in {small, large} (canonical words, see `lexicon`)."""

    shape: str
    colour: str
    size: str = "large"

    def __post_init__(self) -> None:
        for kind, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("colour", self.colour, COLOURS),
            ("size", self.size, SIZES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {kind} {value!r}; expected one of {allowed}")

    def with_changes(
        self, shape: str | None = None, colour: str | None = None, size: str | None = None
    ) -> ShapeObject:
        """A copy with the given attributes replaced (None keeps the current value)."""
        return replace(
            self,
            shape=shape or self.shape,
            colour=colour or self.colour,
            size=size or self.size,
        )

    def describe(self) -> str:
        """`"large red circle"`: size, colour, shape, the order instructions use too."""
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """`slots[i]` is the object in slot `POSITIONS[i]` (left, centre, right), or None."""

    slots: tuple[ShapeObject | None, ...] = (None,) * NUM_SLOTS

    def __post_init__(self) -> None:
        if len(self.slots) != NUM_SLOTS:
            raise ValueError(f"a scene has {NUM_SLOTS} slots, got {len(self.slots)}")

    @classmethod
    def empty(cls) -> Scene:
        """The white canvas: what text-to-image starts from."""
        return cls()

    @classmethod
    def of(
        cls,
        left: ShapeObject | None = None,
        centre: ShapeObject | None = None,
        right: ShapeObject | None = None,
    ) -> Scene:
        return cls((left, centre, right))

    def with_slot(self, slot: int, obj: ShapeObject | None) -> Scene:
        slots = list(self.slots)
        slots[slot] = obj
        return Scene(tuple(slots))

    def free_slots(self) -> list[int]:
        return [i for i, obj in enumerate(self.slots) if obj is None]

    def occupied_slots(self) -> list[int]:
        return [i for i, obj in enumerate(self.slots) if obj is not None]


def describe(scene: Scene) -> str:
    """Whole-scene text naming every slot, e.g.
    `"left large red circle; centre none; right small blue square"`.

    The critic writes this as its reasoning: describing the whole scene forces it to look at
    the image (restating the instruction lets it ignore the image). Words are the same core
    words instructions use, in the same order (size, colour, shape).
    """
    parts = []
    for position, obj in zip(POSITIONS, scene.slots, strict=True):
        parts.append(f"{position} {obj.describe() if obj else 'none'}")
    return "; ".join(parts)


def parse_description(text: str) -> Scene:
    """Inverse of `describe`, for checking a critic's scene description against the truth.

    Raises ValueError naming the text when it is not of `describe`'s form.
    """
    parts = [part.split() for part in text.strip().split(";")]
    if len(parts) != NUM_SLOTS:
        raise ValueError(f"scene description {text!r} must have {NUM_SLOTS} ';'-separated slots")
    slots: list[ShapeObject | None] = []
    for position, words in zip(POSITIONS, parts, strict=True):
        if words == [position, "none"]:
            slots.append(None)
        elif len(words) == 4 and words[0] == position:
            try:
                slots.append(ShapeObject(shape=words[3], colour=words[2], size=words[1]))
            except ValueError as error:
                raise ValueError(f"scene description {text!r}: {error}") from None
        else:
            raise ValueError(
                f"scene description {text!r}: expected '{position} <size> <colour> <shape>' "
                f"or '{position} none', got {' '.join(words)!r}"
            )
    return Scene(tuple(slots))
