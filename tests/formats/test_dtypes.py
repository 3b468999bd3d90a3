"""Dtype names: one check for the trainer, the transformers engine and the diffusers generator."""

from __future__ import annotations

import pytest
import torch

from itk_rl.formats.dtypes import torch_dtype
from itk_rl.trainer.config import TrainerConfig


def test_known_names_give_torch_dtypes():
    assert torch_dtype("bfloat16", "x.dtype") is torch.bfloat16
    assert torch_dtype("float32", "x.dtype") is torch.float32


@pytest.mark.parametrize("name", ["float", "fp16", "int8"])
def test_an_unknown_name_is_refused_naming_the_key(name):
    with pytest.raises(ValueError, match=rf"rollout.component.dtype: .*got '{name}'"):
        torch_dtype(name, "rollout.component.dtype")


def test_the_trainer_config_refuses_a_bad_dtype_before_any_rank_starts():
    # `float` is a torch attribute too: getattr(torch, "float") would have accepted it.
    with pytest.raises(ValueError, match=r"trainer\.dtype"):
        TrainerConfig.from_dict({"dtype": "float"})
