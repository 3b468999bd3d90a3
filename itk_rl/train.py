"""Critic GRPO on Ray: `python -m itk_rl.train --config-name RECIPE [overrides]`.

The same command runs under `ray job submit … -- python -m itk_rl.train …` (Ray is started
only when this process is not already connected to a cluster). The recipe script reads top to
bottom: setup (data, actors, resume) → loop of steps → cleanup (export).

Each step is `critic_grpo.rollout_and_score` (rollout streamed into the rewards) then
`critic_grpo.finish_step` (update, weight sync). With `algorithm.max_staleness` k ≥ 1 the first
halves of the next k steps run on background threads while this step updates: a batch is
sampled by weights at most k updates older than the ones it trains, which the trainer's rollout
correction can account for (`trainer.rollout_is`). k = 0 is the on-policy step, phase after
phase.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from itk_rl.critic_grpo import (
    ScoredBatch,
    StepSettings,
    finish_step,
    rollout_and_score,
    scored_batches,
    sync_weights,
)
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
    "rollout/staleness_max",
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
        chunk_records=cfg.rollout.chunk_records,
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
    start, log, batches = 0, None, None
    try:
        checkpoint = resume_from(cfg, checkpoints)
        if checkpoint is not None:
            start = load_step(actors.trainer, checkpoint, sampler)
            sync_weights(actors.trainer, actors.workers)
            print(f"[train] resumed from {checkpoint} at step {start}")
        log = open_metrics(out, start)
        # --- loop ---
        sampler_before: dict[int, dict[str, int]] = {}  # step → sampler state before its batch

        def draw(step: int) -> list[CriticSample]:
            sampler_before[step] = sampler.state()
            return [records[i] for i in sampler.next_batch()]

        def produce(step: int, batch: list[CriticSample]) -> ScoredBatch:
            return rollout_and_score(
                step=step,
                seed=cfg.seed,
                batch=batch,
                template=template,
                workers=actors.workers,
                generators=actors.generators,
                judges=actors.judges,
                reward_fn=reward_fn,
                settings=settings,
            )

        steps = range(start + 1, cfg.total_steps + 1)
        batches = scored_batches(steps, cfg.algorithm.max_staleness, draw, produce)
        step_end = time.perf_counter()
        for step, scored, waited in batches:
            views = cfg.logging.sample_every and step % cfg.logging.sample_every == 0
            result = finish_step(
                scored,
                workers=actors.workers,
                generators=actors.generators,
                judges=actors.judges,
                trainer=actors.trainer,
                settings=settings,
                started=step_end,
                num_views=cfg.logging.num_samples if views else 0,
            )
            step_end = time.perf_counter()
            result.metrics["time/wait_for_batch_s"] = waited
            record(out, log, step, result.metrics)
            log.samples(step, result.views)
            print(progress_line(step, cfg.total_steps, result.metrics, CONSOLE_KEYS), flush=True)
            if step % cfg.checkpoint_every == 0 or step == cfg.total_steps:
                # Batches drawn ahead are not trained yet: a resumed run draws them again.
                state = sampler_before.get(step + 1, sampler.state())
                save_step(actors.trainer, checkpoints, step, state)
            del sampler_before[step]
        # --- cleanup ---
        final = export_final(actors.trainer, out)
    finally:
        if log is not None:
            log.close()
        actors.shutdown()  # fails what is still in flight, so closing `batches` ends
        if batches is not None:
            batches.close()
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
