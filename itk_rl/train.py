"""Critic GRPO on Ray: `python -m itk_rl.train --config-name RECIPE [overrides]`.

The same command runs under `ray job submit … -- python -m itk_rl.train …` (Ray is started
only when this process is not already connected to a cluster). The recipe script reads top to
bottom: setup (data, actors, resume) → loop of `critic_grpo.grpo_step` → cleanup (export).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from itk_rl.critic_grpo import StepSettings, grpo_step, sync_weights
from itk_rl.data.critic_records import load_critic_records
from itk_rl.data.sampler import BatchSampler
from itk_rl.formats.records import CriticSample
from itk_rl.formats.templates import PromptTemplate, load_template
from itk_rl.interfaces.engine import SamplingParams
from itk_rl.interfaces.reward import RewardFn, needs_rerender
from itk_rl.job import (
    check_resources,
    connect_ray,
    export_final,
    load_step,
    open_metrics,
    plain,
    record,
    resume_from,
    save_step,
    start_run,
)
from itk_rl.metrics import progress_line
from itk_rl.rewards.judge_pool import JudgePool
from itk_rl.rollout.pool import GeneratorPool
from itk_rl.rollout.workers import RolloutWorkers
from itk_rl.trainer.group import TrainerGroup

CONSOLE_KEYS = (
    "reward/total",
    "reward/verdict_accuracy",
    "reward/format_valid_rate",
    "reward/sem",
    "data/zero_variance_groups",
    "actor/kl",
    "time/step_s",
)


def actor_groups(cfg: DictConfig) -> dict[str, tuple[int, DictConfig]]:
    """The GRPO run's actor groups: name → (actor count, node with num_cpus/num_gpus).

    Rollout, generator and judge share one recipe shape: `component` (what each actor
    builds), `num_actors`, `num_cpus`, `num_gpus`; the trainer's ranks are `world_size`.
    """
    return {
        "rollout": (cfg.rollout.num_actors, cfg.rollout),
        "generator": (cfg.generator.num_actors, cfg.generator),
        "judge": (cfg.judge.num_actors, cfg.judge),
        "trainer": (cfg.trainer.world_size, cfg.trainer),
    }


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
            plain(rollout.component),
            num_actors=rollout.num_actors,
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


def step_settings(cfg: DictConfig, reward_fn: RewardFn) -> StepSettings:
    """The step's settings from the recipe; refinements are re-rendered exactly when the reward
    reads them (derived, not a recipe key: a recipe that skipped the renders its reward reads
    would fail at the first failed step, and one that made renders it ignores would waste them)."""
    algorithm = cfg.algorithm
    return StepSettings(
        sampling=SamplingParams(**plain(cfg.rollout.sampling)),
        render_refinements=needs_rerender(reward_fn),
        render_seed=algorithm.render_seed,
        render_retries=algorithm.render_retries,
        skip_zero_variance_groups=algorithm.skip_zero_variance_groups,
        norm_adv_by_std=algorithm.norm_adv_by_std,
        epsilon=algorithm.epsilon,
    )


def train(cfg: DictConfig) -> Path:
    """Run the recipe; returns the folder of the exported final weights."""
    # --- setup ---
    out = start_run(cfg)
    checkpoints = out / "checkpoints"
    records: list[CriticSample] = load_critic_records(cfg.data.train_path)
    template: PromptTemplate = load_template(cfg.critic.template)
    reward_fn: RewardFn = instantiate(cfg.reward)
    settings = step_settings(cfg, reward_fn)
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
        log = open_metrics(out, start)
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
        final = export_final(actors.trainer, out)
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
