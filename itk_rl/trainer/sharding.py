"""FSDP2 for a transformers model in one function: `fully_shard` each block, then the model.

Sharding per block (a text decoder layer, a vision transformer block) lets FSDP all-gather one
block's parameters at a time during forward and backward, so peak memory is one block's full
weights plus the shards, and communication overlaps compute. The blocks are the model's own
`_no_split_modules` (e.g. `Qwen2_5_VLDecoderLayer`, `Qwen2_5_VLVisionBlock`), the classes
transformers already marks as units that must stay whole; everything else (embeddings, norms,
lm_head, the vision patch embedding and merger) goes into the root group.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def block_classes(model: nn.Module) -> set[str]:
    """Class names of the model's repeated blocks, from transformers' `_no_split_modules`."""
    names = getattr(model, "_no_split_modules", None)
    if not names:
        raise ValueError(
            f"{type(model).__name__} declares no `_no_split_modules`; cannot tell its blocks apart"
        )
    return set(names)


def shard(
    model: nn.Module,
    mesh: DeviceMesh,
    *,
    reshard_after_forward: bool = True,
    mixed_precision: bool = False,
) -> nn.Module:
    """Shard `model` in place over the 1-D `mesh` (data parallel) and return it.

    `reshard_after_forward=False` keeps each block's gathered weights between forward and
    backward (faster, more memory: ZeRO-2 instead of ZeRO-3). `mixed_precision` computes in
    bfloat16 and reduces gradients in float32, the usual GPU setting; the sharded master
    weights and the optimizer state stay in the parameters' own dtype.
    """
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if mixed_precision
        else MixedPrecisionPolicy()
    )
    classes = block_classes(model)
    blocks = [m for m in model.modules() if type(m).__name__ in classes]
    if not blocks:
        raise ValueError(f"no module of {type(model).__name__} is one of its blocks {classes}")
    for block in blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    return model


def data_parallel_mesh(device_type: str, world_size: int) -> DeviceMesh:
    """The 1-D mesh over all ranks (`device_type` "cpu" with gloo, "cuda" with NCCL)."""
    return init_device_mesh(device_type, (world_size,), mesh_dim_names=("dp",))
