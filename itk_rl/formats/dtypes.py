"""Parameter dtypes by the names recipes write, checked in one place for every component.

Checking the name needs no torch (a config is validated before anything heavy is imported);
torch is imported only to hand the dtype over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = ("float32", "bfloat16", "float16")


def check_dtype(name: str, key: str) -> str:
    """`name` if it is a dtype we load weights in; else ValueError naming the config `key`."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"{key}: dtype must be one of {list(DTYPE_NAMES)}, got {name!r}")
    return name


def torch_dtype(name: str, key: str) -> torch.dtype:
    """The torch dtype called `name` (checked as `check_dtype` does)."""
    import torch

    return getattr(torch, check_dtype(name, key))
