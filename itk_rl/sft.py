"""Supervised fine-tuning on the FSDP trainer: `python -m itk_rl.sft --config-name RECIPE`.

Recipes: `critic_sft` / `planner_sft` (Qwen3-VL-8B on a GPU cluster) and `testbed_critic_sft` /
`testbed_planner_sft` (tiny models on a CPU). The script reads top to bottom like
`itk_rl.train`, whose helpers it shares: setup (data, trainer, resume) → epochs of shuffled
batches, each one `TrainerGroup.sft_step`, with a held-out eval loss every `eval_every` steps →
cleanup (export to `output_dir/final`) → a greedy generation check of the exported weights on
held-out prompts, whose parse rates go to `output_dir/eval.json`.

The loss is on the response tokens only (the trainer masks the prompt); the schedule spans
`ceil(epochs · records / batch_size)` steps whatever `max_steps` stops at, so a run stopped early
and resumed continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from itk_rl.data.critic_records import load_critic_sft_records
from itk_rl.data.planner_records import PlannerPair, load_planner_pairs
from itk_rl.data.sampler import BatchSampler
from itk_rl.formats import build_critic_messages, build_planner_messages, load_template
from itk_rl.formats.envelope import ParseResult
from itk_rl.formats.files import write_atomic
from itk_rl.formats.templates import PromptTemplate
from itk_rl.interfaces.engine import ChatRequest, SamplingParams
from itk_rl.job import (
    check_resources,
    compose_recipe,
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
from itk_rl.rollout.workers import RolloutWorkers
from itk_rl.tiny import TinyVLMConfig, build_tiny_models
from itk_rl.trainer.batch import TrainSample, response_ids_from_text
from itk_rl.trainer.group import TrainerGroup

CONSOLE_KEYS = ("sft/loss", "eval/loss", "sft/lr", "sft/grad_norm", "data/epoch", "perf/sft_step_s")


@dataclass(frozen=True, eq=False)
class SftExample:
    """A training sample and its target text (the generation check compares against it)."""

    sample: TrainSample
    target: str


SampleLoader = Callable[[str, PreTrainedTokenizerBase], list[SftExample]]
"""`(parquet path, tokenizer) -> examples`: a recipe's `data.samples`, partially applied."""


# --- data --------------------------------------------------------------------------------------


def critic_samples(
    path: str, tokenizer: PreTrainedTokenizerBase, *, template: str
) -> list[SftExample]:
    """Critic-SFT rows → the critic's chat (before image, after image, both prompts) + target."""
    prompt_template = load_template(template)
    return [
        SftExample(
            TrainSample(
                tuple(
                    build_critic_messages(
                        prompt_template, record.origin_prompt, record.rewritten_prompt
                    )
                ),
                response_ids_from_text(tokenizer, target),
                (record.origin_image, record.edited_image),
            ),
            target,
        )
        for record, target in load_critic_sft_records(path)
    ]


def planner_messages(pair: PlannerPair, template: str | PromptTemplate) -> list[dict[str, Any]]:
    """The planner's chat for a truncated sequence.

    The done steps go into the user turn as context after the request — "Step k done: text"
    then that step's image — rather than as earlier assistant turns: the planner never wrote
    them (they are results: shown text and final image), and a cut-0 pair stays exactly the
    prompt `build_planner_messages` gives at inference. Images: the request's, then the steps'.
    """
    template = load_template(template) if isinstance(template, str) else template
    messages = build_planner_messages(pair.request, len(pair.request_images), template)
    done: list[dict[str, Any]] = []
    for k, text in enumerate(pair.prefix_texts, start=1):
        done += [{"type": "text", "text": f"Step {k} done: {text}"}, {"type": "image"}]
    user = messages[-1]
    return [*messages[:-1], {**user, "content": [*user["content"], *done]}]


def planner_samples(
    path: str, tokenizer: PreTrainedTokenizerBase, *, template: str
) -> list[SftExample]:
    """Planner-SFT pairs → `planner_messages` + the rest of the plan as target."""
    prompt_template = load_template(template)
    return [
        SftExample(
            TrainSample(
                tuple(planner_messages(pair, prompt_template)),
                response_ids_from_text(tokenizer, pair.target),
                (*pair.request_images, *pair.prefix_images),
            ),
            pair.target,
        )
        for pair in load_planner_pairs(path)
    ]


def prepare_testbed_sft(
    data_dir: str,
    data_recipe: str,
    data_overrides: Sequence[str],
    tiny_models_dir: str,
    vlm_config: TinyVLMConfig,
    vocab_size: int,
    templates: Sequence[str] = (),
    seed: int = 0,
    vision_pretraining_steps: int = 0,
) -> None:
    """The testbed's inputs, each made only when missing: the three datasets (the data build
    recipe `data_recipe` into `data_dir`, its report included) and tiny models whose
    tokenizer is word-level (DESIGN §5: byte tokens keep a tiny critic at chance), trained on
    the testbed corpus plus the prompt `templates`' text so that prompts are word tokens too.
    With `vision_pretraining_steps` > 0 the vision tower of the `vlm_config.family` model (the
    one the recipe trains) is then pretrained to read testbed scenes (`itk_rl.testbed.vision`),
    as real critics start from towers that see.
    """
    from itk_rl.build_data import run as build_data
    from itk_rl.testbed.tasks import corpus
    from itk_rl.testbed.vision import pretrain_vision_tower

    if not (Path(data_dir) / "build.json").is_file():
        overrides = [f"output_dir={data_dir}", *data_overrides]
        build_data(compose_recipe(data_recipe, overrides), recipe=data_recipe)
    paths = build_tiny_models(
        Path(tiny_models_dir),
        tokenizer_kind="word",
        corpus=[*corpus(), *_template_texts(templates)],
        vocab_size=vocab_size,
        seed=seed,
        vlm_config=vlm_config,
    )
    if vision_pretraining_steps > 0:
        critic = getattr(paths, vlm_config.family)
        figures = pretrain_vision_tower(critic, vision_pretraining_steps, seed=seed)
        print(f"[prepare] vision tower pretrained: {figures}")


def _template_texts(names: Sequence[str]) -> list[str]:
    """The templates' system and user texts (placeholders left in: the words are what count)."""
    return [
        text for name in names for text in (load_template(name).system, load_template(name).user)
    ]


def load_examples(
    cfg: DictConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[SftExample], list[SftExample]]:
    """Train and held-out examples (the latter cut to `data.max_eval_samples`)."""
    make: SampleLoader = instantiate(cfg.data.samples)
    train_set = make(cfg.data.train_path, tokenizer)
    eval_set = make(cfg.data.eval_path, tokenizer)[: cfg.data.max_eval_samples]
    for key, examples in (("train_path", train_set), ("eval_path", eval_set)):
        if len(examples) < cfg.trainer.world_size:
            raise ValueError(
                f"data.{key}={getattr(cfg.data, key)!r} has {len(examples)} record(s); "
                f"trainer.world_size={cfg.trainer.world_size} ranks need at least one each"
            )
    return train_set, eval_set


def schedule(cfg: DictConfig, num_records: int) -> tuple[dict[str, Any], int]:
    """The trainer config with its schedule filled in, and the steps this run stops after."""
    total = math.ceil(cfg.epochs * num_records / cfg.data.batch_size)
    trainer = plain(cfg.trainer)
    trainer["total_steps"] = total
    trainer["warmup_steps"] = round(cfg.warmup_ratio * total)
    return trainer, min(total, cfg.max_steps or total)


# --- loop --------------------------------------------------------------------------------------


def generation_check(cfg: DictConfig, final: Path, eval_set: list[SftExample]) -> dict:
    """Greedy outputs of the exported weights on the first held-out prompts, parsed by the
    recipe's parser: how often they parse at all, strictly (`format_valid`), and exactly."""
    check = cfg.check
    parse: Callable[[str], ParseResult] = instantiate(check.parse)
    examples = eval_set[: check.num_prompts]
    requests = [ChatRequest(e.sample.messages, e.sample.images) for e in examples]
    params = SamplingParams(max_new_tokens=check.max_new_tokens, temperature=0.0)
    engine = {**plain(check.component), "model": str(final)}
    placement = plain(check.resources), plain(check.label_selector)
    with RolloutWorkers(
        engine, check.num_actors, check.num_cpus, check.num_gpus, 0, 0, *placement
    ) as workers:
        outputs = [group[0].text for group in workers.generate(requests, params)]
    parsed = [parse(text) for text in outputs]
    n = max(len(examples), 1)
    result = {
        "model": str(final),
        "prompts": len(examples),
        "parsed_rate": sum(p.value is not None for p in parsed) / n,
        "format_valid_rate": sum(p.format_valid for p in parsed) / n,
        "exact_match_rate": sum(o == e.target for o, e in zip(outputs, examples, strict=True)) / n,
        "examples": [
            {"output": o, "target": e.target, "format_valid": p.format_valid}
            for o, e, p in zip(outputs, examples, parsed, strict=True)
        ],
    }
    write_atomic(Path(cfg.output_dir) / "eval.json", json.dumps(result, indent=1) + "\n")
    return result


def sft(cfg: DictConfig) -> Path:
    """Run the recipe; returns the folder of the exported final weights."""
    # --- setup ---
    out = start_run(cfg)
    checkpoints = out / "checkpoints"
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_path)
    train_set, eval_set = load_examples(cfg, tokenizer)
    held_out = [e.sample for e in eval_set]
    trainer_config, last = schedule(cfg, len(train_set))
    sampler = BatchSampler(len(train_set), cfg.data.batch_size, seed=cfg.seed)
    connect_ray(cfg.cluster)
    check_resources({"trainer": (cfg.trainer.world_size, cfg.trainer)})
    check_resources({"check": (cfg.check.num_actors, cfg.check)})
    trainer: TrainerGroup | None = TrainerGroup(cfg.model_path, trainer_config)
    log = None
    try:
        start = 0
        checkpoint = resume_from(cfg, checkpoints)
        if checkpoint is not None:
            start = load_step(trainer, checkpoint, sampler)
            print(f"[sft] resumed from {checkpoint} at step {start}")
        log = open_metrics(out, start)
        if start == 0:  # the starting point of the held-out loss
            record(out, log, 0, trainer.sft_eval_loss(held_out))
        # --- loop ---
        for step in range(start + 1, last + 1):
            batch = [train_set[i].sample for i in sampler.next_batch()]
            metrics = trainer.sft_step(batch)
            metrics["data/epoch"] = sampler.epoch + sampler.cursor / len(train_set)
            if step % cfg.eval_every == 0 or step == last:
                metrics |= trainer.sft_eval_loss(held_out)
            record(out, log, step, metrics)
            print(progress_line(step, last, metrics, CONSOLE_KEYS), flush=True)
            if step % cfg.checkpoint_every == 0 or step == last:
                save_step(trainer, checkpoints, step, sampler.state())
        # --- cleanup ---
        final = export_final(trainer, out)
        trainer.shutdown()  # frees the trainer's devices for the check
        trainer = None
        if cfg.check.num_prompts:
            result = generation_check(cfg, final, eval_set)
            rates = {f"check/{k}": result[k] for k in result if k.endswith("_rate")}
            log.scalars(last, rates)
            print(f"[sft] generation check on {result['prompts']} held-out prompts: {rates}")
    finally:
        if log is not None:
            log.close()
        if trainer is not None:
            trainer.shutdown()
    print(
        f"[sft] final weights: {final}  (TensorBoard: tensorboard --logdir {out / 'tensorboard'})"
    )
    return final


@hydra.main(
    config_path="pkg://itk_rl.recipes", config_name="testbed_critic_sft", version_base="1.3"
)
def main(cfg: DictConfig) -> None:
    sft(cfg)


if __name__ == "__main__":
    main()
