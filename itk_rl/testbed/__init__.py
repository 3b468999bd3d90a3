"""A verifiable toy world: shapes on a small canvas, a procedural generator and an exact judge.

A scene has three slots (left, centre, right), each empty or holding one object (shape, colour,
size). Instructions in a small grammar draw and edit scenes; the generator knows only core
words and misrenders synonyms (the gap a critic learns to close); the judge decodes images
exactly and scores them on the VIEScore scales. Everything is deterministic per seed and fast
on a CPU, so learning can be proven there.

Modules, by responsibility: `lexicon` (words), `scene` (scenes and their descriptions),
`render` (pixels), `edits` (what instructions do), `parser` (instruction text),
`generator`, `judge`, `tasks` (multi-step tasks and the tokenizer corpus).
"""

from itk_rl.testbed.edits import Edit, apply
from itk_rl.testbed.generator import TestbedGenerator
from itk_rl.testbed.judge import TestbedJudge, perceptual_quality, semantic_consistency
from itk_rl.testbed.lexicon import CORE_LEXICON, FULL_LEXICON, Lexicon
from itk_rl.testbed.parser import canonicalize, format_edit, parse_instruction
from itk_rl.testbed.render import decode, render
from itk_rl.testbed.scene import Scene, ShapeObject, describe, parse_description
from itk_rl.testbed.tasks import TaskSampler, TestbedTask, corpus

__all__ = [
    "CORE_LEXICON",
    "FULL_LEXICON",
    "Edit",
    "Lexicon",
    "Scene",
    "ShapeObject",
    "TaskSampler",
    "TestbedGenerator",
    "TestbedJudge",
    "TestbedTask",
    "apply",
    "canonicalize",
    "corpus",
    "decode",
    "describe",
    "format_edit",
    "parse_description",
    "parse_instruction",
    "perceptual_quality",
    "render",
    "semantic_consistency",
]
