"""What the launcher tests share: reading cluster/ files and checking a node type against the
recipe's actor groups."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
GROUPS = ("rollout", "generator", "judge", "trainer")

NodeCheck = Callable[..., None]


@pytest.fixture
def cluster_dir() -> Path:
    return CLUSTER


@pytest.fixture
def check_node_type() -> NodeCheck:
    """A callable checking one node type of a launcher against the recipe `cfg`: the node
    advertises `{group: actors}` and holds that many of the group's actors (their GPUs and
    CPUs), and `nodes` of them hold the whole group (`itk_rl.train.actor_groups`)."""
    from itk_rl.train import actor_groups

    def check(
        cfg: DictConfig,
        group: str,
        custom: dict[str, float],
        *,
        nodes: int,
        gpus: float,
        cpus: float,
        where: str,
    ) -> None:
        count, node = actor_groups(cfg)[group]
        assert set(custom) == {group}, f"{where}: custom resources {custom}, expected {group}"
        actors = custom[group]
        assert actors >= 1, f"{where}: {group} resource {actors}"
        assert gpus == actors * node.num_gpus, (
            f"{where}: {gpus} GPUs for {actors} {group} actors of {node.num_gpus} GPU each"
        )
        assert cpus >= actors * node.num_cpus, (
            f"{where}: {cpus} CPUs for {actors} {group} actors of {node.num_cpus} CPU each"
        )
        assert nodes * actors >= count, (
            f"{where}: {nodes} node(s) of {actors} hold fewer than the recipe's {count} {group}"
        )

    return check
