"""cluster/kuberay/rayjob.yaml, checked structurally: no PyPI package ships KubeRay's RayJob CRD
schema (KubeRay publishes it only in its Go repository and Helm chart), so this test checks what
the operator and the recipe need instead: the fields KubeRay requires, one worker group per actor
group sized for the recipe the entrypoint composes, the shared volume on every pod, token auth,
and the network policy. (The manifest was also validated by hand against the RayJob CRD of
KubeRay 1.5.1 and 1.7.0; see cluster/README.md.)
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from itk_rl.job import compose_recipe

GROUPS = {"rollout", "generator", "judge", "trainer"}


@pytest.fixture
def documents(cluster_dir: Path) -> dict[str, dict[str, Any]]:
    """The manifest's documents by kind."""
    docs = list(yaml.safe_load_all((cluster_dir / "kuberay" / "rayjob.yaml").read_text()))
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs), "one document of each kind"
    assert set(by_kind) == {"PersistentVolumeClaim", "RayJob", "NetworkPolicy"}
    return by_kind


def _pods(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pod template of the head and of each worker group, by group name."""
    cluster = job["spec"]["rayClusterSpec"]
    pods = {"head": cluster["headGroupSpec"]["template"]}
    pods |= {group["groupName"]: group["template"] for group in cluster["workerGroupSpecs"]}
    return pods


def test_the_rayjob_has_the_fields_kuberay_requires(documents: dict[str, dict[str, Any]]) -> None:
    job = documents["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    assert job["metadata"]["name"]
    spec = job["spec"]
    assert spec["entrypoint"]
    assert spec["submissionMode"] == "SidecarMode"  # the submitter reaches the dashboard locally
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        params = group["rayStartParams"]
        assert all(isinstance(v, str) for v in params.values()), f"strings only: {params}"
        containers = group["template"]["spec"]["containers"]
        assert containers and all(c["name"] and c["image"] for c in containers)
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]


def test_token_auth_and_a_cluster_internal_dashboard(documents: dict[str, dict[str, Any]]) -> None:
    job, policy = documents["RayJob"], documents["NetworkPolicy"]
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    # Only this job's pods and the KubeRay operator (its dashboard port) may connect.
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for name, pod in _pods(job).items():
        labels = pod["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"{name} pods are outside the network policy"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True, name
    peers = [rule for rule in policy["spec"]["ingress"] if "ports" not in rule]
    assert [rule["from"] for rule in peers] == [[{"podSelector": {"matchLabels": selector}}]]
    operator = [rule for rule in policy["spec"]["ingress"] if "ports" in rule]
    assert [rule["ports"] for rule in operator] == [[{"protocol": "TCP", "port": 8265}]]
    # The API key comes from a Secret, and only into the judge pods.
    for name, pod in _pods(job).items():
        for container in pod["spec"]["containers"]:
            env = {item["name"]: item for item in container.get("env", [])}
            assert ("OPENAI_API_KEY" in env) == (name == "judge"), name
            assert all("value" not in item for item in env.values()), f"{name}: literal env"


def test_every_pod_mounts_the_shared_volume_holding_output_dir(
    documents: dict[str, dict[str, Any]],
) -> None:
    claim = documents["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name, pod in _pods(documents["RayJob"]).items():
        shared = {
            volume["name"]
            for volume in pod["spec"]["volumes"]
            if volume.get("persistentVolumeClaim", {}).get("claimName") == claim["metadata"]["name"]
        }
        for container in pod["spec"]["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/shared") in shared, f"{name}: /shared is not the shared claim"


def test_the_entrypoint_composes_and_each_group_is_sized_for_its_recipe(
    documents: dict[str, dict[str, Any]], check_node_type
) -> None:
    words = shlex.split(documents["RayJob"]["spec"]["entrypoint"])
    assert words[:5] == ["python", "-m", "itk_rl.train", "--config-name", "critic_grpo"]
    cfg = compose_recipe(words[4], words[5:])
    for key in ("output_dir", "critic.model_path", "data.train_path"):
        value = OmegaConf.select(cfg, key)
        assert value.startswith("/shared/"), f"{key}={value} is not on the shared volume"

    cluster = documents["RayJob"]["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no actor on the head
    groups = {group["groupName"]: group for group in cluster["workerGroupSpecs"]}
    assert set(groups) == GROUPS
    for name, group in groups.items():
        # KubeRay writes the value into the shell command `ray start --resources=VALUE` as it
        # is, so it is a JSON object quoted for the shell.
        raw = group["rayStartParams"]["resources"]
        (word,) = shlex.split(raw)
        assert word != raw, f"{name}: resources {raw!r} is not quoted for the shell"
        custom = json.loads(word)
        (container,) = group["template"]["spec"]["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits == requests, f"{name}: requests and limits differ"
        check_node_type(
            cfg,
            name,
            custom,
            nodes=group["maxReplicas"],
            gpus=float(limits.get("nvidia.com/gpu", 0)),
            cpus=float(limits["cpu"]),
            where=f"worker group {name}",
        )
