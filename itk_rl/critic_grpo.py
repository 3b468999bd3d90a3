"""One critic GRPO step as a flat list of named phases (driven by `itk_rl.train`).

    sample batch → rollout (G responses per record, streamed) → parse → rewards (re-render
    refined prompts and judge them; `itk_rl.critic_grpo_rewards`) → advantages (verl's GRPO
    estimator) → policy update (FSDP) → weight sync to the rollout workers

The first half (`rollout_and_score`) streams: the rollout workers hand back each record's G
responses as soon as its chunk is sampled (`rollout.chunk_records`), and the record's
responses are parsed and rewarded at once, while later records are still being sampled. The
second half (`finish_step`) updates the policy and syncs the weights; `itk_rl.train` may run
the next batches' first halves meanwhile (bounded staleness).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import ray

from itk_rl.critic_grpo_rewards import Response, RewardScorer, reward_metrics
from itk_rl.formats import build_critic_messages, parse_critic_output
from itk_rl.formats.records import CriticSample
from itk_rl.formats.templates import PromptTemplate
from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams
from itk_rl.interfaces.reward import RewardFn
from itk_rl.metrics import SampleView
from itk_rl.rewards.judge_pool import JudgePool
from itk_rl.rollout.pool import GeneratorPool
from itk_rl.rollout.workers import RolloutWorkers, Sampled
from itk_rl.trainer.batch import TrainSample
from itk_rl.trainer.group import TrainerGroup
from itk_rl.trainer.grpo import grpo_advantages, in_zero_variance_group


@dataclass(frozen=True)
class StepSettings:
    """The algorithm's knobs for one step (recipe `algorithm`, `rollout.sampling`)."""

    sampling: SamplingParams
    chunk_records: int = 0  # records per rollout call (0: each worker's shard at once)
    render_refinements: bool = True  # the reward reads re-renders (`train.step_settings`)
    render_seed: int = 0
    render_retries: int = 2
    skip_zero_variance_groups: bool = True
    norm_adv_by_std: bool = True
    epsilon: float = 1e-6
    # dynamic sampling: the groups with reward variance trained per step (data.batch_size), out
    # of the oversampled draw (`records_per_step`); None: off, every drawn group is trained
    train_groups: int | None = None


@dataclass
class Actors:
    """Every actor group of a GRPO run; counts and resources come from the recipe only. The
    trainer may be replaced mid-run (a rebuilt group after a rank died)."""

    workers: RolloutWorkers
    generators: GeneratorPool
    judges: JudgePool
    trainer: TrainerGroup

    def shutdown(self) -> None:
        for group in (self.workers, self.generators, self.judges, self.trainer):
            group.shutdown()


@dataclass
class GRPORun:
    """What every step of a run shares: its actors, prompt template, reward and knobs."""

    actors: Actors
    template: PromptTemplate
    reward_fn: RewardFn
    settings: StepSettings
    seed: int


@dataclass
class ScoredBatch:
    """A batch rolled out and rewarded, waiting for its update: `rollout_and_score`'s result."""

    step: int
    batch: Sequence[CriticSample]
    requests: list[ChatRequest]
    responses: list[Response]  # in record order, a record's responses in sampling order
    timings: dict[str, float]


@dataclass
class StepResult:
    metrics: dict[str, float] = field(default_factory=dict)
    views: list[SampleView] = field(default_factory=list)


def rollout_seed(seed: int, step: int, index: int) -> int:
    """A sampling seed per (run seed, step, record): reproducible, so resumed runs match."""
    return int(np.random.SeedSequence([seed, step, index]).generate_state(1)[0])


def rollout(
    workers: RolloutWorkers,
    template: PromptTemplate,
    batch: Sequence[CriticSample],
    settings: StepSettings,
    seed: int,
    step: int,
) -> tuple[list[ChatRequest], list[Future[Sampled]]]:
    """Start sampling G = `sampling.n` responses per record; one future per record, settled
    as soon as its chunk of `chunk_records` records is sampled."""
    requests = [
        ChatRequest(
            messages=tuple(build_critic_messages(template, s.origin_prompt, s.rewritten_prompt)),
            images=(s.origin_image, s.edited_image),
            seed=rollout_seed(seed, step, index),
        )
        for index, s in enumerate(batch)
    ]
    return requests, workers.submit(requests, settings.sampling, settings.chunk_records)


def parse_responses(record: int, sampled: Sampled) -> list[Response]:
    """A record's sampled completions, parsed (a bad output never raises here)."""
    return [
        Response(record, completion, parse_critic_output(completion.text), sampled.weights_version)
        for completion in sampled.completions
    ]


def rollout_and_score(run: GRPORun, step: int, batch: Sequence[CriticSample]) -> ScoredBatch:
    """The step's first half, streamed: each record's responses are parsed and go to their
    rewards as soon as that record is sampled. Timed: `time/rollout_s` until the last record
    is sampled, `time/rewards_tail_s` from then until the last reward."""
    start, actors, settings = time.perf_counter(), run.actors, run.settings
    requests, futures = rollout(actors.workers, run.template, batch, settings, run.seed, step)
    records = {future: record for record, future in enumerate(futures)}
    by_record: dict[int, list[Response]] = {}
    scorer = RewardScorer(actors.generators, actors.judges, run.reward_fn, batch, settings, step)
    with scorer:
        for future in as_completed(futures):
            record = records[future]
            by_record[record] = parse_responses(record, future.result())
            scorer.add(by_record[record])
        sampled = time.perf_counter()
    timings = {
        "time/rollout_s": sampled - start,
        "time/rewards_tail_s": time.perf_counter() - sampled,
    }
    responses = [r for record in range(len(batch)) for r in by_record[record]]
    return ScoredBatch(step, batch, requests, responses, timings)


def train_samples(
    requests: Sequence[ChatRequest], responses: Sequence[Response]
) -> list[TrainSample]:
    out = []
    for response in responses:
        if response.completion.token_ids is None:
            raise ValueError(
                "the rollout engine returned no token ids; GRPO needs an engine that does "
                "(rollout.component: TransformersEngine or VLLMEngine)"
            )
        request = requests[response.record]
        out.append(TrainSample(request.messages, response.completion.token_ids, request.images))
    return out


def records_per_step(batch_size: int, oversample: float) -> int:
    """Records drawn per step: ceil(batch_size × oversample), the product rounded to 9 decimals
    first (10 × 1.1 is 11.000000000000002 in floating point: 11 records, not 12)."""
    return math.ceil(round(batch_size * oversample, 9))


def select_groups(
    num_records: int, responses: Sequence[Response], train_groups: int | None
) -> tuple[list[Response], dict[str, float]]:
    """DAPO's dynamic sampling (Yu et al. 2025): the responses of the first `train_groups`
    records, in record order, whose rewards vary; all responses when `train_groups` is None.

    DAPO samples again until the batch is full of groups with signal. Here the step draws a
    fixed ceil(batch_size × oversample) records instead (`records_per_step`), on the caller's
    thread in step order like any batch: the data order stays deterministic, one draw advances
    the sampler by exactly the records drawn (a checkpoint's sampler position stays right, also
    with steps drawn ahead), and a step's rollout and rewards are one streamed phase that can
    run ahead. The price: a step may find fewer than `train_groups` groups with signal; it then
    trains on those it has. Counts (`data/groups_*`): drawn = with_signal + filtered (rewards
    all equal, a group of one or none rewarded included); unused: with signal, past
    `train_groups`.
    """
    scored = [r for r in responses if r.reward is not None]
    records = np.array([r.record for r in scored], dtype=int)
    flat = in_zero_variance_group(np.array([r.reward.total for r in scored]), records)
    with_signal = sorted(set(records[~flat].tolist()))
    kept = with_signal if train_groups is None else with_signal[:train_groups]
    metrics = {
        "data/groups_drawn": float(num_records),
        "data/groups_with_signal": float(len(with_signal)),
        "data/groups_filtered": float(num_records - len(with_signal)),
        "data/groups_unused": float(len(with_signal) - len(kept)),
    }
    if train_groups is None:
        return list(responses), metrics
    trained = set(kept)
    return [r for r in responses if r.record in trained], metrics


def update_policy(
    trainer: TrainerGroup,
    requests: Sequence[ChatRequest],
    responses: Sequence[Response],
    settings: StepSettings,
) -> dict[str, float]:
    """Advantages over the rewarded responses, then one PPO update on those that carry signal.

    The trainer's own log-probs of the sampled tokens, recomputed now, are the PPO ratio's old
    (proximal) policy: they compare one model's numbers, whatever kernels, dtype or blocked
    tokens the rollout engine used, and however many updates old the sampling weights were.
    The engine's log-probs (the behaviour policy) go along, for the trainer's rollout
    correction (`trainer.rollout_is`, `rollout_rs`) when the recipe turns it on.
    """
    scored = [r for r in responses if r.reward is not None]
    metrics: dict[str, float] = {"data/responses_rewarded": float(len(scored))}
    if not scored:
        return metrics | {"data/update_skipped": 1.0}
    advantages = grpo_advantages(
        np.array([r.reward.total for r in scored]),
        np.array([r.record for r in scored]),
        epsilon=settings.epsilon,
        norm_by_std=settings.norm_adv_by_std,
        skip_zero_variance_groups=settings.skip_zero_variance_groups,
    )
    metrics["data/groups"] = float(advantages.num_groups)
    metrics["data/zero_variance_groups"] = float(advantages.num_zero_variance_groups)
    keep = np.flatnonzero(advantages.keep)
    metrics["data/responses_trained"] = float(len(keep))
    if len(keep):
        metrics["reward/mean_trained"] = float(np.mean([scored[i].reward.total for i in keep]))
    if len(keep) < trainer.world_size:
        return metrics | {"data/update_skipped": 1.0}
    samples = train_samples(requests, [scored[i] for i in keep])
    completions = [scored[i].completion for i in keep]
    old_logprobs = trainer.compute_logprobs(samples)
    metrics |= logprob_gap(completions, old_logprobs)
    behaviour = None
    if all(c.logprobs is not None for c in completions):
        behaviour = [np.asarray(c.logprobs, dtype=np.float32) for c in completions]
    metrics |= trainer.update(
        samples, advantages.advantages[keep], old_logprobs, rollout_logprobs=behaviour
    )
    return metrics | {"data/update_skipped": 0.0}


def logprob_gap(completions: Sequence[Completion], trainer_logprobs: Sequence[np.ndarray]) -> dict:
    """How far the rollout engine's log-probs of the sampled tokens are from the trainer's for
    the same weights: `rollout/logprob_gap_mean` and `_max` (absolute, per token). The gap is
    what an importance correction would have to absorb (other kernels, dtype); none when the
    engine reports no log-probs."""
    if any(c.logprobs is None for c in completions) or not completions:
        return {}
    gaps = np.abs(
        np.concatenate([np.asarray(c.logprobs) for c in completions])
        - np.concatenate(trainer_logprobs)
    )
    return {
        "rollout/logprob_gap_mean": float(gaps.mean()),
        "rollout/logprob_gap_max": float(gaps.max()),
    }


def sync_weights(trainer: TrainerGroup, workers: RolloutWorkers) -> int:
    """Gather the full weights once, put them in the object store once, load on every worker."""
    state_ref = ray.put(trainer.state_dict_for_sync())
    return workers.update_weights(state_ref)


def sample_views(
    batch: Sequence[CriticSample], responses: Sequence[Response], count: int
) -> list[SampleView]:
    """The first response of the first `count` records, for TensorBoard."""
    firsts = {}
    for response in responses:
        firsts.setdefault(response.record, response)
    views = []
    for record, response in list(firsts.items())[:count]:
        sample = batch[record]
        label = "success" if sample.evaluation.success else "failed"
        reward = f"{response.reward.total:.3f}" if response.reward else "none"
        text = (
            f"instruction: {sample.origin_prompt}\nlabel: {label}  reward: {reward}\n"
            f"{response.completion.text}"
        )
        views.append(SampleView(sample.origin_image, sample.edited_image, text))
    return views


def staleness_metrics(responses: Sequence[Response], current_version: int) -> dict[str, float]:
    """How many updates old the weights that sampled each response are, at its update:
    `rollout/staleness_mean` and `_max` (0 on-policy; at most `algorithm.max_staleness`)."""
    ages = [current_version - r.weights_version for r in responses] or [0]
    return {
        "rollout/staleness_mean": float(np.mean(ages)),
        "rollout/staleness_max": float(max(ages)),
    }


def finish_step(
    run: GRPORun, scored: ScoredBatch, *, started: float, num_views: int = 0
) -> StepResult:
    """The step's second half: the groups to train (`select_groups`), the update on them, the
    new weights synced, and the metrics (the reward metrics over every group drawn).

    `started` is the `time.perf_counter()` at which this step's wall time began (the end of the
    previous step); the pools' busy fractions, time-outs and re-sent items cover the time since
    they were last read, the rollout workers' faults the whole run.
    """
    actors, settings = run.actors, run.settings
    metrics = reward_metrics(scored.batch, scored.responses) | scored.timings
    metrics |= staleness_metrics(scored.responses, actors.workers.weights_version)
    begin = time.perf_counter()
    trained, selection = select_groups(len(scored.batch), scored.responses, settings.train_groups)
    metrics |= selection | update_policy(actors.trainer, scored.requests, trained, settings)
    synced = time.perf_counter()
    sync_weights(actors.trainer, actors.workers)
    end = time.perf_counter()
    metrics["time/update_s"] = synced - begin
    metrics["time/weight_sync_s"] = end - synced
    for name, pool in (("generator", actors.generators), ("judge", actors.judges)):
        stats = pool.stats()
        busy = [actor["busy_fraction"] for actor in stats["actors"]]
        metrics[f"perf/{name}_busy_fraction"] = float(np.mean(busy)) if busy else 0.0
        metrics[f"perf/{name}_items_per_s"] = stats["served"] / stats["wall_s"]
        metrics[f"fault/{name}_timeouts"] = float(stats["timeouts"])
        metrics[f"fault/{name}_retried"] = float(stats["retried"])
        pool.reset_stats()
    metrics |= {f"fault/rollout_{k}": float(v) for k, v in actors.workers.faults.items()}
    metrics["time/step_s"] = end - started
    metrics["perf/samples_per_s"] = len(scored.responses) / metrics["time/step_s"]
    return StepResult(metrics, sample_views(scored.batch, scored.responses, num_views))


def scored_batches(
    run: GRPORun, steps: range, max_staleness: int, draw: Callable[[int], Sequence[CriticSample]]
) -> Iterator[tuple[int, ScoredBatch, float]]:
    """Yields `(step, its scored batch, seconds waited for it)` for each step, in order, while
    the batches of the next `max_staleness` steps are rolled out and scored on background
    threads.

    `draw(step)` runs on the caller's thread, in step order (the data order never depends on
    which thread finishes first); `rollout_and_score` on a background thread. A step's batch
    is started when the previous step's weights are synced (the caller does that before
    asking for the next item), so it samples weights at most `max_staleness` updates older
    than the ones it trains. Close the generator after the actors are shut down: what is
    still in flight then fails fast, and closing waits for it.
    """
    if max_staleness < 0:
        raise ValueError(f"algorithm.max_staleness must be >= 0, got {max_staleness}")
    in_flight: deque[Future[ScoredBatch]] = deque()
    with ThreadPoolExecutor(max_staleness + 1, thread_name_prefix="ahead") as threads:
        try:
            drawn = steps.start - 1
            for step in steps:
                while drawn < min(step + max_staleness, steps.stop - 1):
                    drawn += 1
                    in_flight.append(threads.submit(rollout_and_score, run, drawn, draw(drawn)))
                waited = time.perf_counter()
                scored = in_flight.popleft().result()
                yield step, scored, time.perf_counter() - waited
        finally:
            for future in in_flight:
                future.cancel()


def grpo_step(
    run: GRPORun, step: int, batch: Sequence[CriticSample], num_views: int = 0
) -> StepResult:
    """One on-policy step: `rollout_and_score`, then `finish_step`."""
    started = time.perf_counter()
    for pool in (run.actors.generators, run.actors.judges):
        pool.reset_stats()
    scored = rollout_and_score(run, step, batch)
    return finish_step(run, scored, started=started, num_views=num_views)
