"""Composing a packaged recipe from Python: the one helper every entry point shares."""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

RECIPES_MODULE = "itk_rl.recipes"


class RecipeError(ValueError):
    """A recipe that cannot be composed or used; the message names the recipe or key."""


def compose_recipe(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The recipe `name` from `itk_rl.recipes` with Hydra `overrides` applied.

    Works outside a Hydra app and inside one (a driver composing the recipe of a stage).
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name=name, overrides=list(overrides))
        with initialize_config_module(config_module=RECIPES_MODULE, version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise RecipeError(f"recipe {name!r} with overrides {list(overrides)}: {exc}") from exc
