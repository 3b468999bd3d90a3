"""Scripted planner and critic for the testbed: honest stand-ins for trained models.

They implement `VLMEngine`, read their chat exactly as a model would (the prompt template's
user text, the images in the request) and answer in the real `<think>…</think><answer>…
</answer>` format through `format_planner_answer` / `format_critic_answer`, so the inference
pipeline, its parsers and its run folder run on a CPU without any trained model.

- `TestbedScriptedPlanner` splits a testbed request into its clauses and answers with the
  ground-truth plan (what `TaskSampler` would have written for it).
- `TestbedOracleCritic` decodes the before and after images, scores the after-image against
  the step's *original* prompt with the exact judge, and on failure answers with the original
  prompt rewritten in core words (`canonicalize`): the refinement a perfect critic writes. With
  `canonical_rate` < 1 it is a teacher that does not know the generator's vocabulary: some
  refinements are paraphrases spelling each word with any of its spellings, core or synonym,
  which the generator may misrender again.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from itk_rl.formats import (
    CriticVerdict,
    Plan,
    PromptTemplate,
    Step,
    format_critic_answer,
    format_planner_answer,
    load_template,
)
from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams, check_batch
from itk_rl.testbed.edits import apply
from itk_rl.testbed.judge import TestbedJudge
from itk_rl.testbed.lexicon import FULL_LEXICON
from itk_rl.testbed.parser import canonicalize, format_edit, parse_instruction
from itk_rl.testbed.render import decode, describe_image
from itk_rl.testbed.scene import Scene, describe


def _user_text(request: ChatRequest) -> str:
    """The text parts of the last user message, joined."""
    users = [m for m in request.messages if m.get("role") == "user"]
    if not users:
        raise ValueError("the conversation has no user message")
    content = users[-1]["content"]
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content if part.get("type") == "text")


def _template_pattern(text: str) -> re.Pattern[str]:
    """A regex matching `text` (a template section) rendered with any values, capturing each
    placeholder by name: how a scripted agent reads the fields back out of its prompt."""
    parts: list[str] = []
    seen: set[str] = set()
    position = 0
    for match in string.Template.pattern.finditer(text):
        parts.append(re.escape(text[position : match.start()]))
        position = match.end()
        name = match.group("named") or match.group("braced")
        if name is None:  # `$$`, a literal dollar sign
            parts.append(re.escape("$"))
        elif name in seen:
            parts.append(f"(?P={name})")
        else:
            seen.add(name)
            parts.append(f"(?P<{name}>.*?)")
    parts.append(re.escape(text[position:]))
    return re.compile("".join(parts), re.DOTALL)


def _read_fields(template: PromptTemplate, request: ChatRequest) -> dict[str, str]:
    """The placeholder values the user text was rendered with; ValueError if it does not fit."""
    text = _user_text(request)
    match = _template_pattern(template.user).fullmatch(text)
    if match is None:
        raise ValueError(
            f"the user message does not follow prompt template {template.source}: {text[:80]!r}"
        )
    return match.groupdict()


def _as_template(template: str | PromptTemplate) -> PromptTemplate:
    return template if isinstance(template, PromptTemplate) else load_template(template)


def _answer(requests: Sequence[ChatRequest], params: SamplingParams, fn: Any) -> list:
    """`params.n` identical completions per request: a scripted agent is deterministic."""
    check_batch(requests, params)
    return [[Completion(text=fn(request))] * params.n for request in requests]


class TestbedScriptedPlanner:
    """Answers a testbed request with its ground-truth plan; implements `VLMEngine`.

    A request is an optional opener up to a colon, then instructions separated by commas, the
    last maybe after "then" — the form `TaskSampler` writes. With an input image the plan
    starts from its decoded scene. A request outside the grammar gets an empty plan and a
    reasoning that says why: the pipeline then reports the planner output as unusable.

    Args:
        template: the planner prompt template the pipeline uses, to read the request back.
    """

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, template: str | PromptTemplate = "planner") -> None:
        self.template = _as_template(template)

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        return _answer(requests, params, self.respond)

    def respond(self, request: ChatRequest) -> str:
        text = _read_fields(self.template, request)["request"]
        start = decode(request.images[0]) if request.images else Scene.empty()
        try:
            plan = plan_request(text, start)
        except ValueError as error:
            return format_planner_answer(Plan(()), f"I cannot plan this request: {error}")
        think = f"The request has {len(plan.steps)} instruction(s); one step each."
        return format_planner_answer(plan, think)


def plan_request(text: str, start: Scene | None = None) -> Plan:
    """The ground-truth plan of a testbed request; ValueError naming the clause that fails."""
    _, colon, rest = text.partition(":")
    body = rest if colon else text
    clauses = [c.strip() for c in body.strip().rstrip(".").split(",")]
    clauses = [c[len("then ") :] if c.startswith("then ") else c for c in clauses]
    if not any(clauses):
        raise ValueError(f"no instructions in {text!r}")
    scene = start or Scene.empty()
    steps = []
    for number, clause in enumerate(clauses, start=1):
        try:
            scene = apply(parse_instruction(clause), scene, strict=True)
        except ValueError as error:
            raise ValueError(f"instruction {number} ({clause!r}): {error}") from None
        steps.append(
            Step(
                step_number=number,
                step_name=_step_name(clause),
                instruction=clause[0].upper() + clause[1:] + ".",
                prompt=clause,
                auxiliary_text=describe(scene),
            )
        )
    return Plan(tuple(steps))


def _step_name(clause: str) -> str:
    """A short title: the clause up to its first place phrase ("Draw a crimson disc")."""
    head = re.split(r" (?:on|in|at|to) the ", clause, maxsplit=1)[0]
    return head[0].upper() + head[1:]


class TestbedOracleCritic:
    """Judges a testbed step exactly and refines failed prompts into core words; a `VLMEngine`.

    Success means semantic consistency 10 and perceptual quality at least `min_quality` for the
    step's original prompt (not the one used, which may already be rewritten). An original
    prompt outside the grammar, or one that does not apply to the before-image, cannot be
    judged; the answer is then `true` with a reasoning saying so (re-rendering cannot help).

    Args:
        template: the critic prompt template the pipeline uses, to read the prompts back.
        min_quality: lowest perceptual quality (0–10) accepted.
        canonical_rate: chance that a refinement is written in core words; otherwise it is a
            paraphrase (`paraphrase`; decided per request from its seed, so a run is
            repeatable). At 0 the teacher is blind to the generator's vocabulary, as the
            paper's teachers are: its refinements are right in meaning, and whether they
            render right is left to the generator.
    """

    __test__ = False  # not a pytest class, despite the name

    def __init__(
        self,
        template: str | PromptTemplate = "critic_testbed",
        min_quality: float = 10.0,
        canonical_rate: float = 1.0,
    ) -> None:
        if not 0.0 <= canonical_rate <= 1.0:
            raise ValueError(f"canonical_rate must be in [0, 1], got {canonical_rate}")
        self.template = _as_template(template)
        self.min_quality = min_quality
        self.canonical_rate = canonical_rate
        self.judge = TestbedJudge()

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        return _answer(requests, params, self.respond)

    def respond(self, request: ChatRequest) -> str:
        return format_critic_answer(self.verdict(request))

    def verdict(self, request: ChatRequest) -> CriticVerdict:
        fields = _read_fields(self.template, request)
        if len(request.images) != 2:
            got = len(request.images)
            raise ValueError(f"the critic needs 2 images (before, after), got {got}")
        before, after = request.images
        original, used = fields["original_prompt"], fields["used_prompt"]
        before_scene = decode(before)
        seen = f"I see: {describe_image(after)}."
        try:
            expected = apply(parse_instruction(original), before_scene, strict=True)
            score = self.judge.score(original, after, before)
        except ValueError as error:
            return CriticVerdict(True, "", f"{seen} I cannot judge this instruction: {error}")
        if score.semantics >= 10.0 and score.quality >= self.min_quality:
            return CriticVerdict(True, "", f"{seen} This is what was asked.")
        reasoning = (
            f"{seen} Expected: {describe(expected)}. Semantics {score.semantics:.1f}/10, "
            f"quality {score.quality:.1f}/10."
        )
        rng = np.random.default_rng(request.seed or 0)
        try:
            refined = canonicalize(original, before_scene)
            if rng.random() >= self.canonical_rate:
                refined = paraphrase(refined, rng)
        except ValueError:
            refined = used
        return CriticVerdict(False, refined, reasoning)


def paraphrase(text: str, rng: np.random.Generator) -> str:
    """`text` (absolute places) with every attribute word spelled with a random one of its
    spellings, the core word included: the same meaning, written by someone who does not know
    which words the generator knows (so some paraphrases happen to be all core words)."""

    def choose(kind: str, value: str | int, plural: bool) -> str:
        spellings = (FULL_LEXICON.spell(kind, value, plural),)
        spellings += FULL_LEXICON.synonyms(kind, value, plural)
        return spellings[int(rng.integers(len(spellings)))]

    return format_edit(parse_instruction(text, FULL_LEXICON), choose)


class TestbedSamplingCritic:
    """A critic whose `n` answers to a request differ, with token ids: a stand-in for a trained
    critic's rollouts where only the pipeline's timing is measured (`benchmarks/
    pipeline_overlap.py`, renders dominating). A random tiny critic writes unparseable answers,
    so a group re-renders one prompt and the pool deduplicates it; here each answer is a
    teacher's verdict (`TestbedOracleCritic` with `canonical_rate`, seeded per answer), so a
    failed step's refinements are paraphrased differently within its group and each is rendered.

    Token ids are the answer's text through the critic's tokenizer (`tokenizer_path`), so GRPO
    can update on them; there are no log-probs and no weights (`update_weights` does nothing).
    """

    __test__ = False

    def __init__(
        self,
        tokenizer_path: str,
        template: str | PromptTemplate = "critic_testbed",
        canonical_rate: float = 0.0,
    ) -> None:
        from transformers import AutoTokenizer

        self.teacher = TestbedOracleCritic(template, canonical_rate=canonical_rate)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        check_batch(requests, params)
        out = []
        for request in requests:
            base = (request.seed or 0) * params.n
            texts = [self.teacher.respond(replace(request, seed=base + i)) for i in range(params.n)]
            out.append([Completion(text, tuple(self._ids(text))) for text in texts])
        return out

    def update_weights(self, state_dict: Any) -> None:
        """A scripted critic has no weights to load."""

    def _ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return (
            [*ids, self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else ids
        )
