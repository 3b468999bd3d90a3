"""An exact judge for testbed images, on the VIEScore scales the real judges use (0–10).

Semantic consistency (SC) — `semantic_consistency`:
    The instruction is parsed with the full lexicon (synonyms understood) and applied strictly
    to the before-scene: `expected = apply(edit, before)`. Each slot an operation writes or
    empties is *targeted*, with a checklist: an added object's shape and the colour/size the
    instruction states; all three attributes of a modified or moved object (changed and kept
    ones); emptiness of a removed object's or a moved object's old slot.

        edit_success = checks passed / checks          (a check of an object attribute fails
                                                        if the slot holds no object)
        over_editing = untargeted slots equal to the before-scene / untargeted slots  (1 if none)
        SC = 10 · min(edit_success, over_editing)

    For text-to-image the before-scene is the empty canvas, so this is prompt following, and
    any extra object is over-editing.

Perceptual quality (PQ) — `perceptual_quality`:
    The image alone, against a clean re-render of its own decoded scene: `bad` = pixels the
    scene does not explain (noise, smudges, shapes off their template).

        PQ = 10 · max(0, 1 − bad / (artifact_tolerance · H · W))

    It stands for min(naturalness, artifacts): in this world both show up as unexplained
    pixels. With the default tolerance (1 % of pixels), a 3×3 smudge on 48×48 gives ≈ 6.1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from itk_rl.formats.score import JudgeScore
from itk_rl.testbed.edits import (
    Add,
    AddMany,
    Edit,
    Modify,
    Move,
    ObjectSpec,
    Remove,
    execute,
    resolve_op,
)
from itk_rl.testbed.lexicon import FULL_LEXICON
from itk_rl.testbed.parser import parse_instruction
from itk_rl.testbed.render import decode, unexplained_pixels
from itk_rl.testbed.scene import NUM_SLOTS, Scene

ALL_ATTRIBUTES = frozenset({"shape", "colour", "size"})


def _stated(spec: ObjectSpec) -> set[str]:
    """The attributes an instruction says about an object to add: its shape, maybe more."""
    return {"shape"} | {kind for kind in ("colour", "size") if getattr(spec, kind)}


def _checklists(edit: Edit, before: Scene) -> tuple[Scene, dict[int, set[str]]]:
    """The expected scene and, per targeted slot, the object attributes to check."""
    checks: dict[int, set[str]] = {}
    scene = before
    for op in edit.ops:
        resolved = resolve_op(op, scene, strict=True)
        if isinstance(op, (Add, AddMany)):
            for slot in resolved.destinations:
                checks.setdefault(slot, set()).update(_stated(op.obj))
        elif isinstance(op, (Modify, Move, Remove)):
            assert resolved.source is not None  # strict resolution found it
            checks.setdefault(resolved.source, set())
            if isinstance(op, Modify):
                checks[resolved.source] |= ALL_ATTRIBUTES
            for slot in resolved.destinations:
                checks.setdefault(slot, set()).update(ALL_ATTRIBUTES)
        scene = execute(resolved, scene)
    return scene, checks


def semantic_consistency(edit: Edit, before: Scene, after: Scene) -> float:
    """SC on 0–10 (formula in the module docstring). Raises ValueError when `edit` does not
    apply to `before` (a reference matching nothing, adding onto an occupied slot)."""
    expected, checks = _checklists(edit, before)
    passed = total = 0
    for slot, attributes in checks.items():
        want, got = expected.slots[slot], after.slots[slot]
        if want is None:
            total += 1
            passed += got is None
            continue
        for attribute in sorted(attributes or {"shape"}):
            total += 1
            passed += got is not None and getattr(got, attribute) == getattr(want, attribute)
    edit_success = passed / total if total else 1.0
    untargeted = [slot for slot in range(NUM_SLOTS) if slot not in checks]
    kept = sum(after.slots[slot] == before.slots[slot] for slot in untargeted)
    over_editing = kept / len(untargeted) if untargeted else 1.0
    return 10.0 * min(edit_success, over_editing)


def perceptual_quality(image: np.ndarray, artifact_tolerance: float = 0.01) -> float:
    """PQ on 0–10 (formula in the module docstring)."""
    height, width = np.asarray(image).shape[:2]
    bad = unexplained_pixels(image)
    return 10.0 * max(0.0, 1.0 - bad / (artifact_tolerance * height * width))


class TestbedJudge:
    """Scores testbed renders exactly; the testbed's stand-in for a VLM judge.

    Args:
        artifact_tolerance: share of pixels left unexplained at which PQ reaches 0.
    """

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, artifact_tolerance: float = 0.01) -> None:
        if artifact_tolerance <= 0:
            raise ValueError(f"artifact_tolerance must be > 0, got {artifact_tolerance}")
        self.artifact_tolerance = artifact_tolerance

    def score(
        self, instruction: str, after: np.ndarray, before: np.ndarray | None = None
    ) -> JudgeScore:
        """Judge `after` as the result of `instruction` applied to `before` (None: text-to-image
        on a white canvas).

        An instruction that does not apply to the before-scene (it refers to an object an
        earlier misrendered step never drew) cannot be carried out: SC = 0, as a judge looking
        at the images would rate it. Raises ValueError naming the instruction only if it does
        not parse, which is the caller's mistake: judges score against the planner's prompts.
        """
        edit = parse_instruction(instruction, FULL_LEXICON)
        before_scene = decode(before) if before is not None else Scene.empty()
        try:
            semantics = semantic_consistency(edit, before_scene, decode(after))
        except ValueError:
            semantics = 0.0
        return JudgeScore(semantics, perceptual_quality(after, self.artifact_tolerance))

    def score_batch(
        self,
        instructions: Sequence[str],
        afters: Sequence[np.ndarray],
        befores: Sequence[np.ndarray | None] | None = None,
    ) -> list[JudgeScore]:
        """`score` for parallel lists; `befores` None means all text-to-image."""
        befores = list(befores) if befores is not None else [None] * len(instructions)
        if not len(instructions) == len(afters) == len(befores):
            raise ValueError(
                f"score_batch needs equal lengths, got {len(instructions)} instructions, "
                f"{len(afters)} afters, {len(befores)} befores"
            )
        return [
            self.score(text, after, before)
            for text, after, before in zip(instructions, afters, befores, strict=True)
        ]
