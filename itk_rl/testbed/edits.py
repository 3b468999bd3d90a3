"""What an instruction means: edit operations, resolved against a scene and applied to it.

An `Edit` is a sequence of operations (`Add`, `AddMany`, `Modify`, `Move`, `Remove`) whose
values are canonical words, whatever words the instruction used; `unknown` on each operation
remembers which of its fields were written with out-of-vocabulary words, so the generator
knows what to misrender. Operations refer to objects by description (`Reference`), and to
slots absolutely or relative to another object (`Place`); `resolve_op` turns those into slot
indices for a given scene, and `execute` carries them out.

Strict resolution (the judge, the task sampler) raises ValueError on anything that does not
make sense in the scene: a reference that matches no object or several, adding onto an
occupied slot. Lenient resolution (the generator) does something plausible instead — a
generator renders whatever it is given and never raises on a prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from itk_rl.testbed.lexicon import POSITIONS
from itk_rl.testbed.scene import NUM_SLOTS, Scene, ShapeObject, describe

DEFAULT_COLOUR = "red"
DEFAULT_SIZE = "large"
"""What `add a circle` draws when colour or size is not said; the judge does not check them."""


@dataclass(frozen=True)
class ObjectSpec:
    """An object to draw; colour and size may be left unsaid (None)."""

    shape: str
    colour: str | None = None
    size: str | None = None

    def build(self) -> ShapeObject:
        return ShapeObject(self.shape, self.colour or DEFAULT_COLOUR, self.size or DEFAULT_SIZE)


@dataclass(frozen=True)
class Reference:
    """`the red circle`, `the object on the left`: every given attribute must match."""

    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    slot: int | None = None

    def matches(self, obj: ShapeObject | None, slot: int) -> bool:
        return obj is not None and all(
            want is None or want == have
            for want, have in (
                (self.shape, obj.shape),
                (self.colour, obj.colour),
                (self.size, obj.size),
                (self.slot, slot),
            )
        )

    def describe(self) -> str:
        words = [w for w in (self.size, self.colour, self.shape or "object") if w]
        where = f" {position_phrase(self.slot)}" if self.slot is not None else ""
        return "the " + " ".join(words) + where


@dataclass(frozen=True)
class Place:
    """A slot: absolute (`slot`) or relative to an object (`anchor`, `offset` −1 = left of)."""

    slot: int | None = None
    anchor: Reference | None = None
    offset: int = 0

    @property
    def is_relative(self) -> bool:
        return self.anchor is not None


@dataclass(frozen=True)
class Add:
    """Draw one object at a place (`draw`/`add` are both core verbs; kept for wording)."""

    obj: ObjectSpec
    place: Place
    verb: str = "draw"
    unknown: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class AddMany:
    """Draw `count` identical objects, filling free slots left to right."""

    count: int
    obj: ObjectSpec
    verb: str = "add"
    unknown: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Modify:
    """Recolour, reshape and/or resize the referenced object (None keeps an attribute)."""

    target: Reference
    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    unknown: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Move:
    target: Reference
    place: Place
    unknown: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Remove:
    target: Reference
    unknown: frozenset[str] = field(default_factory=frozenset)


Op = Add | AddMany | Modify | Move | Remove

UNKNOWN_FIELDS = ("colour", "shape", "size", "count", "target", "position")
"""Names `Op.unknown` may hold: attribute values, the referenced object, the place."""


@dataclass(frozen=True)
class Edit:
    """A parsed instruction: operations applied in order; `text` is the instruction itself."""

    ops: tuple[Op, ...]
    text: str = ""

    @property
    def unknown(self) -> frozenset[str]:
        """Every field written with out-of-vocabulary words, over all operations."""
        return frozenset().union(*(op.unknown for op in self.ops))


@dataclass(frozen=True)
class Resolved:
    """An operation pinned to slots in one scene: `source` is the referenced object's slot
    (Modify, Move, Remove), `destinations` the slots written (Add, AddMany, Move). Either is
    None/empty where lenient resolution found nothing."""

    op: Op
    source: int | None = None
    destinations: tuple[int, ...] = ()


def position_phrase(slot: int) -> str:
    """`on the left`, `in the centre`, `on the right`."""
    return f"{'in' if POSITIONS[slot] == 'centre' else 'on'} the {POSITIONS[slot]}"


def resolve_reference(ref: Reference, scene: Scene, strict: bool = True) -> int | None:
    """The slot of the one object `ref` describes. Lenient: the leftmost match, or None."""
    matches = [slot for slot, obj in enumerate(scene.slots) if ref.matches(obj, slot)]
    if len(matches) == 1 or (matches and not strict):
        return matches[0]
    if strict:
        found = "no object" if not matches else f"{len(matches)} objects"
        raise ValueError(f"{ref.describe()!r} matches {found} in scene {describe(scene)!r}")
    return None


def resolve_place(place: Place, scene: Scene, strict: bool = True) -> int | None:
    if place.anchor is None:
        return place.slot
    anchor = resolve_reference(place.anchor, scene, strict)
    if anchor is None:
        return None
    slot = anchor + place.offset
    if 0 <= slot < NUM_SLOTS:
        return slot
    if strict:
        side = "left" if place.offset < 0 else "right"
        raise ValueError(f"nothing is to the {side} of {place.anchor.describe()!r}: off canvas")
    return None


def _check_free(scene: Scene, slot: int, what: str) -> None:
    if scene.slots[slot] is not None:
        raise ValueError(
            f"cannot {what} {position_phrase(slot)}: it holds a {scene.slots[slot].describe()} "
            f"(scene {describe(scene)!r})"
        )


def resolve_op(op: Op, scene: Scene, strict: bool = True) -> Resolved:
    """Pin `op` to slots of `scene`; see the module docstring for strict vs lenient."""
    if isinstance(op, Add):
        slot = resolve_place(op.place, scene, strict)
        if strict and slot is not None:
            _check_free(scene, slot, "add an object")
        return Resolved(op, destinations=() if slot is None else (slot,))
    if isinstance(op, AddMany):
        free = scene.free_slots()
        if strict and len(free) < op.count:
            raise ValueError(
                f"cannot add {op.count} objects: only {len(free)} free slot(s) in scene "
                f"{describe(scene)!r}"
            )
        return Resolved(op, destinations=tuple(free[: op.count]))
    source = resolve_reference(op.target, scene, strict)
    if isinstance(op, Move):
        slot = resolve_place(op.place, scene, strict)
        if strict and slot is not None:
            _check_free(scene, slot, "move an object")
        return Resolved(op, source=source, destinations=() if slot is None else (slot,))
    return Resolved(op, source=source)


def execute(resolved: Resolved, scene: Scene) -> Scene:
    """Carry out a resolved operation. Writing onto an occupied slot replaces its object;
    acting on an empty or missing source does nothing (only lenient resolution gets there)."""
    op, source = resolved.op, resolved.source
    if isinstance(op, (Add, AddMany)):
        for slot in resolved.destinations:
            scene = scene.with_slot(slot, op.obj.build())
        return scene
    obj = scene.slots[source] if source is not None else None
    if obj is None:
        return scene
    if isinstance(op, Modify):
        return scene.with_slot(source, obj.with_changes(op.shape, op.colour, op.size))
    if isinstance(op, Remove):
        return scene.with_slot(source, None)
    for slot in resolved.destinations:  # Move
        scene = scene.with_slot(source, None).with_slot(slot, obj)
    return scene


def apply(edit: Edit, scene: Scene, strict: bool = True) -> Scene:
    """The scene after `edit`: each operation resolved against the scene its predecessors
    left (so `draw a circle on the left and a square to the right of the circle` works)."""
    for op in edit.ops:
        scene = execute(resolve_op(op, scene, strict), scene)
    return scene


def make_absolute(edit: Edit, scene: Scene) -> Edit:
    """`edit` with every relative place replaced by the slot it means in `scene` (strict).

    Relative places are out-of-vocabulary for the generator; this is how `canonicalize`
    rewrites them, and why it needs the scene the edit applies to.
    """
    ops: list[Op] = []
    for op in edit.ops:
        if isinstance(op, (Add, Move)) and op.place.is_relative:
            slot = resolve_place(op.place, scene, strict=True)
            op = replace(op, place=Place(slot=slot), unknown=op.unknown - {"position"})
        ops.append(op)
        scene = execute(resolve_op(op, scene, strict=True), scene)
    return replace(edit, ops=tuple(ops))
