"""Latency-modelled components: a GPU-scale GRPO step simulated on a CPU.

Each wrapper holds a real inner component (the testbed generator, the testbed judge, a tiny VLM
engine) and returns exactly its results, so images, verdicts, rewards and log-probs stay real,
while each call lasts as long as a model of the GPU-scale component says: the inner runs, then
the wrapper sleeps for the rest of the modelled service time (a sleep that overshoots on a busy
host is paid back from the next ones). When the inner alone takes longer than the model, nothing
sleeps and the call counts as an overrun in `stats()` (the simulation is then slower than the
cluster it models, and says so).

Service time of one call of `n` items (renders, judgements):

    (per_call_s + per_item_s · n^batch_exponent) · jitter

`batch_exponent` in [0, 1] is the batch efficiency: 1 = no gain from batching, 0 = a batch costs
as much as one item. A power law because it is what two published points determine (the latency
at batch 1 and the throughput at batch B give `batch_exponent = ln(t_B / t_1) / ln B`), it is
concave like measured GPU throughput curves, and a saturating form would need a knee that no
source publishes. The engine's model (`EngineLatencyModel`) counts tokens instead: prefill per
prompt token, and decode as a sequence of steps whose time grows with the rows still running.

`jitter = exp(σ·z − σ²/2)`, `z ~ N(0, 1)`: lognormal with mean 1, so the model's mean is its
jitter-free time. Each wrapper draws from its own stream, seeded by `SeedSequence([seed,
instance])`: the same (seed, instance) gives the same service times; `instance` None takes the
next number of a per-process count, mixed, inside a Ray actor, with the actor's id, so the
actors of one pool (built from one config) jitter independently, as real GPUs do — correlated
jitter would hide the stragglers that make a step slow. Pass `instance` for streams that are
also reproducible across runs.

Calibration from published figures: docs/latency-models.md; the defaults are in
recipes/{generator,judge,engine}/*_modelled.yaml.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import ray

from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams
from itk_rl.interfaces.generator import RenderRequest
from itk_rl.rollout.actors import build_component

_INSTANCES = itertools.count()


def _check_fields(model: LatencyModel | EngineLatencyModel) -> None:
    """Every time is >= 0, batch_exponent in [0, 1], jitter_sigma >= 0; errors name the field."""
    name = type(model).__name__
    for field in fields(model):
        value = getattr(model, field.name)
        if (field.name.endswith("_s") or field.name == "jitter_sigma") and not value >= 0:
            raise ValueError(f"{name}.{field.name} must be >= 0, got {value}")
    exponent = model.batch_exponent
    if not 0 <= exponent <= 1:
        raise ValueError(f"{name}.batch_exponent must be in [0, 1], got {exponent}")


def jitter(sigma: float, rng: np.random.Generator) -> float:
    """A lognormal factor with mean 1 (`sigma` 0: exactly 1, nothing drawn)."""
    if sigma == 0:
        return 1.0
    return math.exp(sigma * rng.standard_normal() - sigma**2 / 2)


def stream(seed: int, *key: int) -> np.random.Generator:
    """The jitter stream of (seed, key...): same arguments, same draws."""
    return np.random.default_rng(np.random.SeedSequence([seed % 2**64, *(k % 2**64 for k in key)]))


@dataclass(frozen=True)
class LatencyModel:
    """Service time of one call of `n` items: `(per_call_s + per_item_s · n^batch_exponent)`
    times a mean-1 lognormal jitter of log-std `jitter_sigma`, drawn from a stream of `seed`."""

    per_call_s: float
    per_item_s: float
    batch_exponent: float = 1.0
    jitter_sigma: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fields(self)

    def mean_seconds(self, num_items: int) -> float:
        """The jitter-free service time (0 items: the per-call part alone)."""
        items = self.per_item_s * num_items**self.batch_exponent if num_items > 0 else 0.0
        return self.per_call_s + items

    def seconds(self, num_items: int, rng: np.random.Generator) -> float:
        return self.mean_seconds(num_items) * jitter(self.jitter_sigma, rng)


@dataclass(frozen=True)
class EngineLatencyModel:
    """Service time of one `VLMEngine.generate` call, from its token counts.

    `per_call_s` + prefill `per_prompt_token_s` per prompt token (once per request: its `n`
    samples share the prompt, as vLLM's parallel sampling does) + decode. Decode runs in steps,
    one token per running row; a step with `r` rows running takes `per_output_token_s ·
    r^batch_exponent` (decode is memory-bound: more rows cost little until the GPU saturates),
    and a row stops after its own output tokens, so a batch lasts as long as its longest row,
    at a pace that quickens as the others finish. `weight_load_s`: one `update_weights`.
    All times `jitter_sigma` as in `LatencyModel`.
    """

    per_call_s: float
    per_prompt_token_s: float
    per_output_token_s: float
    batch_exponent: float = 1.0
    weight_load_s: float = 0.0
    jitter_sigma: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fields(self)

    def decode_seconds(self, output_tokens: Sequence[float]) -> float:
        """Σ over decode steps of `per_output_token_s · rows_running^batch_exponent`.

        With lengths sorted `L_1 <= … <= L_R`, the `L_k − L_{k−1}` steps between two row ends run
        `R − k + 1` rows.
        """
        total, done, rows = 0.0, 0.0, len(output_tokens)
        for k, length in enumerate(sorted(output_tokens)):
            total += (length - done) * (rows - k) ** self.batch_exponent
            done = length
        return self.per_output_token_s * total

    def mean_seconds(self, prompt_tokens: Sequence[float], output_tokens: Sequence[float]) -> float:
        """The jitter-free time of a call: `prompt_tokens` per request, `output_tokens` per row."""
        prefill = self.per_prompt_token_s * sum(prompt_tokens)
        return self.per_call_s + prefill + self.decode_seconds(output_tokens)

    def seconds(
        self,
        prompt_tokens: Sequence[float],
        output_tokens: Sequence[float],
        rng: np.random.Generator,
    ) -> float:
        return self.mean_seconds(prompt_tokens, output_tokens) * jitter(self.jitter_sigma, rng)

    def weight_load_seconds(self, rng: np.random.Generator) -> float:
        return self.weight_load_s * jitter(self.jitter_sigma, rng)


# The FSDP policy update of one GRPO step for an 8B VLM on 8 GPUs, for a benchmark to model the
# update phase: items are the step's tokens (prompt + response of every sample). torchtitan's
# Llama 3.1 8B FSDP on 8 H100s: 5,762 tokens/s per GPU per training pass; a GRPO update is ~2
# such passes per token (old and reference log-probs, then forward + backward with full
# activation checkpointing). Per-call part and jitter assumed; docs/latency-models.md.
FSDP_8B_UPDATE = LatencyModel(
    per_call_s=1.0, per_item_s=2 / (5762 * 8), batch_exponent=1.0, jitter_sigma=0.02
)


@dataclass
class ServiceStats:
    """One method's calls since the wrapper was built; times in seconds."""

    calls: int = 0
    modelled_s: float = 0.0  # Σ modelled service times
    wall_s: float = 0.0  # Σ what the calls took
    inner_s: float = 0.0  # Σ time the inner component itself took
    slept_s: float = 0.0  # Σ sleeps that filled the rest
    overruns: int = 0  # calls where the inner alone took longer than the model
    overrun_s: float = 0.0  # Σ by how much


def _built(inner: Any) -> Any:
    """The inner component: as given (Hydra built it from the recipe), or built here from a
    config mapping with `_target_` (a Python caller's plain dict)."""
    if isinstance(inner, Mapping):
        if "_target_" not in inner:
            raise ValueError(f"inner: a config mapping needs a `_target_`, got keys {list(inner)}")
        return build_component(dict(inner))
    return inner


def _model(value: Any, cls: type, owner: str) -> Any:
    """`value`, checked to be a `cls` (a recipe names it with `_target_`, so Hydra builds it)."""
    if not isinstance(value, cls):
        raise TypeError(
            f"{owner}: latency must be a {cls.__name__} (in a recipe: `_target_: "
            f"{cls.__module__}.{cls.__name__}` and its fields), got {type(value).__name__}"
        )
    return value


def _instance_key(instance: int | None) -> tuple[int, ...]:
    """(instance,) when given; else the next per-process number and, in a Ray actor, its id."""
    if instance is not None:
        return (instance,)
    number = next(_INSTANCES)
    actor_id = ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None
    return (number,) if actor_id is None else (number, int(actor_id, 16))


class _Modelled:
    """What every wrapper shares: the inner component, the jitter stream, the stats and the
    sleep that makes a call last its modelled time."""

    def __init__(self, inner: Any, seed: int, instance: int | None) -> None:
        self.inner = _built(inner)
        self._rng = stream(seed, *_instance_key(instance))
        self._stats: dict[str, ServiceStats] = {}
        self._late_s = 0.0  # sleep overshoot not yet paid back
        self._lock = threading.Lock()

    def stats(self) -> dict[str, dict[str, float]]:
        """Per method: calls, modelled / wall / inner / slept seconds, overruns and their time."""
        with self._lock:
            return {method: asdict(stats) for method, stats in self._stats.items()}

    def _serve(self, method: str, run: Callable[[], Any], modelled: Callable[[Any], float]) -> Any:
        """`run()`, then sleep until `modelled(result)` seconds have passed since it started.

        A sleep that overshoots (a busy host's scheduler wakes the thread late) is paid back from
        this wrapper's next sleeps, so the mean service time keeps to the model; an inner slower
        than the model is an overrun, counted, never paid back.
        """
        start = time.perf_counter()
        result = run()
        with self._lock:
            seconds = modelled(result)  # draws from the stream: one caller at a time
        inner = time.perf_counter() - start
        remaining, slept = seconds - inner, 0.0
        if remaining > 0:
            with self._lock:
                payback = min(self._late_s, remaining)
                self._late_s -= payback
            asked = remaining - payback
            time.sleep(asked)
            slept = time.perf_counter() - start - inner
            with self._lock:
                self._late_s += slept - asked
        with self._lock:
            stats = self._stats.setdefault(method, ServiceStats())
            stats.calls += 1
            stats.modelled_s += seconds
            stats.wall_s += time.perf_counter() - start
            stats.inner_s += inner
            stats.slept_s += slept
            if remaining < 0:
                stats.overruns += 1
                stats.overrun_s -= remaining
        return result


class LatencyGenerator(_Modelled):
    """An `ImageGenerator` whose calls last as `latency` says for their number of renders; the
    images are the inner generator's.

    Args:
        inner: the generator that renders (built, or its config with `_target_`).
        latency: the service-time model.
        instance: the jitter stream's instance number (None: see the module docstring).
    """

    def __init__(self, inner: Any, latency: LatencyModel, instance: int | None = None) -> None:
        self.latency = _model(latency, LatencyModel, "LatencyGenerator")
        super().__init__(inner, self.latency.seed, instance)

    def __call__(self, requests: Sequence[RenderRequest]) -> list[np.ndarray]:
        return self._serve(
            "render",
            lambda: self.inner(requests),
            lambda _: self.latency.seconds(len(requests), self._rng),
        )


class LatencyJudge(_Modelled):
    """A `Judge` whose calls last as `latency` says for their number of items; the scores are
    the inner judge's. Arguments as `LatencyGenerator`'s."""

    def __init__(self, inner: Any, latency: LatencyModel, instance: int | None = None) -> None:
        self.latency = _model(latency, LatencyModel, "LatencyJudge")
        super().__init__(inner, self.latency.seed, instance)

    def score_batch(
        self,
        instructions: Sequence[str],
        afters: Sequence[np.ndarray],
        befores: Sequence[np.ndarray | None],
    ) -> Sequence[Any]:
        return self._serve(
            "score",
            lambda: self.inner.score_batch(instructions, afters, befores),
            lambda _: self.latency.seconds(len(instructions), self._rng),
        )


@dataclass(frozen=True)
class TokenCounts:
    """Token counts of the modelled model, not the inner one's: a prompt counts its text
    characters / `chars_per_token` plus `tokens_per_image` per image (the inner engine sees
    small testbed images; Qwen3-VL turns a 1024² image into 1024 tokens: 16-pixel patches,
    merged 2×2); a completion counts its sampled tokens (its text / `chars_per_token` where the
    backend gives no ids) times `output_token_scale` (a tiny critic's answers are shorter than
    an 8B critic's)."""

    tokens_per_image: int = 1024
    chars_per_token: float = 4.0
    output_token_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.tokens_per_image < 0 or self.chars_per_token <= 0 or self.output_token_scale < 0:
            raise ValueError(
                "LatencyEngine: need tokens_per_image >= 0, chars_per_token > 0, "
                f"output_token_scale >= 0; got {self.tokens_per_image}, {self.chars_per_token}, "
                f"{self.output_token_scale}"
            )

    def prompt(self, messages: Sequence[Mapping[str, Any]], num_images: int) -> float:
        """Text characters / `chars_per_token` + `tokens_per_image` per image."""
        chars = 0
        for message in messages:
            content = message.get("content")
            if isinstance(content, str):
                chars += len(content)
            else:
                chars += sum(len(part.get("text", "")) for part in content or ())
        return chars / self.chars_per_token + self.tokens_per_image * num_images

    def output(self, num_tokens: int | None, text: str) -> float:
        """Sampled tokens (or `text` / `chars_per_token` when None) × `output_token_scale`."""
        count = len(text) / self.chars_per_token if num_tokens is None else float(num_tokens)
        return count * self.output_token_scale


class LatencyEngine(_Modelled):
    """A `VLMEngine` whose calls last as `latency` says for the modelled model's token counts
    (`TokenCounts`); the completions (text, token ids, log-probs) are the inner engine's, and
    `update_weights` loads into it.

    Args:
        inner: the engine that samples (built, or its config with `_target_`).
        latency: the service-time model.
        tokens_per_image, chars_per_token, output_token_scale: the `TokenCounts`.
        instance: the jitter stream's instance number (None: see the module docstring).
    """

    def __init__(
        self,
        inner: Any,
        latency: EngineLatencyModel,
        tokens_per_image: int = 1024,
        chars_per_token: float = 4.0,
        output_token_scale: float = 1.0,
        instance: int | None = None,
    ) -> None:
        self.counts = TokenCounts(tokens_per_image, chars_per_token, output_token_scale)
        self.latency = _model(latency, EngineLatencyModel, "LatencyEngine")
        super().__init__(inner, self.latency.seed, instance)

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        prompts = [self.counts.prompt(r.messages, len(r.images)) for r in requests]

        def outputs(out: list[list[Completion]]) -> list[float]:
            return [
                self.counts.output(None if c.token_ids is None else len(c.token_ids), c.text)
                for row in out
                for c in row
            ]

        return self._serve(
            "generate",
            lambda: self.inner.generate(requests, params),
            lambda out: self.latency.seconds(prompts, outputs(out), self._rng),
        )

    def update_weights(self, state_dict: Any) -> Any:
        """The inner engine's `update_weights`, lasting the modelled weight-load time."""
        return self._serve(
            "update_weights",
            lambda: self.inner.update_weights(state_dict),
            lambda _: self.latency.weight_load_seconds(self._rng),
        )
