"""Does the tiny critic (or planner) learn on the testbed with the recipe's defaults?

    RAY_AUTH_MODE=disabled python benchmarks/sft_testbed.py [--recipe testbed_critic_sft]
        [--out DIR] [hydra overrides …]

Runs the recipe (its `prepare` first, timed apart: the data build and the tiny models), then
prints one JSON object on its last line: wall times, the held-out loss curve, and the greedy
generation check of the exported weights — parse and format-valid rates, exact matches and, for
the critic, how often the verdict and the reasoning (the `<think>` text: a scene description
with `scene_think` targets) are right.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from itk_rl.formats import parse_critic_output
from itk_rl.sft import sft


def critic_scores(examples: list[dict]) -> dict[str, float]:
    """Verdict and reasoning accuracy of the checked outputs against their targets."""
    verdict = think = 0
    for example in examples:
        output, target = (parse_critic_output(example[k]) for k in ("output", "target"))
        if output.value is not None:
            verdict += output.value.success == target.value.success
        think += output.think == target.think
    n = max(len(examples), 1)
    return {"verdict_accuracy": verdict / n, "think_accuracy": think / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="testbed_critic_sft")
    parser.add_argument("--out", default="outputs/bench_sft_testbed")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with initialize_config_module("itk_rl.recipes", version_base="1.3"):
        cfg = compose(args.recipe, overrides=[f"output_dir={args.out}", *args.overrides])
    start = time.perf_counter()
    if cfg.prepare is not None:
        instantiate(cfg.prepare)
    prepared = time.perf_counter()
    final = sft(cfg)
    done = time.perf_counter()
    run = Path(final).parent
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    curve = [[r["step"], round(r["eval/loss"], 4)] for r in records if "eval/loss" in r]
    check = json.loads((run / "eval.json").read_text())
    result = {
        "recipe": args.recipe,
        "prepare_s": round(prepared - start, 1),
        "run_s": round(done - prepared, 1),
        "train_step_s": round(sum(r.get("perf/sft_step_s", 0.0) for r in records), 1),
        "steps": records[-1]["step"],
        "eval_loss_first": curve[0][1],
        "eval_loss_last": curve[-1][1],
        "eval_loss_curve": curve,
        "check_prompts": check["prompts"],
        "parsed_rate": check["parsed_rate"],
        "format_valid_rate": check["format_valid_rate"],
        "exact_match_rate": check["exact_match_rate"],
    }
    if "critic" in args.recipe:
        result |= critic_scores(check["examples"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
