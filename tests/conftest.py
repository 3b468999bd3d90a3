"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from itk_rl.tiny import TinyModelPaths


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    """Tiny tokenizer, Qwen2.5-VL, Qwen3-VL and Klein, built once per session (< 1 s)."""
    from itk_rl.tiny import build_tiny_models  # transformers and diffusers: import when used

    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))
