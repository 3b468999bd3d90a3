"""One critic GRPO step as a flat list of named phases (driven by `itk_rl.train`).

    sample batch → rollout (G responses per record) → parse → rewards (re-render refined
    prompts and judge them, streaming) → advantages (verl's GRPO estimator) → policy update
    (FSDP) → weight sync to the rollout workers

Format and accuracy need only the parsed text; only the step-wise reward waits for a render,
and each render goes to a judge the moment it is done, and its reward is computed the moment
the judge answers (one thread per response chains the futures), while the pools batch
whatever is in flight. A render or judge call that still fails after `render_retries` further
tries leaves that response out of the update and is counted; no reward is ever made up. Every
failed try is counted by kind (`reward/failures/<ExceptionName>`) and each kind is logged once
per step with its message, so a broken generator or judge shows its cause, not only a count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
from itk_rl.rollout.workers import RolloutWorkers
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
    render_refinements: bool = True  # the reward reads re-renders (`train.step_settings`)
    render_seed: int = 0
    render_retries: int = 2
    skip_zero_variance_groups: bool = True
    norm_adv_by_std: bool = True
    epsilon: float = 1e-6


@dataclass
class Response:
    """One sampled critic response and everything computed about it."""

    record: int  # index into the step's batch: responses of one record form a GRPO group
    completion: Completion
    parsed: ParseResult[CriticVerdict]
    rerender: JudgeScore | None = None
    render_failed: bool = False
    failures: list[str] = field(default_factory=list)  # the kind of each failed render/judge try
    reward: RewardOutput | None = None


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
    sampling: SamplingParams,
    seed: int,
    step: int,
) -> tuple[list[ChatRequest], list[Response]]:
    """G = `sampling.n` responses per record, parsed (a bad output never raises here)."""
    requests = [
        ChatRequest(
            messages=tuple(build_critic_messages(template, s.origin_prompt, s.rewritten_prompt)),
            images=(s.origin_image, s.edited_image),
            seed=rollout_seed(seed, step, index),
        )
        for index, s in enumerate(batch)
    ]
    groups = workers.generate(requests, sampling)
    responses = [
        Response(index, completion, parse_critic_output(completion.text))
        for index, group in enumerate(groups)
        for completion in group
    ]
    return requests, responses


def score_responses(
    generators: GeneratorPool,
    judges: JudgePool,
    reward_fn: RewardFn,
    batch: Sequence[CriticSample],
    responses: Sequence[Response],
    settings: StepSettings,
    step: int,
) -> None:
    """Every response's reward, each as soon as its inputs exist.

    A response to a failed step first has its refinement re-rendered from the before-image (from
    nothing if the record is `text_to_image`) and judged against the *original* prompt, in its
    own thread (render future → judge future → reward), while the pools batch whatever is in
    flight; responses that need no render are rewarded meanwhile on this thread. The responses
    of one record render with one seed (`render_seed_for`), so within a group only the prompt
    differs.
    """
    render = [r for r in responses if settings.render_refinements and needs_render(batch[r.record])]
    rendering = {id(r) for r in render}
    logged: set[str] = set()
    lock = threading.Lock()

    def failed(response: Response, kind: str, message: str) -> None:
        """Count a failed try on its response; log its kind the first time this step."""
        response.failures.append(kind)
        with lock:
            first = kind not in logged
            logged.add(kind)
        if first:
            log.warning(
                "step %d: a re-render or its judging failed with %s: %s (each failure of this "
                "kind in the step is counted in reward/failures/%s, this line is logged once)",
                step,
                kind,
                message,
                kind,
            )

    def reward(response: Response) -> None:
        inputs = RewardInputs(
            batch[response.record], response.completion.text, response.parsed, response.rerender
        )
        response.reward = reward_fn(inputs)

    def render_judge_reward(response: Response) -> None:
        sample = batch[response.record]
        prompt = refined_prompt_to_render(sample, response.parsed)
        seed = render_seed_for(settings.render_seed, step, response.record)
        request, before = rerender_inputs(sample, prompt, seed)
        for _ in range(settings.render_retries + 1):
            try:
                (image,) = [f.result() for f in generators.submit([request])]
                judged = judges.submit(sample.origin_prompt, image, before).result()
            except Exception as error:  # a crashed actor, a generator or judge error: try again
                failed(response, *failure_kind(error))
                continue
            if judged is not None:
                response.rerender = judged
                reward(response)
                return
            failed(response, UNREADABLE_JUDGE_ANSWER, "the judge's answer could not be read")
        response.render_failed = True

    with ThreadPoolExecutor(max_workers=max(1, min(64, len(render)))) as threads:
        pending = [threads.submit(render_judge_reward, r) for r in render]
        for response in responses:
            if id(response) not in rendering:
                reward(response)
        for future in pending:
            future.result()


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
    """Advantages over the rewarded responses, then one PPO update on those that carry signal."""
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
    # Old log-probs from the trainer itself: the PPO ratio then compares one model's numbers
    # (the rollout engine may differ in kernels, dtype or blocked tokens).
    old_logprobs = trainer.compute_logprobs(samples)
    metrics |= logprob_gap([scored[i].completion for i in keep], old_logprobs)
    metrics |= trainer.update(samples, advantages.advantages[keep], old_logprobs)
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


def grpo_step(
    *,
    step: int,
    seed: int,
    batch: Sequence[CriticSample],
    template: PromptTemplate,
    workers: RolloutWorkers,
    generators: GeneratorPool,
    judges: JudgePool,
    trainer: TrainerGroup,
    reward_fn: RewardFn,
    settings: StepSettings,
    num_views: int = 0,
) -> StepResult:
    """Run the phases in order, timing each one."""
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        value = fn(*args)
        timings[f"time/{name}_s"] = time.perf_counter() - start
        return value

    generators.reset_stats()
    requests, responses = timed(
        "rollout", rollout, workers, template, batch, settings.sampling, seed, step
    )
    timed(
        "rewards", score_responses, generators, judges, reward_fn, batch, responses, settings, step
    )
    update = timed("update", update_policy, trainer, requests, responses, settings)
    timed("weight_sync", sync_weights, trainer, workers)
    busy = [a["busy_fraction"] for a in generators.stats()["actors"]]
    metrics = reward_metrics(batch, responses) | update | timings
    metrics["perf/generator_busy_fraction"] = float(np.mean(busy)) if busy else 0.0
    metrics["time/step_s"] = sum(timings.values())
    metrics["perf/samples_per_s"] = len(responses) / metrics["time/step_s"]
    return StepResult(metrics, sample_views(batch, responses, num_views))
