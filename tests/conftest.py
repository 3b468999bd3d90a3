"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

# First: applies the torchvision CPU work-around before any test module imports transformers.
import itk_rl  # noqa: F401

if TYPE_CHECKING:
    from itk_rl.tiny import TinyModelPaths


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    """Tiny tokenizer, Qwen2.5-VL, Qwen3-VL and Klein, built once per session (< 1 s)."""
    from itk_rl.tiny import build_tiny_models  # transformers and diffusers: import when used

    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray cluster for the session (starting one costs 3–6 s).

    Logical CPUs are oversubscribed (8 on a 2-core machine) so tests can place trainer ranks,
    rollout workers, generators and judges at once; tests must not rely on real parallelism.
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a stale ~/.ray token must not matter
    ray.init(num_cpus=8, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()
