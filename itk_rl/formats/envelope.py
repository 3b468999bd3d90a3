"""Splitting `<think>…</think><answer>{json}</answer>` model outputs, leniently but never silently.

Planner and critic answers come from sampled models, so they are often slightly broken: a
missing closing tag, a trailing comma, a code fence. We repair what can be repaired (JSON via
`json_repair`) and record every repair as a human-readable note, because the format reward and
the evaluation counts need to know exactly what was wrong. Nothing here raises on bad model
output: hopeless cases come back as a `ParseResult` with `value=None` and an `error`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import json_repair

T = TypeVar("T")

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


@dataclass(frozen=True)
class ParseResult(Generic[T]):
    """The outcome of parsing one model output.

    `value` is None only when the output is hopeless (then `error` says why). `format_valid` is
    the strict criterion: `<think>` precedes `<answer>` and the answer is strict JSON of the
    right schema and types — it is True only when `repairs` is empty and `value` is set.
    """

    value: T | None
    format_valid: bool
    repairs: tuple[str, ...] = ()
    error: str | None = None
    think: str = ""
    raw: str = ""

    @property
    def ok(self) -> bool:
        """Whether a usable value came out (possibly after repairs)."""
        return self.value is not None

    def to_json_dict(self, value_to_dict: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
        """A JSON-ready dict; the value is converted with `value_to_dict`."""
        return {
            "raw": self.raw,
            "think": self.think,
            "format_valid": self.format_valid,
            "repairs": list(self.repairs),
            "error": self.error,
            "value": None if self.value is None else value_to_dict(self.value),
        }

    @classmethod
    def from_json_dict(
        cls, data: dict[str, Any], value_from_dict: Callable[[dict[str, Any]], T]
    ) -> ParseResult[T]:
        """Inverse of `to_json_dict`; raises KeyError naming a missing field."""
        value = data["value"]
        return cls(
            value=None if value is None else value_from_dict(value),
            format_valid=bool(data["format_valid"]),
            repairs=tuple(str(r) for r in data["repairs"]),
            error=data["error"],
            think=str(data["think"]),
            raw=str(data["raw"]),
        )


def failure(
    raw: Any, error: str, repairs: list[str] | tuple[str, ...] = (), think: str = ""
) -> ParseResult[Any]:
    """A hopeless `ParseResult` (value None)."""
    raw_text = raw if isinstance(raw, str) else repr(raw)
    return ParseResult(None, False, tuple(repairs), error, think, raw_text)


def never_raising(parse: Callable[[str], ParseResult[T]], text: str) -> ParseResult[T]:
    """`parse(text)`, with any exception turned into a hopeless result: a parser bug must not
    kill a rollout or a pipeline run; it is reported as an error instead."""
    try:
        return parse(text)
    except Exception as exc:
        return failure(text, f"internal parser error ({type(exc).__name__}: {exc})")


def success(raw: str, value: T, repairs: list[str], think: str) -> ParseResult[T]:
    """A usable `ParseResult`; format-valid exactly when nothing was repaired."""
    return ParseResult(value, not repairs, tuple(repairs), None, think, raw)


@dataclass(frozen=True)
class Envelope:
    """The think text and the answer text of one output, with the repairs made to find them."""

    think: str
    answer: str
    repairs: tuple[str, ...]
    error: str | None = None


def split_envelope(text: str) -> Envelope:
    """Find the think block and the answer block, noting every deviation from the strict form."""
    if not isinstance(text, str):
        return Envelope("", "", (), f"output is not a string (got {type(text).__name__})")
    s = text.strip()
    if not s:
        return Envelope("", "", (), "output is empty")
    repairs: list[str] = []
    t_open = s.find(THINK_OPEN)
    a_open = s.find(ANSWER_OPEN)
    answer_first = a_open != -1 and t_open != -1 and a_open < t_open
    t_close = s.find(THINK_CLOSE, max(t_open, 0))

    # The think block.
    if t_open != -1 and t_close != -1:
        think, think_end = s[t_open + len(THINK_OPEN) : t_close], t_close + len(THINK_CLOSE)
        if s[:t_open].strip() and not answer_first:
            repairs.append("ignored text before <think>")
    elif t_open != -1:
        repairs.append("missing </think> closing tag")
        nxt = s.find(ANSWER_OPEN, t_open)
        think_end = nxt if nxt != -1 else len(s)
        think = s[t_open + len(THINK_OPEN) : think_end]
    elif t_close != -1 and not answer_first:
        repairs.append("missing <think> opening tag")
        think, think_end = s[:t_close], t_close + len(THINK_CLOSE)
    else:
        repairs.append("missing <think> block")
        think, think_end = "", 0

    # The answer block: after the think block, else (noted) before it.
    start = s.find(ANSWER_OPEN, think_end)
    if start == -1 and a_open != -1:
        repairs.append("<answer> came before <think>")
        start = a_open
    elif start != -1 and s[think_end:start].strip():
        repairs.append("ignored text between </think> and <answer>")
    if start != -1:
        body = start + len(ANSWER_OPEN)
        end = s.find(ANSWER_CLOSE, body)
        if end == -1:
            repairs.append("missing </answer> closing tag")
            answer = s[body:]
            if answer_first and t_open != -1:
                answer = s[body:t_open]
        else:
            answer = s[body:end]
            tail = s[end + len(ANSWER_CLOSE) :]
            if tail.strip() and not answer_first:
                repairs.append("ignored text after </answer>")
    else:
        end = s.find(ANSWER_CLOSE, think_end)
        if end != -1:
            repairs.append("missing <answer> opening tag")
            answer = s[think_end:end]
        else:
            repairs.append("missing <answer> block")
            answer = s[think_end:]
    return Envelope(think.strip(), answer.strip(), tuple(repairs))


_FENCE = re.compile(r"^```[A-Za-z]*[ \t]*\n?(.*?)\n?[ \t]*(```)?$", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*[}\]]")
_UNQUOTED_KEY = re.compile(r"[{,]\s*[A-Za-z_][\w-]*\s*:")
_PY_LITERAL = re.compile(r"(?<![\w\"])(True|False|None)(?![\w\"])")
_MISSING_COMMA = re.compile(r"(\"S\"|\d|[}\]]|true|false|null)\s+(\"S\"|[{\[])")


def _blank_strings(text: str) -> tuple[str, bool, bool, int | None]:
    """Replace every string literal by `"S"` so structure can be checked with regexes.

    Returns (blanked text, saw single-quoted strings, a string is unterminated, index just past
    the first top-level container or None if it never closes).
    """
    out: list[str] = []
    single = unterminated = False
    depth, end = 0, None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            single = single or c == "'"
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            unterminated = unterminated or j >= n
            out.append('"S"')
            i = j + 1
            continue
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0 and end is None:
                end = i + 1
        out.append(c)
        i += 1
    return "".join(out), single, unterminated, end


def _describe_json_problems(text: str) -> list[str]:
    """Name what is wrong with JSON text that strict `json.loads` rejected."""
    blanked, single, unterminated, end = _blank_strings(text)
    notes = []
    if single:
        notes.append("converted single-quoted strings to double quotes")
    if _UNQUOTED_KEY.search(blanked):
        notes.append("quoted unquoted keys")
    if _PY_LITERAL.search(blanked):
        notes.append("converted Python literals (True/False/None) to JSON")
    if _TRAILING_COMMA.search(blanked):
        notes.append("removed trailing comma")
    if _MISSING_COMMA.search(blanked):
        notes.append("inserted missing comma")
    if unterminated:
        notes.append("closed unterminated string")
    elif end is None:
        notes.append("closed unclosed brackets")
    elif text[end:].strip():
        notes.append("ignored text after the JSON")
    return notes


def parse_json_answer(answer: str) -> tuple[Any, list[str], str | None]:
    """Parse the answer text as JSON, strictly if possible, else with json-repair.

    Returns (value, repair notes, error); value is None exactly when error is set.
    """
    repairs: list[str] = []
    a = answer.strip()
    if a.startswith("```"):
        match = _FENCE.match(a)
        if match:
            a = match.group(1).strip()
            repairs.append("stripped code fence around the JSON")
    if not a:
        return None, repairs, "the answer is empty"
    try:
        return json.loads(a), repairs, None
    except (ValueError, RecursionError):
        pass
    starts = [i for i in (a.find("{"), a.find("[")) if i != -1]
    if not starts:
        return None, repairs, f"the answer contains no JSON object: {_preview(a)}"
    start = min(starts)
    if a[:start].strip():
        repairs.append("ignored text before the JSON")
    body = a[start:]
    problems = _describe_json_problems(body)
    try:
        value = json_repair.repair_json(body, return_objects=True)
    except Exception as exc:  # json_repair is third-party; a crash must not escape
        return None, repairs, f"json-repair failed ({type(exc).__name__}): {_preview(a)}"
    if not isinstance(value, (dict, list)):
        return None, repairs, f"the answer is not repairable JSON: {_preview(a)}"
    repairs.extend(problems or ["repaired malformed JSON"])
    return value, repairs, None


def parse_envelope_json(text: str) -> tuple[Any, list[str], str, str | None]:
    """`split_envelope`, then `parse_json_answer` on the answer block.

    Returns (value, repair notes of both steps, think text, error); on error the output is
    hopeless and value is None.
    """
    env = split_envelope(text)
    repairs = list(env.repairs)
    if env.error:
        return None, repairs, env.think, env.error
    data, json_repairs, error = parse_json_answer(env.answer)
    return data, repairs + json_repairs, env.think, error


def parse_envelope_object(text: str) -> tuple[dict[str, Any] | None, list[str], str, str | None]:
    """`parse_envelope_json` for answers that must be one JSON object; a one-element list
    around it is unwrapped (noted), anything else that is not an object is an error."""
    data, repairs, think, error = parse_envelope_json(text)
    if error:
        return None, repairs, think, error
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        repairs.append("unwrapped a one-element list around the answer object")
        data = data[0]
    if not isinstance(data, dict):
        return None, repairs, think, f"the answer JSON is not an object (got {type(data).__name__})"
    return data, repairs, think, None


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def format_envelope(think: str, answer: dict[str, Any] | list[Any]) -> str:
    """Render the strict form `<think>…</think><answer>{json}</answer>` (targets for SFT)."""
    body = json.dumps(answer, ensure_ascii=False)
    return f"{THINK_OPEN}{think}{THINK_CLOSE}{ANSWER_OPEN}{body}{ANSWER_CLOSE}"
