"""Critic GRPO on Ray: `python -m itk_rl.train --config-name RECIPE [overrides]`.

The same command runs under `ray job submit … -- python -m itk_rl.train …` (Ray is started
only when this process is not already connected to a cluster). The recipe script reads top to
bottom: setup (data, actors, resume) → loop of `critic_grpo.grpo_step` → cleanup (export).
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import ray
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from itk_rl.critic_grpo import RewardFn, StepSettings, grpo_step, sync_weights
from itk_rl.data.critic_records import load_critic_records
from itk_rl.data.sampler import BatchSampler
from itk_rl.formats.records import CriticSample
from itk_rl.formats.templates import PromptTemplate, load_template
from itk_rl.metrics import MetricsLog, progress_line
from itk_rl.rewards.judge_pool import JudgePool
from itk_rl.rollout.engine import SamplingParams
from itk_rl.rollout.pool import GeneratorPool
from itk_rl.rollout.workers import RolloutWorkers
from itk_rl.trainer.group import TrainerGroup

CHECKPOINT_PREFIX = "step_"
CONSOLE_KEYS = (
    "reward/total",
    "reward/verdict_accuracy",
    "reward/format_valid_rate",
    "reward/sem",
    "data/zero_variance_groups",
    "actor/kl",
    "time/step_s",
)


def plain(node: Any) -> Any:
    """A config node as plain containers: the only form that crosses a Ray boundary."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def connect_ray(cluster: DictConfig) -> None:
    """Join the cluster this process was submitted to, else start a local one."""
    if not ray.is_initialized():
        ray.init(**plain(cluster.init))


def actor_groups(cfg: DictConfig) -> dict[str, tuple[int, DictConfig]]:
    """The GRPO run's actor groups: name → (actor count, node with num_cpus/num_gpus)."""
    return {
        "rollout": (cfg.rollout.num_workers, cfg.rollout),
        "generator": (cfg.generator.num_actors, cfg.generator),
        "judge": (cfg.judge.num_actors, cfg.judge),
        "trainer": (cfg.trainer.world_size, cfg.trainer),
    }


def check_resources(groups: Mapping[str, tuple[int, Any]]) -> None:
    """Fail at once, naming each group's demand, when the `groups` (name → (actor count, node
    with num_cpus/num_gpus)) cannot all be placed together (Ray would otherwise wait forever
    for resources that never come)."""
    available = ray.cluster_resources()
    for resource, key in (("CPU", "num_cpus"), ("GPU", "num_gpus")):
        demand = {name: count * node[key] for name, (count, node) in groups.items()}
        total, have = sum(demand.values()), available.get(resource, 0.0)
        if total > have + 1e-9:
            parts = ", ".join(f"{name} {value:g}" for name, value in demand.items())
            raise RuntimeError(
                f"the recipe asks for {total:g} {resource} ({parts}) but the Ray cluster has "
                f"{have:g}; lower the groups' {key} or counts, or add nodes"
            )


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


@dataclass
class Actors:
    """Every actor group of the run; counts and resources come from the recipe only."""

    workers: RolloutWorkers
    generators: GeneratorPool
    judges: JudgePool
    trainer: TrainerGroup

    def shutdown(self) -> None:
        for group in (self.workers, self.generators, self.judges, self.trainer):
            group.shutdown()


def start_actors(cfg: DictConfig) -> Actors:
    rollout, generator, judge = cfg.rollout, cfg.generator, cfg.judge
    return Actors(
        workers=RolloutWorkers(
            plain(rollout.engine),
            num_workers=rollout.num_workers,
            num_cpus=rollout.num_cpus,
            num_gpus=rollout.num_gpus,
            max_restarts=cfg.fault_tolerance.max_restarts,
            max_task_retries=cfg.fault_tolerance.max_task_retries,
        ),
        generators=GeneratorPool(
            plain(generator.component),
            num_actors=generator.num_actors,
            num_cpus=generator.num_cpus,
            num_gpus=generator.num_gpus,
            max_batch_size=generator.max_batch_size,
            max_wait_s=generator.max_wait_s,
            max_restarts=cfg.fault_tolerance.max_restarts,
            max_task_retries=cfg.fault_tolerance.max_task_retries,
        ),
        judges=JudgePool(
            plain(judge.component),
            num_actors=judge.num_actors,
            num_cpus=judge.num_cpus,
            num_gpus=judge.num_gpus,
            max_restarts=cfg.fault_tolerance.max_restarts,
            max_task_retries=cfg.fault_tolerance.max_task_retries,
        ),
        trainer=TrainerGroup(cfg.critic.model_path, plain(cfg.trainer)),
    )


def step_settings(cfg: DictConfig) -> StepSettings:
    algorithm = cfg.algorithm
    return StepSettings(
        sampling=SamplingParams(**plain(cfg.rollout.sampling)),
        render_refinements=algorithm.render_refinements,
        render_seed=algorithm.render_seed,
        render_retries=algorithm.render_retries,
        skip_zero_variance_groups=algorithm.skip_zero_variance_groups,
        norm_adv_by_std=algorithm.norm_adv_by_std,
        epsilon=algorithm.epsilon,
    )


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


def save_step(trainer: TrainerGroup, checkpoints: Path, step: int, sampler: BatchSampler) -> None:
    """Checkpoint after `step`: the trainer's state, plus the sampler and RNG states."""
    extra = {"step": step, "sampler": sampler.state(), "rng": rng_state()}
    trainer.save_checkpoint(str(checkpoints / f"{CHECKPOINT_PREFIX}{step:06d}"), extra)


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
    """Keep only the records of steps up to `last_step` (a resumed run redoes the rest)."""
    if path.is_file():
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if json.loads(line)["step"] <= last_step]
        path.write_text("".join(kept))


def train(cfg: DictConfig) -> Path:
    """Run the recipe; returns the folder of the exported final weights."""
    # --- setup ---
    out = Path(cfg.output_dir)
    checkpoints = out / "checkpoints"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.prepare is not None:
        instantiate(cfg.prepare)
    records: list[CriticSample] = load_critic_records(cfg.data.train_path)
    template: PromptTemplate = load_template(cfg.critic.template)
    reward_fn: RewardFn = instantiate(cfg.reward)
    settings = step_settings(cfg)
    sampler = BatchSampler(len(records), cfg.data.batch_size, seed=cfg.seed)
    connect_ray(cfg.cluster)
    check_resources(actor_groups(cfg))
    actors = start_actors(cfg)
    start, log = 0, None
    try:
        checkpoint = resume_from(cfg, checkpoints)
        if checkpoint is not None:
            start = load_step(actors.trainer, checkpoint, sampler)
            sync_weights(actors.trainer, actors.workers)
            print(f"[train] resumed from {checkpoint} at step {start}")
        # Steps logged after the checkpoint are redone: drop their records first.
        log = MetricsLog(out / "tensorboard", purge_step=start + 1)
        trim_metrics(out / "metrics.jsonl", start)
        # --- loop ---
        for step in range(start + 1, cfg.total_steps + 1):
            batch = [records[i] for i in sampler.next_batch()]
            views = cfg.logging.sample_every and step % cfg.logging.sample_every == 0
            result = grpo_step(
                step=step,
                seed=cfg.seed,
                batch=batch,
                template=template,
                workers=actors.workers,
                generators=actors.generators,
                judges=actors.judges,
                trainer=actors.trainer,
                reward_fn=reward_fn,
                settings=settings,
                num_views=cfg.logging.num_samples if views else 0,
            )
            record(out, log, step, result.metrics)
            log.samples(step, result.views)
            print(progress_line(step, cfg.total_steps, result.metrics, CONSOLE_KEYS), flush=True)
            if step % cfg.checkpoint_every == 0 or step == cfg.total_steps:
                save_step(actors.trainer, checkpoints, step, sampler)
        # --- cleanup ---
        final = out / "final"
        if final.exists():
            shutil.rmtree(final)
        actors.trainer.export(str(final))
    finally:
        if log is not None:
            log.close()
        actors.shutdown()
    print(
        f"[train] final weights: {final}  (TensorBoard: tensorboard --logdir {out / 'tensorboard'})"
    )
    return final


@hydra.main(
    config_path="pkg://itk_rl.recipes", config_name="testbed_critic_grpo", version_base="1.3"
)
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
