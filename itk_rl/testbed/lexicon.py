"""Words of the testbed world: the core vocabulary the generator knows and synonyms it does not.

The gap between the two is the point of the testbed. Instructions written with synonyms
(`crimson disc`) mean the same to the judge as core ones (`red circle`), but the testbed
generator knows only core words and misrenders the rest, the way real generators fail on
concepts they were not trained on. A critic that rewrites prompts into core words closes the gap.

The inventory is kept small on purpose: a word-level tokenizer is trained on this corpus, and
the same concept is always spelled with the same core word, in instructions and in scene
descriptions alike, so that comparing the two is learnable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "centre", "right")
"""The three slots of a scene, left to right; a slot is addressed by its index in this tuple."""

COUNT_WORDS: Mapping[int, str] = {2: "2", 3: "3"}
"""Core spelling of the counts `add N identical objects` accepts: digits (counts written as
words are out-of-vocabulary, as real generators miscount them)."""

SYNONYMS: Mapping[str, Mapping[str | int, tuple[str, ...]]] = {
    "colour": {
        "red": ("crimson", "scarlet"),
        "green": ("emerald", "lime"),
        "blue": ("azure", "navy"),
        "yellow": ("golden", "amber"),
    },
    "shape": {"circle": ("disc",), "square": ("box", "block"), "triangle": ("wedge",)},
    "size": {"small": ("tiny",), "large": ("big", "huge")},
    "position": {"centre": ("middle",)},
    "count": {2: ("two",), 3: ("three",)},
}
"""Out-of-vocabulary spellings, by kind and canonical value: the judge knows them, the generator
does not. Relative positions (`to the left of the circle`) are out-of-vocabulary too; they are
grammar, not words, and live in the parser."""

PLURALS: Mapping[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "disc": "discs",
    "box": "boxes",
    "block": "blocks",
    "wedge": "wedges",
}

GRAMMAR_WORDS: tuple[str, ...] = (
    "a", "an", "the", "on", "in", "at", "to", "of", "into", "and", "object",
    "draw", "add", "make", "turn", "move", "remove", "none",
)  # fmt: skip
"""Function words and verbs of the instruction grammar: all core, never misrendered."""


@dataclass(frozen=True)
class Word:
    """What one word means: its `kind` (colour, shape, size, position, count), the canonical
    `value` (`"red"`, `"circle"`, `"centre"`, `2`), and whether the generator knows it (`core`)."""

    kind: str
    value: str | int
    core: bool
    plural: bool = False


def _core_words() -> dict[str, Word]:
    words: dict[str, Word] = {}
    for kind, values in (("colour", COLOURS), ("shape", SHAPES), ("size", SIZES)):
        for value in values:
            words[value] = Word(kind, value, core=True)
    for shape in SHAPES:
        words[PLURALS[shape]] = Word("shape", shape, core=True, plural=True)
    for position in POSITIONS:
        words[position] = Word("position", position, core=True)
    for count, spelling in COUNT_WORDS.items():
        words[spelling] = Word("count", count, core=True)
    return words


def _synonym_words() -> dict[str, Word]:
    words: dict[str, Word] = {}
    for kind, table in SYNONYMS.items():
        for value, spellings in table.items():
            for spelling in spellings:
                words[spelling] = Word(kind, value, core=False)
                if kind == "shape":
                    words[PLURALS[spelling]] = Word(kind, value, core=False, plural=True)
    return words


@dataclass(frozen=True)
class Lexicon:
    """A word table the parser reads attribute words with.

    `FULL_LEXICON` (core words and synonyms) is what the judge understands; `CORE_LEXICON` is
    the generator's vocabulary, for checking that a text uses core words only.
    """

    words: Mapping[str, Word]

    def lookup(self, word: str) -> Word | None:
        return self.words.get(word)

    def spell(self, kind: str, value: str | int, plural: bool = False) -> str:
        """The core word for a concept, e.g. `spell("count", 2) == "2"`."""
        if kind == "count":
            return COUNT_WORDS[int(value)]
        word = str(value)
        return PLURALS[word] if plural else word

    def synonyms(self, kind: str, value: str | int, plural: bool = False) -> tuple[str, ...]:
        """Out-of-vocabulary spellings of a concept that this lexicon knows (maybe none)."""
        return tuple(
            spelling
            for spelling, word in self.words.items()
            if not word.core and word.kind == kind and word.value == value
            if word.plural == plural
        )

    def is_core_text(self, text: str) -> bool:
        """True if every attribute word of `text` is a core word (grammar words always are)."""
        tokens = tokenize(text)
        return all(
            token in GRAMMAR_WORDS or (token in self.words and self.words[token].core)
            for token in tokens
        )


def tokenize(text: str) -> list[str]:
    """Lower-cased words of `text`, with punctuation dropped: the parser's view of a text."""
    cleaned = "".join(ch if ch.isalnum() else " " for ch in text.lower())
    return cleaned.split()


CORE_LEXICON = Lexicon(_core_words())
FULL_LEXICON = Lexicon({**_core_words(), **_synonym_words()})
