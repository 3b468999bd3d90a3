"""FSDP2 for a transformers model in one function: `fully_shard` each block, then the model.

Sharding per block (a text decoder layer, a vision transformer block) lets FSDP all-gather one
block's parameters at a time during forward and backward, so peak memory is one block's full
weights plus the shards, and communication overlaps compute. The blocks are the model's own
`_no_split_modules` (e.g. `Qwen2_5_VLDecoderLayer`, `Qwen2_5_VLVisionBlock`), the classes
transformers already marks as units that must stay whole; everything else (embeddings, norms,
lm_head, the vision patch embedding and merger) goes into the root group.

The process group itself is joined through rank 0's key-value store (`serve_store`,
`join_process_group`), which rank 0 opens on a port the OS picks in its own process: choosing a
free port in one process and binding it in another races with everything else on the machine.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import torch
import torch.distributed as dist
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


RENDEZVOUS_TIMEOUT = timedelta(minutes=30)


def serve_store(address: str, world_size: int) -> tuple[dist.TCPStore, socket.socket]:
    """Rank 0's store for the group, served by this process on `address` only (the node's
    cluster-network address) and a port the OS picks (`.port`). torch's own server would listen
    on every interface, so the store takes a socket bound here; keep the returned socket for
    the store's life."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    listener = socket.create_server((address, 0), family=family)
    port = listener.getsockname()[1]
    store = dist.TCPStore(
        address,
        port,
        world_size,
        True,
        RENDEZVOUS_TIMEOUT,
        wait_for_workers=False,
        master_listen_fd=listener.fileno(),
    )
    return store, listener


def join_process_group(
    rank: int, world_size: int, store: dist.TCPStore | None, address: str, port: int
) -> torch.device:
    """Join the default process group through `store` (rank 0's own) or rank 0's store at
    `address:port`; returns this rank's device: CUDA 0 with NCCL where a GPU is visible (Ray
    exposes only the actor's own), else the CPU with gloo."""
    store = store or dist.TCPStore(address, port, world_size, False, RENDEZVOUS_TIMEOUT)
    if torch.cuda.is_available():
        torch.cuda.set_device(0)
        device, backend = torch.device("cuda", 0), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(
        backend, store=store, rank=rank, world_size=world_size, timeout=RENDEZVOUS_TIMEOUT
    )
    return device


def data_parallel_mesh(device_type: str, world_size: int) -> DeviceMesh:
    """The 1-D mesh over all ranks (`device_type` "cpu" with gloo, "cuda" with NCCL)."""
    return init_device_mesh(device_type, (world_size,), mesh_dim_names=("dp",))
