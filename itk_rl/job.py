"""What every driver shares: composing recipes, joining Ray, checking resources, resuming.

The drivers (`train`, `sft`, `build_data`, `demo`, `itk generate`) stay readable top to bottom;
the plumbing they have in common lives here once: a recipe composed from Python, the config as
plain containers for Ray, the cluster check before any actor starts, checkpoints with the
sampler and RNG states, and the metrics log (`metrics.jsonl` beside TensorBoard) trimmed on
resume.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from itk_rl.formats.files import write_atomic
from itk_rl.metrics import MetricsLog
from itk_rl.rollout.actors import labels_match

if TYPE_CHECKING:
    from itk_rl.data.sampler import BatchSampler
    from itk_rl.trainer.group import TrainerGroup

RECIPES_MODULE = "itk_rl.recipes"
CHECKPOINT_PREFIX = "step_"


class RecipeError(ValueError):
    """A recipe that cannot be composed or used; the message names the recipe or key."""


def compose_recipe(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The recipe `name` from `itk_rl.recipes` with Hydra `overrides` applied.

    Works outside a Hydra app and inside one (a driver composing the recipe of a stage).
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name=name, overrides=list(overrides))
        with initialize_config_module(config_module=RECIPES_MODULE, version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise RecipeError(f"recipe {name!r} with overrides {list(overrides)}: {exc}") from exc


def plain(node: Any) -> Any:
    """A config node as plain containers: the only form that crosses a Ray boundary."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def connect_ray(cluster: DictConfig) -> None:
    """Join the cluster this process was submitted to, else start a local one."""
    if not ray.is_initialized():
        ray.init(**plain(cluster.init))


def check_resources(groups: Mapping[str, tuple[int, Any]]) -> None:
    """Fail at once when the `groups` cannot all be placed together (Ray would otherwise wait
    forever for resources, or a node type, that never come), naming each group's demand and
    what the cluster has.

    `groups`: name → (actor count, node with `num_cpus`, `num_gpus` and optional `resources`
    {name: amount} and `label_selector` {label: value}), as in the recipes. Every resource is
    totalled over the live nodes; a group with a label selector is also checked against the
    nodes whose labels match it.
    """
    nodes = [node for node in ray.nodes() if node["Alive"]]
    problems = _shortfalls(groups, nodes, "the Ray cluster")
    for name, (count, node) in groups.items():
        selector = plain(node.get("label_selector")) or {}
        if not selector:
            continue
        matching = [n for n in nodes if labels_match(selector, n.get("Labels") or {})]
        if matching:
            where = f"the part of the cluster labelled {selector}"
            problems += _shortfalls({name: (count, node)}, matching, where)
        else:
            problems.append(
                f"{name} asks for nodes labelled {selector} but no node matches (the nodes' "
                f"labels: {_label_list(nodes)})"
            )
    if problems:
        raise RuntimeError(
            "the recipe's actor groups cannot be placed: " + "; ".join(problems) + ". Lower "
            "the groups' counts, num_cpus, num_gpus or resources, change their label_selector, "
            "or add nodes that have them"
        )


def _shortfalls(
    groups: Mapping[str, tuple[int, Any]], nodes: Sequence[Mapping[str, Any]], where: str
) -> list[str]:
    """For each resource the `groups` ask more of than the `nodes` have together: the demand,
    group by group, and what `where` has (CPU and GPU, then custom resources by name)."""
    demand: dict[str, dict[str, float]] = {"CPU": {}, "GPU": {}}
    for name, (count, node) in groups.items():
        asks = {"CPU": node["num_cpus"], "GPU": node["num_gpus"]}
        asks |= plain(node.get("resources")) or {}
        for resource, amount in asks.items():
            demand.setdefault(resource, {})[name] = count * amount
    have: dict[str, float] = {}
    for node in nodes:
        for resource, amount in node["Resources"].items():
            have[resource] = have.get(resource, 0.0) + amount
    custom = sorted(r for r in have if r not in demand and _is_custom(r))
    has = ", ".join(f"{r} {have.get(r, 0.0):g}" for r in [*demand, *custom])
    problems = []
    for resource, by_group in demand.items():
        total = sum(by_group.values())
        if total > have.get(resource, 0.0) + 1e-9:
            parts = ", ".join(f"{name} {value:g}" for name, value in by_group.items() if value)
            problems.append(
                f"the recipe asks for {total:g} {resource} ({parts}) but {where} has "
                f"{have.get(resource, 0.0):g} (it has {has})"
            )
    return problems


def _is_custom(resource: str) -> bool:
    """A resource a recipe can ask for by name (not memory, nor Ray's per-node markers)."""
    return resource not in ("memory", "object_store_memory") and not resource.startswith("node:")


def _label_list(nodes: Sequence[Mapping[str, Any]]) -> str:
    """The labels the `nodes` carry, but each node's unique id, for an error message."""
    labels = {f"{k}={v}" for n in nodes for k, v in (n.get("Labels") or {}).items()}
    return ", ".join(sorted(x for x in labels if not x.startswith("ray.io/node-id="))) or "none"


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint (the trainer renames a checkpoint into place when whole)."""
    found = sorted(directory.glob(f"{CHECKPOINT_PREFIX}*"))
    return found[-1] if found else None


def resume_from(cfg: DictConfig, checkpoints: Path) -> Path | None:
    """`resume`: auto (latest, if any), never, or a checkpoint path."""
    if cfg.resume == "never":
        return None
    if cfg.resume == "auto":
        return latest_checkpoint(checkpoints)
    path = Path(cfg.resume)
    if not path.is_dir():
        raise FileNotFoundError(f"resume={cfg.resume!r}: no checkpoint folder there")
    return path


def start_run(cfg: DictConfig) -> Path:
    """Create `output_dir`, write the resolved recipe there (`config.yaml`, what this run was
    asked to do) and build the recipe's `prepare` inputs; returns the output folder."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.prepare is not None:
        instantiate(cfg.prepare)
    return out


def open_metrics(out: Path, start: int) -> MetricsLog:
    """The metrics log of a run that continues after step `start`: the steps logged after the
    checkpoint are redone, so their TensorBoard events and `metrics.jsonl` lines go first."""
    log = MetricsLog(out / "tensorboard", purge_step=start + 1)
    trim_metrics(out / "metrics.jsonl", start)
    return log


def export_final(trainer: TrainerGroup, out: Path) -> Path:
    """Export the trained weights with `save_pretrained` to `out/final`, replacing a previous
    export (a resumed run's earlier export is of older weights)."""
    final = out / "final"
    if final.exists():
        shutil.rmtree(final)
    trainer.export(str(final))
    return final


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_step(
    trainer: TrainerGroup, checkpoints: Path, step: int, sampler_state: dict[str, int]
) -> Path:
    """Checkpoint after `step`: the trainer's state, plus the RNG states and the sampler's
    position before the batch of step + 1 was drawn (batches drawn ahead for overlapped steps
    are not trained yet: a resumed run draws them again)."""
    extra = {"step": step, "sampler": sampler_state, "rng": rng_state()}
    return Path(trainer.save_checkpoint(str(checkpoints / f"{CHECKPOINT_PREFIX}{step:06d}"), extra))


def load_step(trainer: TrainerGroup, checkpoint: Path, sampler: BatchSampler) -> int:
    """Restore what `save_step` saved; returns the step the checkpoint was taken after."""
    extra = trainer.load_checkpoint(str(checkpoint))
    sampler.load_state(extra["sampler"])
    set_rng_state(extra["rng"])
    return extra["step"]


def record(out: Path, log: MetricsLog, step: int, metrics: dict[str, float]) -> None:
    """Log one step's metrics to TensorBoard and append them to `out/metrics.jsonl`."""
    log.scalars(step, metrics)
    with (out / "metrics.jsonl").open("a") as handle:
        handle.write(json.dumps({"step": step, **metrics}) + "\n")


def trim_metrics(path: Path, last_step: int) -> None:
    """Keep only the records of steps up to `last_step` (a resumed run redoes the rest).

    A run killed while appending leaves a torn last line: it is dropped, as the report's reader
    skips it. A line that does not read in the middle of the file cannot come from a kill
    (records are appended one after another), so it raises ValueError naming the file and line
    rather than silently losing the records around it. The file is rewritten atomically and
    every kept line ends in a newline, so the next append starts a line of its own.
    """
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for number, line in enumerate(lines, start=1):
        try:
            step = json.loads(line)["step"]
        except (ValueError, TypeError, KeyError) as error:
            if number == len(lines):
                break  # torn by a kill mid-write
            raise ValueError(
                f"{path} line {number} of {len(lines)}: not a metrics record with a step "
                f"({error}); only the last line can be torn by a killed run, so the file is "
                "corrupt: repair or delete it before resuming"
            ) from error
        if step <= last_step:
            kept.append(line + "\n")
    write_atomic(path, "".join(kept))
