"""cluster/submit.sh submits each driver (train, sft, build_data) as a Ray job: run against a
fake `ray` on PATH that records its arguments and environment, since what matters here is the
command handed to `ray job submit` (the real submission is tested with a live cluster elsewhere).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from itk_rl.job import compose_recipe

FAKE_RAY = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["FAKE_RAY_RECORD"], "w") as handle:
    json.dump({"argv": sys.argv[1:], "auth_mode": os.environ.get("RAY_AUTH_MODE")}, handle)
"""


@pytest.fixture
def fake_ray_on_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose `ray` is a fake that writes what it was called with to a file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ray").write_text(FAKE_RAY)
    (bin_dir / "ray").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "USER_CODE"))}
    env |= {"PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}
    env |= {"FAKE_RAY_RECORD": str(tmp_path / "record.json")}
    return env


def _submit(cluster_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(cluster_dir / "submit.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


DRIVERS = [("train", "critic_grpo"), ("sft", "critic_sft"), ("build_data", "data_real")]


@pytest.mark.parametrize(("driver", "recipe"), DRIVERS)
def test_each_driver_is_submitted_as_a_ray_job_with_token_auth(
    cluster_dir: Path, fake_ray_on_path: dict[str, str], driver: str, recipe: str
) -> None:
    assert importlib.util.find_spec(f"itk_rl.{driver}") is not None
    compose_recipe(recipe)  # the recipe the example names exists
    overrides = ["output_dir=/shared/run one", "seed=3"]
    run = _submit(cluster_dir, fake_ray_on_path, driver, recipe, *overrides)
    assert run.returncode == 0, run.stderr
    record = json.loads(Path(fake_ray_on_path["FAKE_RAY_RECORD"]).read_text())
    assert record["argv"] == [
        "job", "submit", "--address", "http://127.0.0.1:8265", "--",
        "python", "-m", f"itk_rl.{driver}", "--config-name", recipe, *overrides,
    ]  # fmt: skip
    assert record["auth_mode"] == "token"


def test_the_address_and_user_code_are_passed_on(
    cluster_dir: Path, fake_ray_on_path: dict[str, str], tmp_path: Path
) -> None:
    env = fake_ray_on_path | {"RAY_ADDRESS": "http://127.0.0.1:18265", "USER_CODE": str(tmp_path)}
    run = _submit(cluster_dir, env, "train", "critic_grpo")
    assert run.returncode == 0, run.stderr
    argv = json.loads(Path(env["FAKE_RAY_RECORD"]).read_text())["argv"]
    assert argv[2:5] == ["--address", "http://127.0.0.1:18265", "--working-dir"]
    assert argv[5:7] == [str(tmp_path), "--"]


def test_an_unknown_driver_is_refused_naming_the_choices(
    cluster_dir: Path, fake_ray_on_path: dict[str, str]
) -> None:
    run = _submit(cluster_dir, fake_ray_on_path, "demo", "demo")
    assert run.returncode == 2
    assert "unknown driver 'demo' (expected train, sft or build_data)" in run.stderr
    assert not Path(fake_ray_on_path["FAKE_RAY_RECORD"]).exists()
