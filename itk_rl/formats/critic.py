"""The critic's side of the text format: its chat messages, its verdict parser, its SFT target.

Answer schema: `{"previous_step_success": true|false, "refine_prompt": "…"}`. `format_valid` is
exactly the format reward's criterion (DESIGN §1): `<think>` precedes `<answer>`, the answer
parses as JSON, `previous_step_success` is a bool and `refine_prompt` a string. Anything that
had to be repaired makes it False; a verdict that cannot be read at all (no boolean-like
`previous_step_success`) is hopeless.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from itk_rl.formats.envelope import (
    ParseResult,
    failure,
    format_envelope,
    never_raising,
    parse_envelope_object,
    success,
)
from itk_rl.formats.templates import PromptTemplate, chat_messages, check_role

_TRUE, _FALSE = "true", "false"


@dataclass(frozen=True)
class CriticVerdict:
    """Whether the step succeeded; on failure, the instruction to retry it with.

    `reasoning` is the think text, kept for logging and SFT targets.
    """

    success: bool
    refine_prompt: str
    reasoning: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CriticVerdict:
        return cls(
            success=bool(data["success"]),
            refine_prompt=str(data["refine_prompt"]),
            reasoning=str(data.get("reasoning") or ""),
        )


def parse_critic_output(text: str) -> ParseResult[CriticVerdict]:
    """Parse a critic output leniently; never raises on malformed output."""
    return never_raising(_parse, text)


def _parse(text: str) -> ParseResult[CriticVerdict]:
    data, repairs, think, error = parse_envelope_object(text)
    if error:
        return failure(text, error, repairs, think)
    if "previous_step_success" not in data:
        return failure(text, "the answer JSON has no previous_step_success", repairs, think)

    flag = data["previous_step_success"]
    if isinstance(flag, bool):
        verdict = flag
    elif isinstance(flag, str) and flag.strip().lower() in (_TRUE, _FALSE):
        verdict = flag.strip().lower() == _TRUE
        repairs.append(
            f"previous_step_success was the string {json.dumps(flag)}, read as {_json(verdict)}"
        )
    elif isinstance(flag, (int, float)) and flag in (0, 1):
        verdict = bool(flag)
        repairs.append(
            f"previous_step_success was the number {json.dumps(flag)}, read as {_json(verdict)}"
        )
    else:
        return failure(
            text,
            f"previous_step_success must be true or false, got {json.dumps(flag)}",
            repairs,
            think,
        )

    refine = data.get("refine_prompt")
    if refine is None:
        what = "missing" if "refine_prompt" not in data else "null"
        repairs.append(f"refine_prompt was {what}, used empty text")
        refine = ""
    elif not isinstance(refine, str):
        repairs.append(f"refine_prompt was a {type(refine).__name__}, converted to text")
        refine = str(refine)
    return success(text, CriticVerdict(verdict, refine, think), repairs, think)


def _json(flag: bool) -> str:
    return _TRUE if flag else _FALSE


def build_critic_messages(
    template: PromptTemplate, original_prompt: str, used_prompt: str
) -> list[dict[str, Any]]:
    """Chat messages for the critic in the transformers multimodal format.

    The user message holds two image slots — the image before the step (a white canvas for
    step 1), then the image after it — followed by the text; the caller passes the two images
    to the processor separately, in that order.
    """
    check_role(template, "critic")
    for name, value in (("original_prompt", original_prompt), ("used_prompt", used_prompt)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    system, user = template.render(original_prompt=original_prompt, used_prompt=used_prompt)
    content = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": user}]
    return chat_messages(system, content)


def format_critic_answer(verdict: CriticVerdict) -> str:
    """The strict target text for a verdict (critic SFT); parses back format-valid."""
    answer = {"previous_step_success": verdict.success, "refine_prompt": verdict.refine_prompt}
    return format_envelope(verdict.reasoning, answer)
