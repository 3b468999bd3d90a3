"""Inputs a testbed training recipe needs and a fresh machine lacks: a tiny critic and records.

Called by the recipe's `prepare` entry before anything starts; both outputs are reused when
already there, so a resumed run prepares nothing.
"""

from __future__ import annotations

from pathlib import Path

from itk_rl.data.critic_records import save_critic_records
from itk_rl.interfaces.generator import ImageGenerator
from itk_rl.testbed.critic_data import critic_samples
from itk_rl.testbed.judge import TestbedJudge
from itk_rl.testbed.tasks import TaskSampler, corpus
from itk_rl.tiny import TinyVLMConfig, build_tiny_models


def prepare_critic_inputs(
    tiny_models_dir: str,
    records_path: str,
    generator: ImageGenerator,
    num_tasks: int,
    synonym_rate: float,
    seed: int = 0,
    vlm_config: TinyVLMConfig | None = None,
) -> None:
    """Tiny models with a word-level tokenizer on the testbed corpus (DESIGN: a tiny critic
    learns only with word tokens), and critic records of `num_tasks` sampled tasks rendered by
    `generator` and judged exactly."""
    build_tiny_models(
        Path(tiny_models_dir),
        tokenizer_kind="word",
        corpus=list(corpus()),
        seed=seed,
        vlm_config=vlm_config,
    )
    if not Path(records_path).is_file():
        tasks = TaskSampler(seed=seed, synonym_rate=synonym_rate).sample(num_tasks)
        samples = list(critic_samples(tasks, generator, TestbedJudge(), seed=seed))
        save_critic_records(samples, records_path)
