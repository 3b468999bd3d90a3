"""Judges: score a rendered image 0–10 for semantic consistency (SC) and perceptual quality (PQ).

Every judge has one method, `score_batch(instructions, afters, befores)`, with parallel lists;
a `befores` entry of None means text-to-image. Backends:

- `itk_rl.testbed.judge.TestbedJudge`: exact scores in the testbed world (used as it is);
- `VLMJudge` over any `VLMEngine`: a local model (transformers, vLLM) or, with
  `itk_rl.rollout.http_engine.OpenAIChatEngine`, an API model — the same class.

A judgement the model answered unreadably is None in the returned list, never a made-up score:
the driver retries those items (a sampled judge may answer differently; a greedy one needs a
new seed) and then drops the sample from the update and counts it (DESIGN §1). Engine failures
(a server down) raise from `engine.generate` for the whole batch. Judges are plain objects;
putting them in Ray actors with declared resources is the actor layer's business.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from itk_rl.formats.envelope import (
    ParseResult,
    failure,
    parse_envelope_object,
    success,
)
from itk_rl.formats.images import check_image
from itk_rl.formats.score import JudgeScore
from itk_rl.formats.templates import PromptTemplate, chat_messages, check_role, load_template
from itk_rl.interfaces.engine import ChatRequest, SamplingParams, VLMEngine

log = logging.getLogger(__name__)

# The scores each prompt asks for; SC or PQ is the minimum of them (VIEScore).
EDIT_KEYS = ("edit_success", "over_editing")
TEXT_TO_IMAGE_KEYS = ("prompt_following",)
QUALITY_KEYS = ("naturalness", "artifacts")

_SCORE_TEXT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*$")  # "7", "7.5", "7/10"


@dataclass(frozen=True)
class Judgement:
    """One item's full judgement, for logging: the score (None if either part was unreadable)
    and the parsed SC and PQ answers with their sub-scores, reasoning and errors."""

    score: JudgeScore | None
    semantics: ParseResult[dict[str, float]]
    quality: ParseResult[dict[str, float]]


def parse_judge_answer(text: str, keys: Sequence[str]) -> ParseResult[dict[str, float]]:
    """Read `{key: score, …}` from a `<think>…</think><answer>{json}</answer>` output.

    Lenient like the agents' parsers (missing tags, repairable JSON, a one-element list, a
    score written as "7" or "7/10" are repaired and noted); never raises. Hopeless — value None
    with the reason in `error` — when a key is missing or a score is not a number in 0–10:
    such an answer is not guessed at.
    """
    data, repairs, think, error = parse_envelope_object(text)
    if error:
        return failure(text, error, repairs, think)
    scores: dict[str, float] = {}
    for key in keys:
        if key not in data:
            return failure(text, f"the answer JSON has no {key}", repairs, think)
        value = _as_score(data[key])
        if value is None:
            return failure(
                text, f"{key} must be a number from 0 to 10, got {data[key]!r}", repairs, think
            )
        if not isinstance(data[key], (int, float)):
            repairs.append(f"{key} was the text {data[key]!r}, read as {value:g}")
        scores[key] = value
    return success(text, scores, repairs, think)


def _as_score(value: Any) -> float | None:
    """A 0–10 score from a JSON number or a numeric text; None if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        match = _SCORE_TEXT.match(value)
        if not match:
            return None
        value = float(match.group(1))
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value) if 0.0 <= value <= 10.0 else None


class VLMJudge:
    """A VIEScore-style judge asking a vision-language model two questions per image.

    SC: for an edit, from (instruction, before, after), min(edit_success, over_editing); for
    text-to-image, prompt_following on the after-image. PQ: from the after-image alone,
    min(naturalness, artifacts). Both questions of a whole batch go to the engine in one
    `generate` call, so a vLLM or HTTP engine batches them.

    Templates are packaged names or paths (roles `judge_semantics` / `judge_quality`, checked).
    Greedy decoding by default: a judge should be repeatable. An API judge is the same class
    with the HTTP engine; as a recipe:

        judge:
          _target_: itk_rl.rewards.judges.VLMJudge
          engine:
            _target_: itk_rl.rollout.http_engine.OpenAIChatEngine
            base_url: https://api.example.com/v1
            model: some-vision-model
            api_key_env: JUDGE_API_KEY
          max_new_tokens: 1024
    """

    def __init__(
        self,
        engine: VLMEngine,
        edit_template: str | Path = "judge_edit",
        text_to_image_template: str | Path = "judge_text_to_image",
        quality_template: str | Path = "judge_quality",
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        seed: int | None = 0,
    ) -> None:
        self.engine = engine
        self.edit_template = _load(edit_template, "judge_semantics")
        self.text_to_image_template = _load(text_to_image_template, "judge_semantics")
        self.quality_template = _load(quality_template, "judge_quality")
        self.params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)
        self.seed = seed

    def score_batch(
        self,
        instructions: Sequence[str],
        afters: Sequence[np.ndarray],
        befores: Sequence[np.ndarray | None] | None = None,
    ) -> list[JudgeScore | None]:
        """Scores in input order; None where the model's answer could not be read (logged)."""
        return [j.score for j in self.judge_batch(instructions, afters, befores)]

    def judge_batch(
        self,
        instructions: Sequence[str],
        afters: Sequence[np.ndarray],
        befores: Sequence[np.ndarray | None] | None = None,
    ) -> list[Judgement]:
        """Like `score_batch`, with the parsed answers kept (sub-scores, reasoning, errors)."""
        befores = list(befores) if befores is not None else [None] * len(instructions)
        if not len(instructions) == len(afters) == len(befores):
            raise ValueError(
                f"VLMJudge.score_batch needs equal lengths, got {len(instructions)} "
                f"instructions, {len(afters)} afters, {len(befores)} befores"
            )
        requests: list[ChatRequest] = []
        for i, (text, after, before) in enumerate(zip(instructions, afters, befores, strict=True)):
            if not isinstance(text, str):
                raise TypeError(f"instructions[{i}] must be a str, got {type(text).__name__}")
            check_image(after, f"afters[{i}]")
            if before is not None:
                check_image(before, f"befores[{i}]")
            requests += [self._semantics_request(text, after, before), self._quality_request(after)]
        if not requests:
            return []
        completions = self.engine.generate(requests, self.params)
        if len(completions) != len(requests) or any(not c for c in completions):
            raise RuntimeError(
                f"VLMJudge: the engine returned {len(completions)} completion lists for "
                f"{len(requests)} requests (or an empty one); expected one completion each"
            )
        judgements = []
        for i, before in enumerate(befores):
            sc_keys = TEXT_TO_IMAGE_KEYS if before is None else EDIT_KEYS
            sc = parse_judge_answer(completions[2 * i][0].text, sc_keys)
            pq = parse_judge_answer(completions[2 * i + 1][0].text, QUALITY_KEYS)
            score = None
            if sc.value is not None and pq.value is not None:
                score = JudgeScore(min(sc.value.values()), min(pq.value.values()))
            else:
                for part, parsed in (("semantics", sc), ("quality", pq)):
                    if parsed.value is None:
                        log.warning(
                            "VLMJudge: unreadable %s judgement for item %d (%s): %r",
                            part,
                            i,
                            parsed.error,
                            parsed.raw[:200],
                        )
            judgements.append(Judgement(score, sc, pq))
        return judgements

    def _semantics_request(
        self, instruction: str, after: np.ndarray, before: np.ndarray | None
    ) -> ChatRequest:
        """Edit: images (before, after); text-to-image: the after-image only."""
        template = self.text_to_image_template if before is None else self.edit_template
        images = (after,) if before is None else (before, after)
        return self._request(template, images, instruction=instruction)

    def _quality_request(self, after: np.ndarray) -> ChatRequest:
        return self._request(self.quality_template, (after,))

    def _request(
        self, template: PromptTemplate, images: tuple[np.ndarray, ...], **values: str
    ) -> ChatRequest:
        system, user = template.render(**values)
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": user}]
        return ChatRequest(tuple(chat_messages(system, content)), images, self.seed)


def _load(name_or_path: str | Path, role: str) -> PromptTemplate:
    template = load_template(name_or_path)
    check_role(template, role)
    return template
