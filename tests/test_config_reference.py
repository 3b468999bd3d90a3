"""docs/config-reference.md is what scripts/config_reference.py writes from the recipes now, and
every key of the drivers' recipes has a comment for it to show."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "config_reference.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def test_checked_in_reference_is_up_to_date(script: ModuleType) -> None:
    written = script.OUTPUT.read_text(encoding="utf-8")
    assert written == script.render(), (
        "docs/config-reference.md is stale: run `.venv/bin/python scripts/config_reference.py`"
    )


def test_every_recipe_is_assigned_to_a_driver(script: ModuleType) -> None:
    assert sorted(script.driver_recipes()) == script.top_level_recipes()


def test_every_key_of_the_main_recipes_has_a_comment(script: ModuleType) -> None:
    missing = {
        name: keys
        for name in script.top_level_recipes()
        if (keys := script.parse_recipe(script.RECIPES / f"{name}.yaml").undocumented())
    }
    assert not missing, f"recipe keys without a comment above them: {missing}"


def test_a_comment_describes_the_run_of_keys_below_it(script: ModuleType, tmp_path: Path) -> None:
    recipe = tmp_path / "example.yaml"
    recipe.write_text(
        "# What this file is for.\n"
        "\n"
        "# Output size in pixels.\n"
        "height: 64\n"
        "width: 64\n"
        "\n"
        "steps: 4\n"
        "# How to sample.\n"
        "sampling:\n"
        "  n: 8\n"
        "  # Longest answer.\n"
        "  max_new_tokens: 64\n"
        "overrides:\n"
        "  # The batch.\n"
        "  - data.batch_size=16\n"
        "hydra:\n"
        "  job:\n"
        "    chdir: false\n",
        encoding="utf-8",
    )
    parsed = script.parse_recipe(recipe)
    assert parsed.header == "What this file is for."
    rows = [([e.key for e in entries], meaning) for entries, meaning in parsed.rows()]
    assert rows == [
        (["height", "width"], "Output size in pixels."),
        (["steps"], ""),
        (["sampling.n"], "How to sample."),
        (["sampling.max_new_tokens"], "Longest answer."),
        (["overrides[0]"], "The batch."),
    ]
    assert parsed.undocumented() == ["steps"]


def test_a_file_header_gives_its_last_sentence_to_the_key_below(
    script: ModuleType, tmp_path: Path
) -> None:
    split = tmp_path / "split.yaml"
    split.write_text(
        "# The trainer for a small model.\n# Ranks and what each reserves.\nworld_size: 2\n",
        encoding="utf-8",
    )
    whole = tmp_path / "whole.yaml"
    whole.write_text("# @package _global_\n# No critic at all.\ncritic: null\n", encoding="utf-8")
    parsed = script.parse_recipe(split)
    assert parsed.header == "The trainer for a small model."
    assert [(e[0].key, m) for e, m in parsed.rows()] == [
        ("world_size", "Ranks and what each reserves.")
    ]
    parsed = script.parse_recipe(whole)
    assert parsed.header == "No critic at all."
    assert [(e[0].key, m) for e, m in parsed.rows()] == [("critic", "No critic at all.")]
