"""How high the critic GRPO reward can go on the main job's Critic-RL records: its ceiling.

    python benchmarks/reward_headroom.py RECORDS.parquet [--draws 4] [--alpha 0.2] [--seed 0]

RECORDS is a Critic-RL file of the data build (the main job's: DATA/critic_rl/train.parquet).
Each record is answered by reference critics that always give the right verdict and differ only
in the refinement they write for a failed step:

    core_words   the instruction rewritten in the generator's core words (`canonicalize`):
                 the best refinement the testbed knows, what a generator-aware critic writes
    paraphrase   the same meaning in other words (`paraphrase`, as the blind teacher writes)
    re_roll      no refinement: the prompt used is rendered again (`refined_prompt_to_render`)

and by two constant critics: `always_success` and `always_failed` (the latter re-rolls, too).
Every re-render is the step-wise reward's: the main job's world (`recipes/demo.yaml`), the
record's before-image, judged against the original prompt, at `--draws` seeds per record (the
reward draws a new seed per record and step, `render_seed_for`). Each critic's mean reward and
parts are printed, per label too, as one JSON object.

The training reward of a GRPO run (`reward/total` in its log) is the mean over sampled
responses on records drawn from this same file, so these means bound it: the gap between the
SFT critic's first steps and `core_words` is what GRPO has to climb.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hydra.utils import instantiate

from itk_rl.critic_grpo_rewards import rerender_inputs
from itk_rl.data.critic_records import load_critic_records
from itk_rl.formats import CriticVerdict, format_critic_answer, parse_critic_output
from itk_rl.formats.records import CriticSample
from itk_rl.interfaces.reward import RewardInputs
from itk_rl.job import compose_recipe
from itk_rl.rewards.critic import CriticReward, refined_prompt_to_render
from itk_rl.testbed import TestbedGenerator, TestbedJudge
from itk_rl.testbed.agents import paraphrase
from itk_rl.testbed.parser import canonicalize
from itk_rl.testbed.render import decode

Refiner = Callable[[CriticSample, np.random.Generator], str]


def _core_words(record: CriticSample, rng: np.random.Generator) -> str:
    """The instruction in core words; "" (re-roll) where it cannot be parsed, as the testbed's
    oracle critic does."""
    try:
        return canonicalize(record.origin_prompt, decode(record.origin_image))
    except ValueError:
        return ""


def _paraphrase(record: CriticSample, rng: np.random.Generator) -> str:
    core = _core_words(record, rng)
    return paraphrase(core, rng) if core else ""


CRITICS: dict[str, tuple[bool | None, Refiner | None]] = {
    "core_words": (None, _core_words),
    "paraphrase": (None, _paraphrase),
    "re_roll": (None, None),
    "always_success": (True, None),
    "always_failed": (False, None),
}
"""Each reference critic: its verdict (None: the record's label) and its refinement of a
step it calls failed (None: none, so the prompt used is rendered again)."""


def answer(record: CriticSample, critic: str, rng: np.random.Generator) -> str:
    """`critic`'s answer to `record`, in the critic's output format."""
    verdict, refiner = CRITICS[critic]
    success = record.evaluation.success if verdict is None else verdict
    refined = "" if success or refiner is None else refiner(record, rng)
    return format_critic_answer(CriticVerdict(success, refined, "reference answer"))


def headroom(
    records: Sequence[CriticSample],
    generator: TestbedGenerator,
    reward: CriticReward,
    draws: int,
    seed: int,
) -> dict[str, Any]:
    """Each critic's mean reward and parts over `records` × `draws` render seeds, overall and
    per label ("success" / "failed")."""
    judge = TestbedJudge()
    rng = np.random.default_rng(seed)
    rewards: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {"success": [], "failed": []} for name in CRITICS
    }
    for record in records:
        label = "success" if record.evaluation.success else "failed"
        render_seeds = rng.integers(0, 2**31, size=draws)
        for name in CRITICS:
            for render_seed in render_seeds:
                text = answer(record, name, rng)
                parsed = parse_critic_output(text)
                score = None
                if reward.needs_rerender and not record.evaluation.success:
                    prompt = refined_prompt_to_render(record, parsed)
                    request, before = rerender_inputs(record, prompt, int(render_seed))
                    image = generator.render_one(request)
                    score = judge.score(record.origin_prompt, image, before)
                out = reward(RewardInputs(record, text, parsed, score))
                rewards[name][label].append({"total": out.total, **out.components})

    def means(rows: list[dict[str, float]]) -> dict[str, float]:
        return {key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0]}

    return {
        name: {
            "all": means(by_label["success"] + by_label["failed"]),
            **{label: means(rows) for label, rows in by_label.items() if rows},
        }
        for name, by_label in rewards.items()
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", help="Critic-RL parquet file")
    parser.add_argument("--draws", type=int, default=4, help="render seeds per record")
    parser.add_argument("--alpha", type=float, default=0.2, help="the reward's alpha")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws and paraphrases")
    args = parser.parse_args(argv)
    if args.draws < 1:
        parser.error(f"--draws must be at least 1, got {args.draws}")
    records = load_critic_records(args.records)
    generator = instantiate(compose_recipe("demo", []).world)
    summary = headroom(records, generator, CriticReward(alpha=args.alpha), args.draws, args.seed)
    labels = [r.evaluation.success for r in records]
    print(
        json.dumps(
            {
                "records": args.records,
                "rows": len(records),
                "success_share": round(float(np.mean(labels)), 4),
                "draws": args.draws,
                "alpha": args.alpha,
                "critics": summary,
            }
        )
    )


if __name__ == "__main__":
    main()
