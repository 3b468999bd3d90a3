"""Instruction text ⇄ `Edit`: a small grammar, its parser, and its core-word writer.

Grammar (case and punctuation are ignored; words in capitals come from the lexicon):

    instruction := clause ("and" (clause | object place))*      # `and` continues a draw/add
    clause      := ("draw" | "add") object place                # one object at a place
                 | ("draw" | "add") COUNT objects               # fills free slots left → right
                 | "make" ref ATTR (["and"] ATTR)*              # ATTR: a COLOUR or a SIZE
                 | "turn" ref "into" object                     # reshape (and maybe more)
                 | "move" ref place
                 | "remove" ref
    object      := ("a" | "an") (SIZE | COLOUR)* SHAPE
    objects     := (SIZE | COLOUR)* SHAPES
    ref         := "the" (SIZE | COLOUR)* (SHAPE | "object") [("on" | "in" | "at") "the" POSITION]
    place       := ("on" | "in" | "at" | "to") "the" POSITION ["of" ref]   # `of`: relative

Examples: `draw a large red circle on the left and a blue square on the right`,
`add 2 green triangles`, `make the circle yellow`, `turn the object in the centre into a
square`, `move the red square to the right of the circle`, `remove the triangle`.

The parser always reads attribute words through a `Lexicon`; with `FULL_LEXICON` it also
records, per operation, which fields were written with out-of-vocabulary words (`Op.unknown`).
That is how the generator's ignorance is modelled: a core-only parse could not tell which
role an unknown word plays, while a real generator still sees where the word stands.
"""

from __future__ import annotations

from collections.abc import Callable

from itk_rl.testbed.edits import (
    Add,
    AddMany,
    Edit,
    Modify,
    Move,
    ObjectSpec,
    Op,
    Place,
    Reference,
    Remove,
    make_absolute,
)
from itk_rl.testbed.lexicon import FULL_LEXICON, POSITIONS, Lexicon, Word, tokenize
from itk_rl.testbed.scene import Scene

VERBS = ("draw", "add", "make", "turn", "move", "remove")
ADD_VERBS = ("draw", "add")

WordChooser = Callable[[str, "str | int", bool], str]
"""`(kind, canonical value, plural) -> word`: how `format_edit` spells each concept."""


class _Parser:
    def __init__(self, text: str, lexicon: Lexicon) -> None:
        self.text = text
        self.lexicon = lexicon
        self.tokens = tokenize(text)
        self.pos = 0

    def error(self, expected: str) -> ValueError:
        got = repr(self.tokens[self.pos]) if self.pos < len(self.tokens) else "the end"
        return ValueError(
            f"cannot parse instruction {self.text!r}: expected {expected} at word "
            f"{self.pos + 1}, got {got}"
        )

    def peek(self, ahead: int = 0) -> str | None:
        index = self.pos + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def accept(self, *words: str) -> str | None:
        token = self.peek()
        if token in words:
            self.pos += 1
            return token
        return None

    def expect(self, *words: str) -> str:
        token = self.accept(*words)
        if token is None:
            raise self.error(" or ".join(repr(w) for w in words))
        return token

    def lookup(self, *kinds: str, ahead: int = 0) -> Word | None:
        token = self.peek(ahead)
        word = self.lexicon.lookup(token) if token is not None else None
        return word if word is not None and word.kind in kinds else None

    def word(self, *kinds: str) -> Word | None:
        found = self.lookup(*kinds)
        if found is not None:
            self.pos += 1
        return found

    # Grammar rules, one method each.

    def parse(self) -> Edit:
        ops: list[Op] = []
        verb: str | None = None
        while True:
            token = self.accept(*VERBS)
            if token is not None:
                verb = token
                ops.append(self.clause(verb))
            elif ops and verb in ADD_VERBS:
                ops.append(self.add(verb))
            else:
                raise self.error("a verb (" + ", ".join(VERBS) + ")")
            if self.peek() is None:
                return Edit(tuple(ops), self.text)
            self.expect("and")

    def clause(self, verb: str) -> Op:
        if verb in ADD_VERBS:
            count = self.word("count")
            if count is None:
                return self.add(verb)
            spec, unknown = self.object(plural=True)
            unknown |= set() if count.core else {"count"}
            return AddMany(int(count.value), spec, verb, frozenset(unknown))
        target, unknown = self.reference()
        if verb == "make":
            return self.make(target, unknown)
        if verb == "turn":
            self.expect("into")
            self.expect("a", "an")
            spec, more = self.object()
            return Modify(target, spec.shape, spec.colour, spec.size, frozenset(unknown | more))
        if verb == "move":
            place, more = self.place()
            return Move(target, place, frozenset(unknown | more))
        return Remove(target, frozenset(unknown))

    def add(self, verb: str) -> Add:
        self.expect("a", "an")
        spec, unknown = self.object()
        place, more = self.place()
        return Add(spec, place, verb, frozenset(unknown | more))

    def make(self, target: Reference, unknown: set[str]) -> Modify:
        values: dict[str, str] = {}
        while True:
            if self.peek() == "and" and self.lookup("colour", "size", ahead=1):
                self.pos += 1
            word = self.word("colour", "size")
            if word is None:
                break
            self.set_once(values, word, unknown)
        if not values:
            raise self.error("a colour or a size")
        return Modify(
            target, colour=values.get("colour"), size=values.get("size"), unknown=frozenset(unknown)
        )

    def set_once(self, values: dict[str, str], word: Word, unknown: set[str]) -> None:
        if word.kind in values:
            raise ValueError(f"cannot parse instruction {self.text!r}: two {word.kind} words")
        values[word.kind] = str(word.value)
        if not word.core:
            unknown.add(word.kind)

    def modifiers(self) -> tuple[dict[str, str], set[str]]:
        values: dict[str, str] = {}
        unknown: set[str] = set()
        while (word := self.word("colour", "size")) is not None:
            self.set_once(values, word, unknown)
        return values, unknown

    def object(self, plural: bool = False) -> tuple[ObjectSpec, set[str]]:
        values, unknown = self.modifiers()
        shape = self.word("shape")
        if shape is None:
            raise self.error("a shape (plural)" if plural else "a shape")
        if not shape.core:
            unknown.add("shape")
        spec = ObjectSpec(str(shape.value), values.get("colour"), values.get("size"))
        return spec, unknown

    def reference(self) -> tuple[Reference, set[str]]:
        self.expect("the")
        values, unknown = self.modifiers()
        shape = self.word("shape")
        if shape is None:
            self.expect("object")
        elif not shape.core:
            unknown.add("shape")
        slot = None
        if self.peek() in ("on", "in", "at") and self.lookup("position", ahead=2):
            self.pos += 2
            position = self.word("position")
            assert position is not None
            slot = POSITIONS.index(str(position.value))
            if not position.core:
                unknown.add("position")
        ref = Reference(
            shape=str(shape.value) if shape else None,
            colour=values.get("colour"),
            size=values.get("size"),
            slot=slot,
        )
        return ref, {"target"} if unknown else set()

    def place(self) -> tuple[Place, set[str]]:
        self.expect("on", "in", "at", "to")
        self.expect("the")
        position = self.word("position")
        if position is None:
            raise self.error("a position (" + ", ".join(POSITIONS) + ")")
        if self.accept("of"):
            if position.value == "centre":
                raise ValueError(f"cannot parse instruction {self.text!r}: 'centre of' an object")
            anchor, _ = self.reference()
            offset = -1 if position.value == "left" else 1
            return Place(anchor=anchor, offset=offset), {"position"}
        place = Place(slot=POSITIONS.index(str(position.value)))
        return place, set() if position.core else {"position"}


def parse_instruction(text: str, lexicon: Lexicon = FULL_LEXICON) -> Edit:
    """Parse an instruction into an `Edit`; ValueError naming the text if it does not parse.

    Use `FULL_LEXICON` (the default) to understand synonyms, as the judge does;
    `CORE_LEXICON` rejects any out-of-vocabulary word.
    """
    return _Parser(text, lexicon).parse()


def _core_word(kind: str, value: str | int, plural: bool) -> str:
    return FULL_LEXICON.spell(kind, value, plural)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class _Writer:
    def __init__(self, choose: WordChooser) -> None:
        self.choose = choose

    def object(self, spec: ObjectSpec, plural: bool = False) -> str:
        words = self.attributes(spec.size, spec.colour)
        return " ".join([*words, self.choose("shape", spec.shape, plural)])

    def attributes(self, size: str | None, colour: str | None) -> list[str]:
        """Size before colour, as in `describe`; unsaid attributes are left out."""
        pairs = (("size", size), ("colour", colour))
        return [self.choose(kind, value, False) for kind, value in pairs if value]

    def reference(self, ref: Reference) -> str:
        words = [
            self.choose(kind, value, False)
            for kind, value in (("size", ref.size), ("colour", ref.colour), ("shape", ref.shape))
            if value
        ]
        if ref.shape is None:
            words.append("object")
        text = "the " + " ".join(words)
        if ref.slot is not None:
            text += " " + self.absolute(ref.slot, to=False)
        return text

    def absolute(self, slot: int, to: bool) -> str:
        position = POSITIONS[slot]
        preposition = "to" if to else ("in" if position == "centre" else "on")
        return f"{preposition} the {self.choose('position', position, False)}"

    def place(self, place: Place, to: bool) -> str:
        if place.anchor is not None:
            side = "left" if place.offset < 0 else "right"
            return f"to the {side} of {self.reference(place.anchor)}"
        assert place.slot is not None
        return self.absolute(place.slot, to)

    def op(self, op: Op, previous: Op | None) -> str:
        if isinstance(op, Add):
            obj = self.object(op.obj)
            text = f"{_article(obj)} {obj} {self.place(op.place, to=False)}"
            continues = isinstance(previous, Add) and previous.verb == op.verb
            return text if continues else f"{op.verb} {text}"
        if isinstance(op, AddMany):
            count = self.choose("count", op.count, False)
            return f"{op.verb} {count} {self.object(op.obj, plural=True)}"
        target = self.reference(op.target)
        if isinstance(op, Modify):
            if op.shape is not None:
                obj = self.object(ObjectSpec(op.shape, op.colour, op.size))
                return f"turn {target} into {_article(obj)} {obj}"
            values = self.attributes(op.size, op.colour)
            if not values:
                raise ValueError(f"a Modify of {target!r} changes nothing: {op}")
            return f"make {target} " + " and ".join(values)
        if isinstance(op, Move):
            return f"move {target} {self.place(op.place, to=True)}"
        return f"remove {target}"


def format_edit(edit: Edit, choose: WordChooser | None = None) -> str:
    """Write `edit` back as an instruction, in core words unless `choose` spells otherwise.

    `choose(kind, value, plural)` picks the word for each attribute value; the task sampler
    passes one that sometimes picks synonyms. Relative places are written as relative.
    """
    writer = _Writer(choose or _core_word)
    parts = [writer.op(op, edit.ops[i - 1] if i else None) for i, op in enumerate(edit.ops)]
    return " and ".join(parts)


def canonicalize(text: str, scene: Scene | None = None) -> str:
    """Rewrite an instruction into core words only: what the generator renders correctly.

    This is the refinement a generator-aware critic should learn to write. Relative places
    (`to the left of the circle`) become absolute ones, which needs the `scene` the
    instruction applies to; without one they raise ValueError, as does unparseable text.
    """
    edit = parse_instruction(text, FULL_LEXICON)
    relative = any(isinstance(op, (Add, Move)) and op.place.is_relative for op in edit.ops)
    if relative:
        if scene is None:
            raise ValueError(
                f"instruction {text!r} places an object relative to another; canonicalize "
                "needs the scene it applies to"
            )
        edit = make_absolute(edit, scene)
    return format_edit(edit)
