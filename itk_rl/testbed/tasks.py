"""Multi-step testbed tasks with their ground truth, and the text corpus for a tokenizer.

A task is what a user would ask an interleaved agent ("Show step by step: draw a red circle on
the left, add a blue square on the right, then make the circle green"), with the plan a
perfect planner would write and the scene after every step. `synonym_rate` decides how often
the words in it are out-of-vocabulary synonyms, i.e. how often the generator will misrender a
step unless a critic rewrites its prompt in core words.

Task `index` of a sampler with `seed` depends on nothing else: the structure (operations,
scenes) comes from `default_rng([seed, index])`, the wording from `default_rng([seed, index,
1])`, so the same task at another `synonym_rate` has the same scenes and different words.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from itk_rl.formats.plan import Plan, Step
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
    apply,
)
from itk_rl.testbed.lexicon import (
    COLOURS,
    FULL_LEXICON,
    GRAMMAR_WORDS,
    POSITIONS,
    SHAPES,
    SIZES,
    Lexicon,
)
from itk_rl.testbed.parser import WordChooser, canonicalize, format_edit
from itk_rl.testbed.render import ARTIFACT_NOTE
from itk_rl.testbed.scene import Scene, describe

REQUEST_OPENERS = ("Show step by step:", "Step by step:", "Draw in steps:")

T = TypeVar("T")


@dataclass(frozen=True)
class TestbedTask:
    """One task: the user's `request`, the ground-truth `plan`, `scenes[i]` the scene after
    step i + 1, and `canonical_prompts[i]` step i + 1's prompt in core words only (what the
    generator renders correctly)."""

    __test__ = False  # not a pytest class, despite the name

    request: str
    plan: Plan
    scenes: tuple[Scene, ...]
    canonical_prompts: tuple[str, ...]

    @property
    def final_scene(self) -> Scene:
        return self.scenes[-1]


def _pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    return options[int(rng.integers(len(options)))]


def _references(scene: Scene, slot: int) -> list[Reference]:
    """Ways to refer to the object in `slot` that pick it out uniquely in `scene`: by shape,
    by colour and shape, by position (always unique)."""
    obj = scene.slots[slot]
    assert obj is not None
    candidates = [Reference(shape=obj.shape), Reference(shape=obj.shape, colour=obj.colour)]
    unique = [
        ref for ref in candidates if sum(ref.matches(o, s) for s, o in enumerate(scene.slots)) == 1
    ]
    return [*unique, Reference(slot=slot)]


class TaskSampler:
    """Samples `TestbedTask`s; deterministic per (seed, index).

    Args:
        seed: base seed; task `index` uses `default_rng([seed, index])`.
        synonym_rate: chance that each attribute word is an out-of-vocabulary synonym, and
            that a place is written relative to a neighbour (`to the left of the circle`).
        min_steps, max_steps: inclusive range of plan lengths (step 1 is text-to-image).
        max_initial_objects: at most this many objects in the step-1 prompt (1 or 2).
        lexicon: where synonyms come from.
    """

    def __init__(
        self,
        seed: int = 0,
        synonym_rate: float = 0.0,
        min_steps: int = 2,
        max_steps: int = 4,
        max_initial_objects: int = 2,
        lexicon: Lexicon = FULL_LEXICON,
    ) -> None:
        if not 1 <= min_steps <= max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
        if not 0.0 <= synonym_rate <= 1.0:
            raise ValueError(f"synonym_rate must be in [0, 1], got {synonym_rate}")
        if max_initial_objects not in (1, 2):
            raise ValueError(f"max_initial_objects must be 1 or 2, got {max_initial_objects}")
        self.seed = seed
        self.synonym_rate = synonym_rate
        self.min_steps = min_steps
        self.max_steps = max_steps
        self.max_initial_objects = max_initial_objects
        self.lexicon = lexicon

    def __iter__(self) -> Iterator[TestbedTask]:
        index = 0
        while True:
            yield self.task(index)
            index += 1

    def sample(self, count: int, start: int = 0) -> list[TestbedTask]:
        return [self.task(index) for index in range(start, start + count)]

    def task(self, index: int) -> TestbedTask:
        rng = np.random.default_rng([self.seed, index])
        words = np.random.default_rng([self.seed, index, 1])
        num_steps = int(rng.integers(self.min_steps, self.max_steps + 1))
        scene = Scene.empty()
        steps, scenes, canonical = [], [], []
        for number in range(1, num_steps + 1):
            before = scene
            if number == 1:
                edit, name = self._first_edit(rng, words)
            else:
                edit, name = self._edit(before, rng, words)
            scene = apply(edit, before, strict=True)
            prompt = format_edit(edit, self._chooser(words))
            steps.append(
                Step(
                    step_number=number,
                    step_name=name,
                    instruction=prompt[0].upper() + prompt[1:] + ".",
                    prompt=prompt,
                    auxiliary_text=describe(scene),
                )
            )
            scenes.append(scene)
            canonical.append(canonicalize(prompt, before))
        clauses = [step.prompt for step in steps]
        if len(clauses) > 1:
            clauses[-1] = "then " + clauses[-1]
        request = f"{_pick(words, REQUEST_OPENERS)} {', '.join(clauses)}"
        return TestbedTask(request, Plan(tuple(steps)), tuple(scenes), tuple(canonical))

    # Wording.

    def _chooser(self, words: np.random.Generator) -> WordChooser:
        def choose(kind: str, value: str | int, plural: bool) -> str:
            synonyms = self.lexicon.synonyms(kind, value, plural)
            if synonyms and words.random() < self.synonym_rate:
                return _pick(words, synonyms)
            return self.lexicon.spell(kind, value, plural)

        return choose

    def _place(
        self, scene: Scene, slot: int, words: np.random.Generator, moving: int | None = None
    ) -> Place:
        """`slot` as an absolute place, or (at `synonym_rate`) relative to a neighbour."""
        anchors = [
            (neighbour, -offset)
            for offset in (-1, 1)
            if 0 <= (neighbour := slot + offset) < len(POSITIONS)
            and neighbour != moving
            and scene.slots[neighbour] is not None
        ]
        if anchors and words.random() < self.synonym_rate:
            neighbour, offset = anchors[int(words.integers(len(anchors)))]
            shape_refs = [r for r in _references(scene, neighbour) if r.slot is None]
            if shape_refs:
                return Place(anchor=_pick(words, shape_refs), offset=offset)
        return Place(slot=slot)

    # Structure.

    def _spec(self, rng: np.random.Generator) -> ObjectSpec:
        size = _pick(rng, (*SIZES, None))
        return ObjectSpec(_pick(rng, SHAPES), _pick(rng, COLOURS), size)

    def _first_edit(self, rng: np.random.Generator, words: np.random.Generator) -> tuple[Edit, str]:
        count = int(rng.integers(1, self.max_initial_objects + 1))
        slots = sorted(rng.choice(len(POSITIONS), size=count, replace=False).tolist())
        ops, scene = [], Scene.empty()
        for slot in slots:
            op = Add(self._spec(rng), self._place(scene, slot, words), verb="draw")
            ops.append(op)
            scene = apply(Edit((op,)), scene)
        first = ops[0].obj
        name = f"Draw a {first.colour} {first.shape}" if count == 1 else "Draw the objects"
        return Edit(tuple(ops)), name

    def _edit(
        self, scene: Scene, rng: np.random.Generator, words: np.random.Generator
    ) -> tuple[Edit, str]:
        free, occupied = scene.free_slots(), scene.occupied_slots()
        kinds = ["recolour", "reshape", "resize"] if occupied else []
        kinds += ["add"] if free else []
        kinds += ["add_many"] if len(free) >= 2 else []
        kinds += ["move"] if occupied and free else []
        kinds += ["remove"] if len(occupied) >= 2 else []
        kind = _pick(rng, kinds)
        if kind == "add":
            spec = self._spec(rng)
            op: Op = Add(spec, self._place(scene, _pick(rng, free), words), verb="add")
            return Edit((op,)), f"Add a {spec.colour} {spec.shape}"
        if kind == "add_many":
            spec = self._spec(rng)
            count = int(rng.integers(2, len(free) + 1))
            op = AddMany(count, spec, verb="add")
            plural = FULL_LEXICON.spell("shape", spec.shape, plural=True)
            return Edit((op,)), f"Add {FULL_LEXICON.spell('count', count)} {plural}"
        slot = _pick(rng, occupied)
        obj = scene.slots[slot]
        assert obj is not None
        target = _pick(rng, _references(scene, slot))
        if kind in ("recolour", "reshape", "resize"):
            attribute = {"recolour": "colour", "reshape": "shape", "resize": "size"}[kind]
            values = {"colour": COLOURS, "shape": SHAPES, "size": SIZES}[attribute]
            new = _pick(rng, [v for v in values if v != getattr(obj, attribute)])
            op = Modify(target, **{attribute: new})
        elif kind == "move":
            op = Move(target, self._place(scene, _pick(rng, free), words, moving=slot))
        else:
            op = Remove(target)
        return Edit((op,)), f"{kind.capitalize()} the {obj.shape}"


def corpus(num_tasks: int = 200, seed: int = 0) -> Iterator[str]:
    """Representative testbed texts for training a word-level tokenizer: every lexicon and
    grammar word once, then requests, prompts (raw and canonical), step names, instructions
    and scene descriptions of sampled tasks (also with `ARTIFACT_NOTE`, as the critic writes
    them), with and without synonyms."""
    yield " ".join([*GRAMMAR_WORDS, *FULL_LEXICON.words, ARTIFACT_NOTE])
    for rate in (0.0, 0.5):
        for task in TaskSampler(seed=seed, synonym_rate=rate, min_steps=1).sample(num_tasks):
            yield task.request
            for step, canonical in zip(task.plan.steps, task.canonical_prompts, strict=True):
                yield from (step.step_name, step.instruction, step.prompt, canonical)
                yield step.auxiliary_text
                yield f"{step.auxiliary_text}; {ARTIFACT_NOTE}"
