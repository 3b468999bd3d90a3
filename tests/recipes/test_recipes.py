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


def _defaults_entries(name: str) -> list[tuple[str, str]]:
    """(group, package) of each config-group option a top-level recipe picks in its defaults
    list: `- /generator@generator.component: testbed` gives ("generator",
    "generator.component"), `- reward: critic` gives ("reward", "reward")."""
    raw = OmegaConf.load(str(RECIPES / f"{name}.yaml"))
    entries = []
    for entry in raw.get("defaults", []):
        if isinstance(entry, (dict, DictConfig)):
            for key in entry:
                spec = str(key).removeprefix("override ").strip().removeprefix("/")
                group, _, package = spec.partition("@")
                entries.append((group, package or group))
    return entries


def _cases() -> list[tuple[str, str, str, str]]:
    """(recipe, group, package, option): each recipe as it is (group ""), and with every option
    of every group it picks one of, at the package it puts that option in."""
    cases = []
    for name in TOP_LEVEL:
        cases.append((name, "", "", ""))
        for group, package in _defaults_entries(name):
            cases += [(name, group, package, option) for option in GROUPS.get(group, [])]
    return cases


def _case_id(case: tuple[str, str, str, str]) -> str:
    name, group, package, option = case
    if not group:
        return name
    return f"{name}-{group}@{package}={option}" if package != group else f"{name}-{group}={option}"


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


def test_every_defaults_entry_picks_from_a_config_group() -> None:
    # An entry whose group is not a folder of recipes/ would have no options to compose.
    for name in TOP_LEVEL:
        for group, _ in _defaults_entries(name):
            assert group in GROUPS, f"{name}.yaml: defaults entry {group!r} is no config group"


@pytest.mark.parametrize("case", _cases(), ids=_case_id)
def test_recipe_composes_and_targets_match_constructors(hydra_recipes, case):
    name, group, package, option = case
    key = group if package == group else f"{group}@{package}"
    cfg = _compose(name, [f"{key}={option}"] if group else [])
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert _check_targets(plain, name) >= 1
    if group:
        # The option lands where the defaults list puts it (an option written for another
        # place, such as a `@package _global_` one, would land beside it, not in it).
        raw = OmegaConf.load(str(RECIPES / group / f"{option}.yaml"))
        if "_target_" in raw:
            placed = OmegaConf.select(cfg, package)
            assert placed is not None and placed.get("_target_") == raw._target_, (
                f"{name}: {group}={option} did not land at {package}"
            )


def _actor_groups(node: Any, path: str) -> list[tuple[str, dict]]:
    """Every node that reserves resources for actors (num_cpus / num_gpus) under `node`, but the
    trainer: its ranks are one FSDP group sized by `trainer.world_size` (TrainerConfig)."""
    if not isinstance(node, dict) or path == "trainer":
        return []
    found = [(path, node)] if {"num_cpus", "num_gpus"} & set(node) else []
    children = (_actor_groups(v, f"{path}.{k}".lstrip(".")) for k, v in node.items())
    return found + [group for child in children for group in child]


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_every_actor_group_has_one_shape(hydra_recipes, name):
    # Rollout, generator, judge, teachers, the SFT check: what each actor builds under
    # `component`, beside how many actors, what each reserves and which nodes it may use.
    plain = OmegaConf.to_container(_compose(name, []), resolve=True)
    shape = {"component", "num_actors", "num_cpus", "num_gpus", "resources", "label_selector"}
    for path, group in _actor_groups(plain, ""):
        missing = shape - set(group)
        assert not missing, f"{name}: actor group {path} lacks {sorted(missing)}"
        assert "_target_" in group["component"], f"{name}: {path}.component has no _target_"
