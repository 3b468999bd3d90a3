"""Every recipe composes with every option of its config groups, and every `_target_` matches
its constructor: keys it accepts, required ones given — checked without building anything.

Written over whatever is in `recipes/`, so new recipes and group options are covered too.
"""

from __future__ import annotations

import inspect
from importlib import resources
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

RECIPES = resources.files("itk_rl.recipes")
TOP_LEVEL = sorted(p.name[:-5] for p in RECIPES.iterdir() if p.name.endswith(".yaml"))
GROUPS = {
    p.name: sorted(q.name[:-5] for q in p.iterdir() if q.name.endswith(".yaml"))
    for p in RECIPES.iterdir()
    if p.is_dir() and not p.name.startswith("_")
}
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def _defaults_groups(name: str) -> list[str]:
    """Config groups a top-level recipe picks an option of in its defaults list."""
    raw = OmegaConf.load(str(RECIPES / f"{name}.yaml"))
    groups = []
    for entry in raw.get("defaults", []):
        if isinstance(entry, (dict, DictConfig)):
            groups += [str(k).removeprefix("override ").split("@")[0].strip() for k in entry]
    return groups


def _cases() -> list[tuple[str, list[str]]]:
    cases = []
    for name in TOP_LEVEL:
        cases.append((name, []))
        for group in _defaults_groups(name):
            cases += [(name, [f"{group}={option}"]) for option in GROUPS.get(group, [])]
    return cases


@pytest.fixture(scope="module")
def hydra_recipes():
    """One Hydra initialisation for all compositions of this module."""
    with initialize_config_module(config_module="itk_rl.recipes", version_base="1.3"):
        yield


def _compose(name: str, overrides: list[str]) -> DictConfig:
    cfg = compose(config_name=name, overrides=overrides)
    # Required values (`???`, e.g. a models folder) get a placeholder, as a user would give one.
    for key in _missing(OmegaConf.to_container(cfg, resolve=False), ""):
        OmegaConf.update(cfg, key, "/placeholder")
    return cfg


def _missing(node: Any, path: str) -> list[str]:
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in _missing(v, f"{path}.{key}".lstrip("."))]
    return [path] if node == "???" else []


def _check_targets(node: Any, path: str) -> int:
    """Check every `_target_` under `node` against its signature; returns how many."""
    if isinstance(node, list):
        return sum(_check_targets(v, f"{path}[{i}]") for i, v in enumerate(node))
    if not isinstance(node, dict):
        return 0
    count = sum(_check_targets(v, f"{path}.{k}") for k, v in node.items())
    if "_target_" not in node:
        return count
    target = get_method(node["_target_"])
    params = inspect.signature(target).parameters
    given = set(node) - HYDRA_KEYS
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = given - set(params)
        assert not unknown, f"{path}: {node['_target_']} takes no {sorted(unknown)}"
    if not node.get("_partial_", False):
        required = {
            name
            for name, p in params.items()
            if p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        }
        missing = required - given
        assert not missing, f"{path}: {node['_target_']} needs {sorted(missing)}"
    return count + 1


def test_the_generate_recipes_exist():
    assert {"generate_testbed", "generate_real", "generate_tiny"} <= set(TOP_LEVEL)
    assert {"testbed", "flux2_klein", "tiny_klein"} <= set(GROUPS["generator"])
    assert {"none", "testbed_scripted", "interleavethinker_8b"} <= set(GROUPS["planner"])
    assert {"none", "testbed_oracle", "interleavethinker_8b"} <= set(GROUPS["critic"])


@pytest.mark.parametrize(("name", "overrides"), _cases(), ids=lambda v: str(v))
def test_recipe_composes_and_targets_match_constructors(hydra_recipes, name, overrides):
    cfg = _compose(name, overrides)
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert _check_targets(plain, name) >= 1
