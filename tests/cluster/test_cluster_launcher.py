"""cluster/ray_cluster.yaml: valid for Ray's cluster launcher (the JSON schema Ray ships), one node
type per actor group sized for recipes/critic_grpo.yaml, the dashboard on loopback and token auth
on every node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml

from itk_rl.job import compose_recipe

GROUPS = {"rollout", "generator", "judge", "trainer"}


@pytest.fixture
def config(cluster_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((cluster_dir / "ray_cluster.yaml").read_text())


def test_the_launcher_config_matches_rays_schema(config: dict[str, Any]) -> None:
    schema_path = Path(ray.autoscaler.__file__).with_name("ray-schema.json")
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert config["max_workers"] >= sum(t.get("min_workers", 0) for t in types.values())


def test_each_actor_group_has_a_node_type_sized_for_the_recipe(
    config: dict[str, Any], check_node_type
) -> None:
    cfg = compose_recipe("critic_grpo")
    types = dict(config["available_node_types"])
    head = types.pop(config["head_node_type"])
    assert head["resources"] == {"CPU": 0}, "the head runs the driver, no actor"
    assert set(types) == GROUPS
    for name, node_type in types.items():
        resources = dict(node_type["resources"])
        cpus, gpus = resources.pop("CPU"), resources.pop("GPU", 0)
        check_node_type(
            cfg,
            name,
            resources,
            nodes=node_type["max_workers"],
            gpus=gpus,
            cpus=cpus,
            where=f"node type {name}",
        )


def test_the_dashboard_listens_on_loopback_and_every_node_uses_the_token(
    config: dict[str, Any], cluster_dir: Path
) -> None:
    (head_start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    (worker_start,) = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start.split()
    for command in (head_start, worker_start):
        assert command.startswith("RAY_AUTH_MODE=token ray start"), command
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    assert "0.0.0.0" not in (cluster_dir / "ray_cluster.yaml").read_text()
