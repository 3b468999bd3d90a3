"""Vision pretraining: the tiny tower learns to read testbed slots and its tokens their places,
is saved, and is not redone; smudges are labelled in the token cells they touch."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from itk_rl.testbed.render import SMUDGE_COLOUR, render
from itk_rl.testbed.scene import Scene
from itk_rl.testbed.vision import MARKER, _smudged_cells, pretrain_vision_tower


def test_the_tower_learns_slots_and_places_and_is_saved_once(tiny_models, tmp_path: Path) -> None:
    folder = tmp_path / "critic"
    shutil.copytree(tiny_models.qwen3_vl, folder)
    weights = folder / "model.safetensors"
    before = load_file(weights)
    figures = pretrain_vision_tower(folder, steps=150, batch_size=32, eval_scenes=128)
    assert figures["slots_right_before"] < 0.2  # a random tower reads nothing
    assert figures["slots_right_after"] > 0.9
    assert figures["places_right_before"] < 0.3 < 0.9 < figures["places_right_after"]
    after = load_file(weights)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("visual" in k for k in changed)  # only the tower was trained
    assert (folder / MARKER).is_file()
    assert pretrain_vision_tower(folder, steps=150) == figures  # recorded, not redone
    assert load_file(weights).keys() == after.keys()


def test_smudges_are_labelled_in_the_cells_they_touch() -> None:
    clean = render(Scene.empty())  # 48×48: cells of 16×16, row-major
    smudged = clean.copy()
    smudged[20:23, 40:43] = SMUDGE_COLOUR  # row 1, column 2
    assert _smudged_cells(clean, smudged).tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0]
    smudged[14:17, 0:3] = SMUDGE_COLOUR  # across rows 0 and 1 of column 0
    assert _smudged_cells(clean, smudged).tolist() == [1, 0, 0, 1, 0, 1, 0, 0, 0]
    assert not _smudged_cells(clean, clean).any()
