"""The rewards phase of a critic GRPO step (`itk_rl.critic_grpo`): each sampled response's
reward, as soon as its inputs exist, and the step's reward metrics.

Format and accuracy need only the parsed text; only the step-wise reward waits for a render,
and each render goes to a judge the moment it is done, and its reward is computed the moment
the judge answers (one thread per response chains the futures), while the pools batch
whatever is in flight.

A render or judge call that still fails after `render_retries` further tries leaves that
response out of the update and is counted; no reward is ever made up. A pool with no actor
left (`ActorGroupLost`) stops the step instead. Every failed try is counted by kind
(`reward/failures/<ExceptionName>`) and each kind is logged once per step with its message, so
a broken generator or judge shows its cause, not only a count.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.exceptions import RayTaskError

from itk_rl.formats import CriticVerdict, ParseResult
from itk_rl.formats.records import CriticSample
from itk_rl.formats.score import JudgeScore
from itk_rl.interfaces.engine import Completion
from itk_rl.interfaces.generator import RenderRequest
from itk_rl.interfaces.reward import RewardFn, RewardInputs, RewardOutput
from itk_rl.rewards.critic import needs_render, refined_prompt_to_render
from itk_rl.rewards.judge_pool import JudgePool
from itk_rl.rollout.actors import ActorGroupLost
from itk_rl.rollout.pool import GeneratorPool

if TYPE_CHECKING:
    from itk_rl.critic_grpo import StepSettings

log = logging.getLogger(__name__)
UNREADABLE_JUDGE_ANSWER = "unreadable_judge_answer"
"""The failure kind of a judge call that answered but whose answer could not be read."""


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
            except ActorGroupLost:
                raise  # no actor of the pool is left: the job stops, naming what is missing
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
