"""One critic GRPO step as a flat list of named phases (driven by `itk_rl.train`).

    sample batch → rollout (G responses per record, streamed) → parse → rewards (re-render
    refined prompts and judge them) → advantages (verl's GRPO estimator) → policy update
    (FSDP) → weight sync to the rollout workers

The first half (`rollout_and_score`) streams: the rollout workers hand back each record's G
responses as soon as its chunk is sampled (`rollout.chunk_records`), and the record's
responses are parsed and rewarded at once, while later records are still being sampled.
Format and accuracy need only the parsed text; only the step-wise reward waits for a render,
and each render goes to a judge the moment it is done, and its reward is computed the moment
the judge answers (one thread per response chains the futures), while the pools batch
whatever is in flight. The second half (`finish_step`) updates the policy and syncs the
weights; `itk_rl.train` may run the next batches' first halves meanwhile (bounded staleness).

A render or judge call that still fails after `render_retries` further tries leaves that
response out of the update and is counted; no reward is ever made up. Every failed try is
counted by kind (`reward/failures/<ExceptionName>`) and each kind is logged once per step with
its message, so a broken generator or judge shows its cause, not only a count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayTaskError

from itk_rl.formats import CriticVerdict, ParseResult, build_critic_messages, parse_critic_output
from itk_rl.formats.records import CriticSample
from itk_rl.formats.score import JudgeScore
from itk_rl.formats.templates import PromptTemplate
from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams
from itk_rl.interfaces.generator import RenderRequest
from itk_rl.interfaces.reward import RewardFn, RewardInputs, RewardOutput
from itk_rl.metrics import SampleView
from itk_rl.rewards.critic import needs_render, refined_prompt_to_render
from itk_rl.rewards.judge_pool import JudgePool
from itk_rl.rollout.pool import GeneratorPool
from itk_rl.rollout.workers import RolloutWorkers, Sampled
from itk_rl.trainer.batch import TrainSample
from itk_rl.trainer.group import TrainerGroup
from itk_rl.trainer.grpo import grpo_advantages

log = logging.getLogger(__name__)
UNREADABLE_JUDGE_ANSWER = "unreadable_judge_answer"
"""The failure kind of a judge call that answered but whose answer could not be read."""


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
class Response:
    """One sampled critic response and everything computed about it."""

    record: int  # index into the step's batch: responses of one record form a GRPO group
    completion: Completion
    parsed: ParseResult[CriticVerdict]
    weights_version: int = 0  # the policy weights that sampled it (updates since the start)
    rerender: JudgeScore | None = None
    render_failed: bool = False
    failures: list[str] = field(default_factory=list)  # the kind of each failed render/judge try
    reward: RewardOutput | None = None


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


def render_seed_for(seed: int, step: int, record: int) -> int:
    """The re-render seed of a record's group: shared by its responses, so their rewards
    differ by their prompts only, but new for every record and step, so over training the
    reward meets the generator's chance (smudges, misrender draws) as the pipeline's attempts
    do. A seed fixed for all records showed every re-render the same draw: at the testbed's
    seed 0 a prompt in core words never got a smudge and one with a synonym was always
    misrendered; over 200 seeds, 17 % and 64 % (2026-11-23)."""
    return int(np.random.SeedSequence([seed, step, record, 1]).generate_state(1)[0])


def rerender_inputs(
    sample: CriticSample, prompt: str, seed: int
) -> tuple[RenderRequest, np.ndarray | None]:
    """The re-render of `prompt` for `sample`'s step, and the before-image its judge compares
    with: from nothing and judged as text-to-image where the record says `text_to_image`, else
    an edit of the before-image. The record says it; pixels cannot (an edit may start from a
    white image, and step 1's canvas need not be white)."""
    if sample.text_to_image:
        return RenderRequest(prompt, seed=seed), None
    return RenderRequest(prompt, (sample.origin_image,), seed=seed), sample.origin_image


def failure_kind(error: BaseException) -> tuple[str, str]:
    """The kind (exception class name) and message of a failed render or judge call; an error
    raised inside an actor arrives wrapped in Ray's RayTaskError, and its cause is what broke."""
    if isinstance(error, RayTaskError) and error.cause is not None:
        error = error.cause
    return type(error).__name__, str(error)


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


class RewardScorer:
    """Rewards responses as they are added, each as soon as its inputs exist.

    A response to a failed step first has its refinement re-rendered from the before-image (from
    nothing if the record is `text_to_image`) and judged against the *original* prompt, in its
    own thread (render future → judge future → reward), while the pools batch whatever is in
    flight; responses that need no render are rewarded at once on the caller's thread. The
    responses of one record render with one seed (`render_seed_for`), so within a group only
    the prompt differs. Leaving the `with` block waits for every reward.
    """

    def __init__(
        self,
        generators: GeneratorPool,
        judges: JudgePool,
        reward_fn: RewardFn,
        batch: Sequence[CriticSample],
        settings: StepSettings,
        step: int,
    ) -> None:
        self.generators, self.judges, self.reward_fn = generators, judges, reward_fn
        self.batch, self.settings, self.step = batch, settings, step
        self._logged: set[str] = set()
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(max_workers=64, thread_name_prefix=f"rewards-{step}")
        self._pending: list[Future[None]] = []

    def add(self, responses: Sequence[Response]) -> None:
        for response in responses:
            if self.settings.render_refinements and needs_render(self.batch[response.record]):
                self._pending.append(self._threads.submit(self._render_judge_reward, response))
            else:
                self._reward(response)

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._threads.shutdown(wait=True)

    def _failed(self, response: Response, kind: str, message: str) -> None:
        """Count a failed try on its response; log its kind the first time this step."""
        response.failures.append(kind)
        with self._lock:
            first = kind not in self._logged
            self._logged.add(kind)
        if first:
            log.warning(
                "step %d: a re-render or its judging failed with %s: %s (each failure of this "
                "kind in the step is counted in reward/failures/%s, this line is logged once)",
                self.step,
                kind,
                message,
                kind,
            )

    def _reward(self, response: Response) -> None:
        inputs = RewardInputs(
            self.batch[response.record],
            response.completion.text,
            response.parsed,
            response.rerender,
        )
        response.reward = self.reward_fn(inputs)

    def _render_judge_reward(self, response: Response) -> None:
        sample = self.batch[response.record]
        prompt = refined_prompt_to_render(sample, response.parsed)
        seed = render_seed_for(self.settings.render_seed, self.step, response.record)
        request, before = rerender_inputs(sample, prompt, seed)
        for _ in range(self.settings.render_retries + 1):
            try:
                (image,) = [f.result() for f in self.generators.submit([request])]
                judged = self.judges.submit(sample.origin_prompt, image, before).result()
            except Exception as error:  # a crashed actor, a generator or judge error: try again
                self._failed(response, *failure_kind(error))
                continue
            if judged is not None:
                response.rerender = judged
                self._reward(response)
                return
            self._failed(response, UNREADABLE_JUDGE_ANSWER, "the judge's answer could not be read")
        response.render_failed = True


def score_responses(
    generators: GeneratorPool,
    judges: JudgePool,
    reward_fn: RewardFn,
    batch: Sequence[CriticSample],
    responses: Sequence[Response],
    settings: StepSettings,
    step: int,
) -> None:
    """Every response's reward (`RewardScorer` over responses that are all sampled already)."""
    with RewardScorer(generators, judges, reward_fn, batch, settings, step) as scorer:
        scorer.add(responses)


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


def reward_metrics(batch: Sequence[CriticSample], responses: Sequence[Response]) -> dict[str, Any]:
    """Means of every reward component, verdict accuracy, format rate and failure counts:
    `reward/render_or_judge_failures` the responses left out after every try failed,
    `reward/failures/<kind>` the failed tries of each kind (retried ones included)."""
    rewarded = [r for r in responses if r.reward is not None]
    metrics: dict[str, float] = {
        "reward/format_valid_rate": float(np.mean([r.parsed.format_valid for r in responses])),
        "reward/unparseable_rate": float(np.mean([r.parsed.value is None for r in responses])),
        "reward/render_or_judge_failures": float(sum(r.render_failed for r in responses)),
    }
    for kind, count in sorted(Counter(k for r in responses for k in r.failures).items()):
        metrics[f"reward/failures/{kind}"] = float(count)
    verdicts = [
        r.parsed.value.success == batch[r.record].evaluation.success
        for r in responses
        if r.parsed.value is not None
    ]
    metrics["reward/verdict_accuracy"] = float(np.mean(verdicts)) if verdicts else 0.0
    if rewarded:
        metrics["reward/total"] = float(np.mean([r.reward.total for r in rewarded]))
        for name in sorted({k for r in rewarded for k in r.reward.components}):
            values = [r.reward.components[name] for r in rewarded if name in r.reward.components]
            metrics[f"reward/{name}"] = float(np.mean(values))
    return metrics


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
    """The step's second half: update on a scored batch, sync the new weights, and the metrics.

    `started` is the `time.perf_counter()` at which this step's wall time began (the end of the
    previous step); the pools' busy fractions, time-outs and re-sent items cover the time since
    they were last read, the rollout workers' faults the whole run.
    """
    actors, settings = run.actors, run.settings
    metrics = reward_metrics(scored.batch, scored.responses) | scored.timings
    metrics |= staleness_metrics(scored.responses, actors.workers.weights_version)
    begin = time.perf_counter()
    metrics |= update_policy(actors.trainer, scored.requests, scored.responses, settings)
    synced = time.perf_counter()
    sync_weights(actors.trainer, actors.workers)
    end = time.perf_counter()
    metrics["time/update_s"] = synced - begin
    metrics["time/weight_sync_s"] = end - synced
    for name, pool in (("generator", actors.generators), ("judge", actors.judges)):
        stats = pool.stats()
        busy = [actor["busy_fraction"] for actor in stats["actors"]]
        metrics[f"perf/{name}_busy_fraction"] = float(np.mean(busy)) if busy else 0.0
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
