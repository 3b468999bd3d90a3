"""Checkpoints and exports of a sharded model, written atomically.

A checkpoint directory holds `dcp/` (model and optimizer, sharded, by
`torch.distributed.checkpoint`: every rank writes its own shards, and a later run may load them
with another world size), `trainer_state.pt` (scheduler, step, the driver's `extra`: data
position, its RNG) and `rng_rank{r}.pt` (each rank's torch RNG). Everything is written into a
hidden sibling `.<name>.tmp` and renamed into place by rank 0 only after every rank reported
success, so a directory under the final name is always complete; a failed save leaves nothing
under that name. All ranks must call these functions (they are collective).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

TRAINER_STATE = "trainer_state.pt"


def _all_ok(ok: bool, device: torch.device) -> bool:
    """True on every rank iff it is True on every rank (also a barrier)."""
    flag = torch.tensor([1 if ok else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def write_atomically(
    directory: Path | str, write: Callable[[Path], None], device: torch.device
) -> Path:
    """Run `write(tmp)` on every rank, then publish `tmp` as `directory` (rank 0 renames).

    An existing `directory` is replaced. If any rank's `write` raises, rank 0 deletes `tmp`
    and every rank raises: the failing rank its own error, the others a RuntimeError.
    """
    final = Path(directory)
    tmp = final.with_name(f".{final.name}.tmp")
    rank = dist.get_rank()
    error: BaseException | None = None
    try:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
    except OSError as caught:
        error = caught
    if _all_ok(error is None, device):  # the others write into tmp only once it exists
        try:
            write(tmp)
        except Exception as caught:
            error = caught
    elif error is None:
        error = RuntimeError(f"rank 0 could not create {tmp}")
    if not _all_ok(error is None, device):
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        dist.barrier()
        if error is not None:
            raise error
        raise RuntimeError(f"writing {final} failed on another rank; nothing was published")
    if rank == 0:
        old = final.with_name(f".{final.name}.old")
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def save_checkpoint(
    directory: Path | str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    device: torch.device,
) -> Path:
    """Save sharded model + optimizer, `trainer_state` (picklable, rank 0's) and RNG states."""
    model_state, optim_state = get_state_dict(model, optimizer)
    rank = dist.get_rank()

    def write(tmp: Path) -> None:
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=tmp / "dcp")
        torch.save(_rng_state(), tmp / f"rng_rank{rank}.pt")
        if rank == 0:
            torch.save(trainer_state, tmp / TRAINER_STATE)

    return write_atomically(directory, write, device)


def load_checkpoint(
    directory: Path | str, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load what `save_checkpoint` wrote into `model` and `optimizer`; return the trainer state.

    Each rank restores its RNG when the checkpoint has one for its rank (same world size).
    """
    root = Path(directory)
    if not (root / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"{root} is not a trainer checkpoint (no {TRAINER_STATE})")
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=root / "dcp")
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
    rng_file = root / f"rng_rank{dist.get_rank()}.pt"
    if rng_file.is_file():
        rng = torch.load(rng_file, weights_only=False)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return torch.load(root / TRAINER_STATE, weights_only=False)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on CPU, on rank 0 (other ranks get {}); collective."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def export_pretrained(
    directory: Path | str, model: nn.Module, processor: Any, device: torch.device
) -> Path:
    """Write a `from_pretrained`-loadable copy (weights, config, generation config, processor)."""
    weights = full_state_dict(model)

    def write(tmp: Path) -> None:
        if dist.get_rank() == 0:
            model.save_pretrained(tmp, state_dict=weights)
            processor.save_pretrained(tmp)

    return write_atomically(directory, write, device)
