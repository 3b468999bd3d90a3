"""What a trained testbed critic writes on held-out failed steps, and what its refinements do.

    python benchmarks/critic_refinements.py MODEL RECORDS.parquet [--samples 1] [--limit 128]
        [--misrender-prob 0.7] [--artifact-prob 0.2]

RECORDS is a Critic-SFT or Critic-RL file of the data build (e.g. `.../critic_sft/eval.parquet`);
only its failed-labeled rows are used. Each gets `--samples` answers (1: greedy; more: sampled
at temperature 1, as GRPO's rollout does). Of the answers that say "failed", it counts those
whose refinement means what the original instruction asked (`canonicalize` of both agree on
the before-scene), those in core words only, those that repeat the prompt used, and those whose
re-render (at seed 0: one draw of the generator's chance, where the step-wise reward draws a
seed per record and step) reaches full semantic consistency; plus the step-wise reward's mean
`sem`. Prints one JSON object on its last line. (`reward_headroom.py`: the reward of reference
refinements over many draws.)

This separates the refinement's *content* from the verdict and from the scene description, the
three things the critic's SFT target mixes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from itk_rl.data.critic_records import load_critic_records
from itk_rl.formats import build_critic_messages, load_template, parse_critic_output
from itk_rl.formats.records import CriticSample
from itk_rl.interfaces.engine import ChatRequest, SamplingParams
from itk_rl.interfaces.generator import RenderRequest
from itk_rl.rewards.critic import stepwise_reward
from itk_rl.rollout.hf_engine import TransformersEngine
from itk_rl.testbed import TestbedGenerator, TestbedJudge
from itk_rl.testbed.lexicon import FULL_LEXICON
from itk_rl.testbed.parser import canonicalize
from itk_rl.testbed.render import decode
from itk_rl.testbed.scene import Scene


def _meaning(text: str, before: Scene) -> str | None:
    try:
        return canonicalize(text, before)
    except ValueError:
        return None


def _core_only(text: str) -> bool:
    words = FULL_LEXICON.words
    return all(w not in words or words[w].core for w in text.replace(",", " ").split())


def tally(
    records: Sequence[CriticSample],
    answers: Sequence[Sequence[str]],
    generator: TestbedGenerator,
    judge: TestbedJudge,
) -> dict[str, Any]:
    """The figures of the module docstring for `answers[i]`, the critic's texts for
    `records[i]` (failed-labeled records)."""
    num_answers = rejections = 0
    counts = dict.fromkeys(
        ("meaning_right", "core_words_only", "repeats_used_prompt", "renders_right"), 0
    )
    sems: list[float] = []
    for record, texts in zip(records, answers, strict=True):
        before = None if record.text_to_image else record.origin_image
        references = () if before is None else (before,)
        scene = decode(record.origin_image)  # once per record, not per answer
        wanted = _meaning(record.origin_prompt, scene)
        for text in texts:
            num_answers += 1
            verdict = parse_critic_output(text).value
            if verdict is None or verdict.success:
                continue
            rejections += 1
            refined = verdict.refine_prompt.strip() or record.rewritten_prompt
            render = RenderRequest(prompt=refined, references=references, seed=0)
            score = judge.score(record.origin_prompt, generator([render])[0], before)
            counts["meaning_right"] += wanted is not None and _meaning(refined, scene) == wanted
            counts["core_words_only"] += _core_only(refined)
            counts["repeats_used_prompt"] += refined == record.rewritten_prompt
            counts["renders_right"] += score.semantics >= 10.0
            sems.append(stepwise_reward(record, score)[0])
    return {
        "records": len(records),
        "answers": num_answers,
        "says_failed": rejections / num_answers if num_answers else None,
        **{k: v / rejections if rejections else None for k, v in counts.items()},
        "mean_sem": float(np.mean(sems)) if sems else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="exported critic (save_pretrained folder)")
    parser.add_argument("records", help="Critic-SFT or Critic-RL parquet file")
    parser.add_argument("--samples", type=int, default=1, help="answers per record (1: greedy)")
    parser.add_argument("--limit", type=int, default=128, help="failed records used")
    parser.add_argument("--template", default="critic_testbed")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--misrender-prob", type=float, default=0.7)
    parser.add_argument("--artifact-prob", type=float, default=0.2)
    args = parser.parse_args()

    failed = [r for r in load_critic_records(args.records) if not r.evaluation.success]
    failed = failed[: args.limit]
    template = load_template(args.template)
    requests = [
        ChatRequest(
            tuple(build_critic_messages(template, r.origin_prompt, r.rewritten_prompt)),
            (r.origin_image, r.edited_image),
            seed=i,
        )
        for i, r in enumerate(failed)
    ]
    greedy = args.samples == 1
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=0.0 if greedy else 1.0, n=args.samples
    )
    engine = TransformersEngine(args.model, device="cpu")
    generator = TestbedGenerator(
        misrender_prob=args.misrender_prob, artifact_prob=args.artifact_prob
    )
    judge = TestbedJudge()

    answers = [[c.text for c in completions] for completions in engine.generate(requests, params)]
    print(json.dumps({"model": args.model, **tally(failed, answers, generator, judge)}))


if __name__ == "__main__":
    main()
