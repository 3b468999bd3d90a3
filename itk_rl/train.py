"""Critic GRPO on Ray: `python -m itk_rl.train --config-name RECIPE [overrides]`.

The same command runs under `ray job submit … -- python -m itk_rl.train …` (Ray is started
only when this process is not already connected to a cluster). The recipe script reads top to
bottom: setup (data, actors, resume) → loop of steps → cleanup (export).

Each step is `critic_grpo.rollout_and_score` (rollout streamed into the rewards) then
`critic_grpo.finish_step` (update, weight sync). With `algorithm.max_staleness` k ≥ 1 the first
halves of the next k steps run on background threads while this step updates: a batch is
sampled by weights at most k updates older than the ones it trains, which the trainer's rollout
correction can account for (`trainer.rollout_is`). k = 0 is the on-policy step, phase after
phase. With `algorithm.dynamic_sampling.oversample` > 1 each step draws that many times
`data.batch_size` records and trains the groups whose rewards vary (`critic_grpo.select_groups`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from itk_rl.critic_grpo import (
    Actors,
    GRPORun,
    StepSettings,
    finish_step,
    records_per_step,
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
from itk_rl.trainer.group import TrainerFailed, TrainerGroup

CONSOLE_KEYS = (
    "reward/total",
    "reward/verdict_accuracy",
    "reward/format_valid_rate",
    "reward/sem",
    "data/groups_with_signal",
    "rollout/staleness_max",
    "actor/kl",
    "time/step_s",
)


def actor_groups(cfg: DictConfig) -> dict[str, tuple[int, DictConfig]]:
    """The GRPO run's actor groups: name → (actor count, node with num_cpus, num_gpus,
    resources and label_selector).

    Rollout, generator and judge share one recipe shape: `component` (what each actor
    builds), `num_actors`, `num_cpus`, `num_gpus`, and the custom Ray `resources` and node
    `label_selector` that place the group on a node type; the trainer's ranks are `world_size`.
    """
    return {
        "rollout": (cfg.rollout.num_actors, cfg.rollout),
        "generator": (cfg.generator.num_actors, cfg.generator),
        "judge": (cfg.judge.num_actors, cfg.judge),
        "trainer": (cfg.trainer.world_size, cfg.trainer),
    }


def start_actors(cfg: DictConfig) -> Actors:
    rollout, generator, judge = cfg.rollout, cfg.generator, cfg.judge
    return Actors(
        workers=RolloutWorkers(
            plain(rollout.component),
            num_actors=rollout.num_actors,
            num_cpus=rollout.num_cpus,
            num_gpus=rollout.num_gpus,
            resources=plain(rollout.resources),
            label_selector=plain(rollout.label_selector),
            call_timeout_s=rollout.call_timeout_s,
            max_restarts=cfg.fault_tolerance.max_restarts,
            max_task_retries=cfg.fault_tolerance.max_task_retries,
            restart_timeout_s=cfg.fault_tolerance.restart_timeout_s,
        ),
        generators=GeneratorPool(
            plain(generator.component),
            num_actors=generator.num_actors,
            num_cpus=generator.num_cpus,
            num_gpus=generator.num_gpus,
            resources=plain(generator.resources),
            label_selector=plain(generator.label_selector),
            max_batch_size=generator.max_batch_size,
            max_wait_s=generator.max_wait_s,
            call_timeout_s=generator.call_timeout_s,
            max_restarts=cfg.fault_tolerance.max_restarts,
            max_task_retries=cfg.fault_tolerance.max_task_retries,
            restart_timeout_s=cfg.fault_tolerance.restart_timeout_s,
        ),
        judges=JudgePool(
            plain(judge.component),
            num_actors=judge.num_actors,
            num_cpus=judge.num_cpus,
            num_gpus=judge.num_gpus,
            resources=plain(judge.resources),
            label_selector=plain(judge.label_selector),
            call_timeout_s=judge.call_timeout_s,
            max_restarts=cfg.fault_tolerance.max_restarts,
            max_task_retries=cfg.fault_tolerance.max_task_retries,
            restart_timeout_s=cfg.fault_tolerance.restart_timeout_s,
        ),
        trainer=TrainerGroup(cfg.critic.model_path, plain(cfg.trainer)),
    )


def step_settings(cfg: DictConfig, reward_fn: RewardFn) -> StepSettings:
    """The step's settings from the recipe; refinements are re-rendered exactly when the reward
    reads them (derived, not a recipe key: a recipe that skipped the renders its reward reads
    would fail at the first failed step, and one that made renders it ignores would waste them).

    Also checks the step's numbers that no constructor checks before the actors start
    (`algorithm.max_staleness` among them), naming the recipe key."""
    algorithm = cfg.algorithm
    oversample = algorithm.dynamic_sampling.oversample
    for key, value, least in (
        ("algorithm.max_staleness", algorithm.max_staleness, 0),
        ("rollout.chunk_records", cfg.rollout.chunk_records, 0),
        ("algorithm.dynamic_sampling.oversample", oversample, 1.0),
    ):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= least):
            raise ValueError(f"{key} must be a number >= {least}, got {value!r}")
    return StepSettings(
        sampling=SamplingParams(**plain(cfg.rollout.sampling)),
        chunk_records=cfg.rollout.chunk_records,
        render_refinements=needs_rerender(reward_fn),
        render_seed=algorithm.render_seed,
        render_retries=algorithm.render_retries,
        skip_zero_variance_groups=algorithm.skip_zero_variance_groups,
        norm_adv_by_std=algorithm.norm_adv_by_std,
        epsilon=algorithm.epsilon,
        train_groups=cfg.data.batch_size if oversample > 1 else None,
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
    drawn = records_per_step(cfg.data.batch_size, cfg.algorithm.dynamic_sampling.oversample)
    sampler = BatchSampler(len(records), drawn, seed=cfg.seed)
    connect_ray(cfg.cluster)
    check_resources(actor_groups(cfg))
    actors = start_actors(cfg)
    run = GRPORun(actors, template, reward_fn, settings, cfg.seed)
    start, log, batches = 0, None, None
    faults = dict.fromkeys(("restarts", "steps_redone", "recovery_s"), 0.0)
    try:
        checkpoint = resume_from(cfg, checkpoints)
        if checkpoint is not None:
            start = load_step(actors.trainer, checkpoint, sampler)
            sync_weights(actors.trainer, actors.workers)
            print(f"[train] resumed from {checkpoint} at step {start}")
        log = open_metrics(out, start)
        # --- loop ---
        first_state = sampler.state()
        sampler_before: dict[int, dict[str, int]] = {}  # step → sampler state before its batch

        def draw(step: int) -> list[CriticSample]:
            sampler_before[step] = sampler.state()
            return [records[i] for i in sampler.next_batch()]

        def recover(failure: TrainerFailed, failed_step: int) -> int:
            """A new trainer group from the last checkpoint (or the start); returns its step."""
            nonlocal log
            faults["restarts"] += 1
            if faults["restarts"] > cfg.fault_tolerance.max_trainer_restarts:
                raise RuntimeError(
                    f"the trainer failed again at step {failed_step} after "
                    f"fault_tolerance.max_trainer_restarts="
                    f"{cfg.fault_tolerance.max_trainer_restarts} rebuilds"
                ) from failure
            began = time.perf_counter()
            actors.trainer.kill()
            actors.trainer = TrainerGroup(cfg.critic.model_path, plain(cfg.trainer))
            resumed = start
            if saved is not None:
                resumed = load_step(actors.trainer, saved, sampler)
            else:
                sampler.load_state(first_state)
            sync_weights(actors.trainer, actors.workers)
            sampler_before.clear()
            faults["steps_redone"] += failed_step - 1 - resumed
            faults["recovery_s"] += time.perf_counter() - began
            log.close()
            log = open_metrics(out, resumed)
            print(
                f"[train] {failure}; trainer rebuilt from {saved or 'the start'} in "
                f"{time.perf_counter() - began:.1f} s: steps {resumed + 1}..{failed_step} again",
                flush=True,
            )
            return resumed

        step, saved = start, checkpoint
        while step < cfg.total_steps:
            steps = range(step + 1, cfg.total_steps + 1)
            batches = scored_batches(run, steps, cfg.algorithm.max_staleness, draw)
            step_end = time.perf_counter()
            try:
                for step, scored, waited in batches:
                    views = cfg.logging.sample_every and step % cfg.logging.sample_every == 0
                    num_views = cfg.logging.num_samples if views else 0
                    result = finish_step(run, scored, started=step_end, num_views=num_views)
                    step_end = time.perf_counter()
                    result.metrics["time/wait_for_batch_s"] = waited
                    result.metrics |= {f"fault/trainer_{k}": v for k, v in faults.items()}
                    record(out, log, step, result.metrics)
                    log.samples(step, result.views)
                    line = progress_line(step, cfg.total_steps, result.metrics, CONSOLE_KEYS)
                    print(line, flush=True)
                    if step % cfg.checkpoint_every == 0 or step == cfg.total_steps:
                        # Batches drawn ahead are not trained yet: a resumed run redraws them.
                        state = sampler_before.get(step + 1, sampler.state())
                        saved = save_step(actors.trainer, checkpoints, step, state)
                    del sampler_before[step]
            except TrainerFailed as failure:
                batches.close()
                step = recover(failure, step)
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
