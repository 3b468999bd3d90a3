"""Rollout and weight-sync time of the critic on transformers vs vLLM (CPU build), in one run.

    RAY_AUTH_MODE=disabled python benchmarks/rollout_engines.py [--repeats 3] [--records 16]
        [--samples 8] [--max-new-tokens 64]

The main job's GRPO shape: 16 testbed Critic-RL records × 8 responses of at most 64 tokens, at
temperature 1, from the main job's critic architecture (Qwen3-VL, hidden 128, 4 layers; random
weights, so answers run to the token limit: the worst case). Each engine is the recipe's
(`recipes/engine/transformers_cpu.yaml`, `vllm_cpu.yaml`) in one Ray rollout actor, as in
`testbed_critic_grpo`; rollouts call `critic_grpo.rollout`, weight sync `critic_grpo`'s path
(the state dict put in the object store once, loaded by the actor). Per engine: start time,
each rollout after one warm-up, tokens per second, and weight-sync time with the weights'
size. Then weight-sync time against weight size: each engine built in this process on wider
random VLMs (hidden 128 to `--sync-max-hidden`), timed on `update_weights` alone. Prints one
JSON object on its last line.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

import ray
from hydra.utils import instantiate
from transformers import AutoModelForImageTextToText

from itk_rl.critic_grpo import rollout
from itk_rl.data.critic_records import load_critic_records
from itk_rl.formats import load_template
from itk_rl.interfaces.engine import SamplingParams
from itk_rl.job import compose_recipe, plain
from itk_rl.rollout.workers import RolloutWorkers
from itk_rl.testbed import TestbedGenerator
from itk_rl.testbed.prepare import prepare_critic_inputs
from itk_rl.tiny import TinyVLMConfig, build_tiny_vlm, build_tokenizer

ENGINES = ("transformers_cpu", "vllm_cpu")
MAIN_JOB_CRITIC = TinyVLMConfig(
    family="qwen3_vl",
    hidden_size=128,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=256,
    vision_depth=1,
)


def measure(engine: str, model: Path, records: list, args: argparse.Namespace) -> dict:
    cfg = compose_recipe(
        "testbed_critic_grpo",
        [f"engine@rollout.component={engine}", f"critic.model_path={model}"],
    )
    template = load_template(cfg.critic.template)
    sampling = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=1.0, n=args.samples)
    start = time.perf_counter()
    workers = RolloutWorkers(
        plain(cfg.rollout.component), 1, 1, 0, max_restarts=0, max_task_retries=0
    )
    workers.worker_versions()  # waits until the engine is built
    started = time.perf_counter() - start
    try:
        seconds, tokens = [], 0
        for step in range(args.repeats + 1):  # step 0: warm-up
            start = time.perf_counter()
            _, responses = rollout(workers, template, records, sampling, seed=0, step=step)
            if step:
                seconds.append(time.perf_counter() - start)
                tokens += sum(len(r.completion.token_ids) for r in responses)
        weights = AutoModelForImageTextToText.from_pretrained(model).state_dict()
        start = time.perf_counter()
        workers.update_weights(ray.put(weights))
        synced = time.perf_counter() - start
    finally:
        workers.shutdown()
    return {
        "start_s": round(started, 2),
        "rollout_s": [round(s, 2) for s in seconds],
        "rollout_mean_s": round(statistics.fmean(seconds), 2),
        "tokens_per_s": round(tokens / sum(seconds), 1),
        "weight_sync_s": round(synced, 3),
        "weights_mb": round(sum(t.numel() * t.element_size() for t in weights.values()) / 1e6, 2),
    }


def build_engine(name: str, model: Path) -> object:
    """The recipe's engine option `name` on `model`, built in this process."""
    cfg = compose_recipe(
        "testbed_critic_grpo", [f"engine@rollout.component={name}", f"critic.model_path={model}"]
    )
    return instantiate(cfg.rollout.component)


def sync_scaling(root: Path, max_hidden: int) -> list[dict]:
    """`update_weights` time of each engine on random VLMs of growing width (4 layers)."""
    tokenizer = build_tokenizer("byte")
    rows, hidden = [], 128
    while hidden <= max_hidden:
        config = TinyVLMConfig(
            family="qwen3_vl",
            hidden_size=hidden,
            num_layers=4,
            num_heads=hidden // 32,
            num_kv_heads=max(1, hidden // 64),
            intermediate_size=2 * hidden,
        )
        path = build_tiny_vlm(root / f"hidden_{hidden}", tokenizer, config)
        weights = AutoModelForImageTextToText.from_pretrained(path).state_dict()
        row = {
            "hidden": hidden,
            "weights_mb": round(
                sum(t.numel() * t.element_size() for t in weights.values()) / 1e6, 1
            ),
        }
        for name in ENGINES:
            engine = build_engine(name, path)
            start = time.perf_counter()
            engine.update_weights(weights)
            row[f"{name}_sync_s"] = round(time.perf_counter() - start, 3)
            del engine
            gc.collect()  # one in-process vLLM engine at a time
        rows.append(row)
        hidden *= 2
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rollouts timed per engine")
    parser.add_argument("--records", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8, help="responses per record (G)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--sync-max-hidden", type=int, default=1024)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        records_path = Path(tmp) / "critic_rl.parquet"
        prepare_critic_inputs(
            f"{tmp}/tiny",
            str(records_path),
            TestbedGenerator(image_size=48, misrender_prob=0.7, artifact_prob=0.2),
            num_tasks=60,
            synonym_rate=0.4,
            vlm_config=MAIN_JOB_CRITIC,
        )
        records = load_critic_records(records_path)[: args.records]
        model = Path(tmp) / "tiny" / "qwen3_vl"
        results = {engine: measure(engine, model, records, args) for engine in ENGINES}
        ray.shutdown()
        scaling = sync_scaling(Path(tmp) / "sync", args.sync_max_hidden)
    transformers, vllm = (results[e]["rollout_mean_s"] for e in ENGINES)
    print(
        json.dumps(
            {
                "shape": {
                    "records": len(records),
                    "samples": args.samples,
                    "max_new_tokens": args.max_new_tokens,
                },
                "engines": results,
                "rollout_speedup_vllm_over_transformers": round(transformers / vllm, 2),
                "weight_sync_by_size": scaling,
            }
        )
    )


if __name__ == "__main__":
    main()
