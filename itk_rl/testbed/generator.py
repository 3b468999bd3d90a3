"""A procedural image generator for the testbed, behind the same interface as diffusers pools.

It knows only core words. Every field of a prompt written with an out-of-vocabulary word
(`crimson`, `disc`, `in the middle`, `to the left of the circle`, `3`) is misrendered with
probability `misrender_prob` — a wrong colour, shape, size or count, a wrong place, the wrong
object — as real generators fail on concepts they were not trained on. Rewriting the prompt in
core words (`canonicalize`) renders it correctly: that is what a critic can learn to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from itk_rl.testbed.edits import Add, AddMany, Modify, Move, Op, Resolved, execute, resolve_op
from itk_rl.testbed.lexicon import COLOURS, FULL_LEXICON, SHAPES, SIZES
from itk_rl.testbed.parser import parse_instruction
from itk_rl.testbed.render import DEFAULT_IMAGE_SIZE, add_smudge, decode, render
from itk_rl.testbed.scene import NUM_SLOTS, Scene

if TYPE_CHECKING:
    from itk_rl.interfaces.generator import RenderRequest

_VALUES = {"colour": COLOURS, "shape": SHAPES, "size": SIZES}


def _other(rng: np.random.Generator, options: Sequence, avoid: object) -> object:
    """A random element of `options` other than `avoid`: a guaranteed-wrong guess."""
    choices = [option for option in options if option != avoid]
    return choices[int(rng.integers(len(choices)))]


class TestbedGenerator:
    """Renders testbed scenes from prompts; implements `ImageGenerator`.

    Text-to-image when a request has no references (a white canvas of `image_size`²);
    otherwise the first reference is decoded and the prompt applied to its scene, at its size.
    An unparseable prompt changes nothing (a blank canvas for text-to-image): generators
    render whatever they get, they do not raise. Deterministic per `request.seed`.

    Args:
        image_size: side of text-to-image canvases, in pixels.
        misrender_prob: chance that each out-of-vocabulary field is rendered wrong (the size
            of the vocabulary gap; 0 turns the gap off).
        artifact_prob: chance that an image gets a smudge (`add_smudge`), which
            lowers the judge's perceptual quality but not what the image shows.
        artifact_size: side of the square smudge, in pixels.
    """

    __test__ = False  # not a pytest class, despite the name

    def __init__(
        self,
        image_size: int = DEFAULT_IMAGE_SIZE,
        misrender_prob: float = 1.0,
        artifact_prob: float = 0.0,
        artifact_size: int = 3,
    ) -> None:
        for name, prob in (("misrender_prob", misrender_prob), ("artifact_prob", artifact_prob)):
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {prob}")
        self.image_size = image_size
        self.misrender_prob = misrender_prob
        self.artifact_prob = artifact_prob
        self.artifact_size = artifact_size

    def __call__(self, requests: Sequence[RenderRequest]) -> list[np.ndarray]:
        """One `[H, W, 3]` uint8 image per request, in order."""
        return [self.render_one(request) for request in requests]

    def render_one(self, request: RenderRequest) -> np.ndarray:
        rng = np.random.default_rng(request.seed)
        if request.references:
            reference = np.asarray(request.references[0])
            before, size = decode(reference), reference.shape[:2]
        else:
            before, size = Scene.empty(), (self.image_size, self.image_size)
        image = render(self.edit_scene(request.prompt, before, rng), size)
        if self.artifact_prob > 0 and rng.random() < self.artifact_prob:
            image = add_smudge(image, self.artifact_size, rng)
        return image

    def edit_scene(self, prompt: str, before: Scene, rng: np.random.Generator) -> Scene:
        """The scene this generator draws for `prompt` applied to `before`, without pixels.

        Cheaper than rendering, for rewards that only need the scene.
        """
        try:
            edit = parse_instruction(prompt, FULL_LEXICON)
        except ValueError:
            return before
        scene = before
        for op in edit.ops:
            scene = execute(self._misrender(op, scene, rng), scene)
        return scene

    def _misrender(self, op: Op, scene: Scene, rng: np.random.Generator) -> Resolved:
        """Resolve `op` leniently, replacing each unknown field by a wrong guess (with
        probability `misrender_prob`, decided per field in a fixed order)."""
        wrong = {f for f in sorted(op.unknown) if rng.random() < self.misrender_prob}
        if isinstance(op, (Add, AddMany)):
            spec = op.obj
            for kind in sorted(_VALUES.keys() & wrong):
                spec = replace(spec, **{kind: _other(rng, _VALUES[kind], getattr(spec, kind))})
            op = replace(op, obj=spec)
        elif isinstance(op, Modify):
            for kind in sorted(_VALUES.keys() & wrong):
                op = replace(op, **{kind: _other(rng, _VALUES[kind], getattr(op, kind))})
        if isinstance(op, AddMany) and "count" in wrong:
            free = len(scene.free_slots())
            counts = [n for n in range(1, NUM_SLOTS + 1) if min(n, free) != min(op.count, free)]
            if counts:
                op = replace(op, count=counts[int(rng.integers(len(counts)))])
        resolved = resolve_op(op, scene, strict=False)
        if "target" in wrong:
            resolved = replace(resolved, source=_other(rng, range(NUM_SLOTS), resolved.source))
        if "position" in wrong and isinstance(op, (Add, Move)):
            intended = resolved.destinations[0] if resolved.destinations else None
            resolved = replace(resolved, destinations=(_other(rng, range(NUM_SLOTS), intended),))
        return resolved
