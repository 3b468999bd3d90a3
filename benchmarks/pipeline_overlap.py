"""A GRPO step at the paper's cluster shape, simulated on a CPU: phases alone, sequential,
streamed, and overlapped across steps (not a timed test).

    python benchmarks/pipeline_overlap.py [--steps 4] [--plot pipeline_overlap.png] [--quick]
        [--only SECTION ...]

The paper's shape: 16 records × 8 responses per step, a FLUX.2-klein-9B pool (4 actors, ~1 s
a 1024² render), an API judge (4 actors), two vLLM rollout actors for an 8B critic, an 8B FSDP
update; every component latency-modelled (`itk_rl.rollout.latency`, recipes
`*_modelled.yaml`, calibration in docs/latency-models.md) around the testbed's real ones, so
rewards, advantages and the tiny critic's update are real. The update phase is the tiny
trainer's, lasting as long as `FSDP_8B_UPDATE` says for the step's tokens.

Measured in one run, each over `--steps` steps after one warm-up (the streamed settings also
run one step after them and leave it out: the last step of a run has no next batch to overlap
its update, a drain that a real run of hundreds of steps pays once):
- `phases_alone`: rollout, rewards, update and weight sync run one after another, each alone
  (today's sequential step: `sequential_step_s` is their sum);
- `streamed`: `algorithm.max_staleness` 0 (rollout streamed into the rewards) and 1 (the next
  step's rollout and rewards run during this one's update): step time, step / slowest phase,
  generator- and judge-pool busy fractions, renders per second, staleness;
- `renders_dominate`: the same at staleness 0, 1 and 2 with a critic whose refinements differ
  within a group and one generator actor (`RENDERS_DOMINATE`), so renders are the slowest
  phase: the setting of the 1.15 × slowest-phase and generator-busy targets;
- `scaling`: that setting's rewards phase of one batch with 1, 2, 4, 8, 16 generator actors;
- `orchestration_ms_per_render`: 1,000 renders through the pool on a generator that takes no
  time;
- `tiny_real`: the testbed recipe with its real tiny components on this machine, staleness 0
  and 1;
- `dynamic_batching`: the tiny diffusers FLUX.2-klein pool, batched vs one image per call.

Prints one JSON object as its last line (after Ray has shut down, so no worker log follows it)
and writes a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
from hydra.utils import instantiate
from omegaconf import OmegaConf

from itk_rl.critic_grpo import (
    Actors,
    GRPORun,
    finish_step,
    parse_responses,
    rollout,
    scored_batches,
    sync_weights,
    update_policy,
)
from itk_rl.critic_grpo_rewards import Response, score_responses
from itk_rl.data.critic_records import load_critic_records
from itk_rl.data.sampler import BatchSampler
from itk_rl.formats.records import CriticSample
from itk_rl.formats.templates import load_template
from itk_rl.interfaces.generator import RenderRequest
from itk_rl.job import compose_recipe, connect_ray, plain, start_run
from itk_rl.rollout.latency import FSDP_8B_UPDATE, TokenCounts
from itk_rl.rollout.modelled_trainer import ModelledTrainer
from itk_rl.rollout.pool import GeneratorPool
from itk_rl.tiny import build_tiny_models
from itk_rl.train import start_actors, step_settings, train

ACTOR = {"num_cpus": 0.05, "num_gpus": 0, "max_restarts": 0, "max_task_retries": 0}
PAPER_SHAPE = (
    "generator@generator.component=flux2_klein_9b_modelled",
    "judge@judge.component=api_judge_modelled",
    "engine@rollout.component=vllm_8b_modelled",
    "prepare.generator=${generator.component.inner}",
    "prepare.num_tasks=80",
    "data.batch_size=16",
    "rollout.sampling.n=8",
    "rollout.num_actors=2",
    "rollout.num_cpus=0.1",
    "rollout.chunk_records=2",
    "generator.num_actors=4",
    "generator.num_cpus=0.05",
    "generator.max_batch_size=4",
    "generator.max_wait_s=0.05",
    "judge.num_actors=4",
    "judge.num_cpus=0.05",
    "trainer.world_size=1",
    "trainer.num_cpus=0.5",
    "trainer.kl_coef=0",
    "algorithm.skip_zero_variance_groups=false",
)
# The first run's inputs (tiny models, Critic-RL records), reused by the second.
INPUT_KEYS = ("prepare.tiny_models_dir", "data.train_path")
# Where renders dominate the step: rollouts whose refinements differ within a group (a
# scripted critic behind the modelled engine: each failed record renders up to 8 prompts, not
# one) and one generator actor, so rendering a step's ~64 prompts (~60 s) takes twice its
# rollout (with two actors the two are even, ~30 s each: measured 2026-12-03). Its answers run to
# ~100 word-level tokens (the tiny critic's to <= 48): scaled by 4, not 8, they stand for the
# same ~400-token 8B answer (recipes/engine/vllm_8b_modelled.yaml).
RENDERS_DOMINATE = (
    "engine@rollout.component.inner=testbed_sampling_critic",
    "rollout.component.output_token_scale=4.0",
    "generator.num_actors=1",
)


class InstantGenerator:
    """A generator that takes no time: what remains of a render's latency is orchestration."""

    def __call__(self, requests: Sequence[RenderRequest]) -> list[np.ndarray]:
        return [np.zeros((8, 8, 3), np.uint8) for _ in requests]


def progress(message: str) -> None:
    print(f"[pipeline_overlap] {message}", file=sys.stderr, flush=True)


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


class PaperShape:
    """The paper-shape run's recipe (`PAPER_SHAPE` and `extra` overrides), records and actors
    (the trainer modelled)."""

    def __init__(self, folder: Path, extra: Sequence[str] = ()) -> None:
        overrides = [f"output_dir={folder}", *PAPER_SHAPE, *extra]
        self.cfg = compose_recipe("testbed_critic_grpo", overrides)
        start_run(self.cfg)
        self.records: list[CriticSample] = load_critic_records(self.cfg.data.train_path)
        self.sampler = BatchSampler(len(self.records), self.cfg.data.batch_size, seed=0)
        connect_ray(self.cfg.cluster)
        actors: Actors = start_actors(self.cfg)
        engine = self.cfg.rollout.component
        counts = TokenCounts(
            engine.tokens_per_image, engine.chars_per_token, engine.output_token_scale
        )
        actors.trainer = ModelledTrainer(actors.trainer, FSDP_8B_UPDATE, counts)
        reward_fn = instantiate(self.cfg.reward)
        settings = step_settings(self.cfg, reward_fn)
        template = load_template(self.cfg.critic.template)
        self.run = GRPORun(actors, template, reward_fn, settings, self.cfg.seed)
        self.actors = actors

    def batch(self) -> list[CriticSample]:
        return [self.records[i] for i in self.sampler.next_batch()]

    def sampled(self, step: int, batch: Sequence[CriticSample]) -> tuple[list, list[Response]]:
        """The whole batch's rollout, waited for: today's rollout phase."""
        run = self.run
        requests, futures = rollout(
            self.actors.workers, run.template, batch, run.settings, run.seed, step
        )
        responses = [r for i, f in enumerate(futures) for r in parse_responses(i, f.result())]
        return requests, responses

    def score(self, batch: Sequence[CriticSample], responses: list[Response], step: int) -> None:
        actors, run = self.actors, self.run
        score_responses(
            actors.generators, actors.judges, run.reward_fn, batch, responses, run.settings, step
        )


def phases_alone(shape: PaperShape, steps: int) -> dict[str, Any]:
    """Today's sequential step: each phase waits for the one before."""
    times: dict[str, list[float]] = {k: [] for k in ("rollout", "rewards", "update", "weight_sync")}
    renders: list[int] = []
    for step in range(steps + 1):
        batch = shape.batch()
        shape.actors.generators.reset_stats()
        marks = [time.perf_counter()]
        requests, responses = shape.sampled(step, batch)
        marks.append(time.perf_counter())
        shape.score(batch, responses, step)
        marks.append(time.perf_counter())
        update_policy(shape.actors.trainer, requests, responses, shape.run.settings)
        marks.append(time.perf_counter())
        sync_weights(shape.actors.trainer, shape.actors.workers)
        marks.append(time.perf_counter())
        progress(f"sequential step {step}: {marks[-1] - marks[0]:.1f} s")
        if step:  # the first step pays one-off costs
            for name, begin, end in zip(times, marks, marks[1:], strict=False):
                times[name].append(end - begin)
            renders.append(shape.actors.generators.stats()["served"])
    phase_s = {name: mean(values) for name, values in times.items()}
    return {
        "phase_s": phase_s,
        "sequential_step_s": sum(phase_s.values()),
        "renders": mean(renders),
    }


def streamed(shape: PaperShape, max_staleness: int, steps: int) -> dict[str, Any]:
    """Steps through `scored_batches` and `finish_step`, as `itk_rl.train` runs them."""
    records: list[dict[str, float]] = []
    batches = scored_batches(shape.run, range(1, steps + 3), max_staleness, lambda _: shape.batch())
    step_end = time.perf_counter()
    for _, scored, _ in batches:
        result = finish_step(shape.run, scored, started=step_end)
        step_end = time.perf_counter()
        records.append(result.metrics)
        progress(f"staleness {max_staleness} step: {result.metrics['time/step_s']:.1f} s")
    kept = records[1:-1]  # the steady state: not the pipeline's fill (first) or drain (last)

    def avg(key: str) -> float:
        return mean([r[key] for r in kept])

    return {
        "step_s": avg("time/step_s"),
        "generator_busy_fraction": avg("perf/generator_busy_fraction"),
        "judge_busy_fraction": avg("perf/judge_busy_fraction"),
        "renders_per_s": avg("perf/generator_items_per_s"),
        "staleness_max": max(r["rollout/staleness_max"] for r in kept),
        "update_s": avg("time/update_s"),
        "weight_sync_s": avg("time/weight_sync_s"),
    }


def scaling(shape: PaperShape, counts: Sequence[int]) -> list[dict[str, float]]:
    """The rewards phase of one sampled batch with each generator-pool size."""
    batch = shape.batch()
    _, responses = shape.sampled(0, batch)
    generator = shape.cfg.generator
    rows = []
    shape.actors.generators.shutdown()
    for count in counts:
        pool = GeneratorPool(
            plain(generator.component),
            num_actors=count,
            max_batch_size=generator.max_batch_size,
            max_wait_s=generator.max_wait_s,
            **ACTOR,
        )
        shape.actors.generators = pool
        for response in responses:
            response.reward, response.rerender, response.failures = None, None, []
            response.render_failed = False
        shape.actors.judges.reset_stats()
        begin = time.perf_counter()
        shape.score(batch, responses, 0)
        seconds = time.perf_counter() - begin
        stats = pool.stats()
        judges = shape.actors.judges.stats()
        rows.append(
            {
                "generators": count,
                "rewards_s": seconds,
                "renders_per_s": stats["served"] / seconds,
                "generator_busy_fraction": mean([a["busy_fraction"] for a in stats["actors"]]),
                "judge_busy_fraction": mean([a["busy_fraction"] for a in judges["actors"]]),
            }
        )
        pool.shutdown()
        progress(f"rewards phase with {count} generators: {seconds:.1f} s")
    return rows


def orchestration_ms(renders: int = 1000) -> float:
    """Wall time per render request through one pool actor on a generator that takes no time."""
    with GeneratorPool(
        {"_target_": InstantGenerator}, num_actors=1, max_batch_size=16, max_wait_s=0.001, **ACTOR
    ) as pool:
        pool.render([RenderRequest("warm-up")])
        begin = time.perf_counter()
        futures = pool.submit([RenderRequest(f"render {i}", seed=i) for i in range(renders)])
        for future in futures:
            future.result()
        return 1000 * (time.perf_counter() - begin) / renders


def tiny_real(folder: Path, steps: int) -> dict[str, Any]:
    """The testbed recipe with its real tiny components, on-policy and one step ahead."""
    out = {}
    for staleness in (0, 1):
        run = folder / f"tiny_staleness_{staleness}"
        cfg = compose_recipe(
            "testbed_critic_grpo",
            [
                f"output_dir={run}",
                f"prepare.tiny_models_dir={folder / 'tiny_inputs/tiny_models'}",
                f"data.train_path={folder / 'tiny_inputs/critic_rl.parquet'}",
                f"total_steps={steps + 1}",
                f"checkpoint_every={steps + 1}",
                "resume=never",
                "algorithm.skip_zero_variance_groups=false",
                f"algorithm.max_staleness={staleness}",
            ],
        )
        train(cfg)
        lines = (run / "metrics.jsonl").read_text().splitlines()
        kept = [json.loads(line) for line in lines][1:]
        keys = sorted(k for k in kept[0] if k.startswith("time/"))
        out[f"staleness_{staleness}"] = {k: mean([r[k] for r in kept]) for k in keys}
    return out


def dynamic_batching(folder: Path, renders: int = 32) -> dict[str, float]:
    """Images per second of the tiny diffusers FLUX.2-klein pool: batched vs one per call."""
    paths = build_tiny_models(folder / "tiny_klein")
    rates = {}
    for name, batch in (("one_per_call", 1), ("batched", 8)):
        config = plain(compose_recipe("generate_tiny", [f"tiny_models={paths.root}"]).generator)
        config["max_batch_size"] = batch
        with GeneratorPool(
            config, num_actors=1, max_batch_size=batch, max_wait_s=0.05, **ACTOR
        ) as pool:
            pool.render([RenderRequest("warm-up")])
            begin = time.perf_counter()
            pool.render([RenderRequest(f"a red circle {i}", seed=i) for i in range(renders)])
            rates[name] = renders / (time.perf_counter() - begin)
    return {
        **{f"{k}_images_per_s": v for k, v in rates.items()},
        "gain": rates["batched"] / rates["one_per_call"],
    }


def ratios(section: dict[str, Any], settings: Iterable[dict[str, Any]]) -> None:
    """Each overlapped setting's step over the section's slowest phase alone and speed-up over
    its sequential step."""
    slowest = max(section["phases_alone"]["phase_s"].values())
    section["slowest_phase_s"] = slowest
    sequential = section["phases_alone"]["sequential_step_s"]
    for figures in settings:
        figures["step_over_slowest_phase"] = figures["step_s"] / slowest
        figures["speedup_over_sequential"] = sequential / figures["step_s"]


def step_bars(axis: Any, section: dict[str, Any], settings: dict[str, Any], title: str) -> None:
    """One section's phases alone, its sequential step and its overlapped settings."""
    phases = section["phases_alone"]["phase_s"]
    names = [*phases, "sequential", *(k.replace("_", " ") for k in settings)]
    values = [
        *phases.values(),
        section["phases_alone"]["sequential_step_s"],
        *(v["step_s"] for v in settings.values()),
    ]
    axis.bar(names, values, color=["#999"] * len(phases) + ["#c44"] + ["#48c"] * len(settings))
    axis.axhline(section["slowest_phase_s"] * 1.15, ls="--", c="k", lw=1, label="1.15 × slowest")
    axis.set_ylabel("seconds")
    axis.set_title(title)
    axis.tick_params(axis="x", rotation=30)
    axis.legend()


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.5))
    step_bars(left, result, result["streamed"], "GRPO step, the paper's shape")
    dominated = result["renders_dominate"]
    settings = {k: v for k, v in dominated.items() if k.startswith("staleness_")}
    step_bars(middle, dominated, settings, "renders dominating")
    rows = result["scaling"]
    right.plot([r["generators"] for r in rows], [r["renders_per_s"] for r in rows], "o-")
    right.set_xscale("log", base=2)
    right.set_xlabel("generator actors")
    right.set_ylabel("renders / s (rewards phase)")
    right.set_title("generator-pool scaling, renders dominating")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


SECTIONS = ("paper_shape", "renders_dominate", "orchestration", "tiny_real", "dynamic_batching")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="measured steps per setting")
    parser.add_argument("--plot", type=Path, default=Path("pipeline_overlap.png"))
    parser.add_argument("--quick", action="store_true", help="2 steps, scaling 1/4 actors only")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS)
    args = parser.parse_args()
    steps = 2 if args.quick else args.steps
    counts = (1, 4) if args.quick else (1, 2, 4, 8, 16)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shape = PaperShape(folder / "paper_shape")  # also prepares the inputs the rest reuse
        try:
            if "paper_shape" in args.only:
                result["phases_alone"] = phases_alone(shape, steps)
                result["streamed"] = {f"staleness_{k}": streamed(shape, k, steps) for k in (0, 1)}
                ratios(result, result["streamed"].values())
        finally:
            shape.actors.shutdown()
        if "renders_dominate" in args.only:
            inputs = (f"{k}={OmegaConf.select(shape.cfg, k)}" for k in INPUT_KEYS)
            renders = PaperShape(folder / "renders_dominate", [*RENDERS_DOMINATE, *inputs])
            try:
                dominated = {"phases_alone": phases_alone(renders, steps)}
                dominated |= {f"staleness_{k}": streamed(renders, k, steps) for k in (0, 1, 2)}
                ratios(dominated, [v for k, v in dominated.items() if k.startswith("staleness_")])
                result["renders_dominate"] = dominated
                result["scaling"] = scaling(renders, counts)
            finally:
                renders.actors.shutdown()
        if "orchestration" in args.only:
            result["orchestration_ms_per_render"] = orchestration_ms()
        ray.shutdown()  # the tiny runs start their own local cluster
        if "tiny_real" in args.only:
            result["tiny_real"] = tiny_real(folder, steps)
        if "dynamic_batching" in args.only:
            result["dynamic_batching"] = dynamic_batching(folder)
        ray.shutdown()
    if {"paper_shape", "renders_dominate"} <= set(args.only):
        plot(result, args.plot)
        result["plot"] = str(args.plot)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
