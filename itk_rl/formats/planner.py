"""The planner's side of the text format: its chat messages, its answer parser, its SFT target.

Answer schema (InterleaveThinker): `{"execution_plan": [{"step_number", "step_name",
"instruction", "prompt", "auxiliary_text"}, …]}`. Parsing policy, chosen so one bad step does
not waste a whole plan but every deviation is counted:

- a step that is not an object, or has a missing/null/blank `prompt`, is dropped with a repair note
  (the generator cannot run without a prompt); a plan left with no steps is hopeless;
- a missing or null text field becomes "" and a non-string one is converted, each noted;
- steps are sorted by `step_number` and renumbered 1..n only when they are not already, noted;
- a bare list of steps is read as the `execution_plan`, noted.
"""

from __future__ import annotations

from typing import Any

from itk_rl.formats.envelope import (
    ParseResult,
    failure,
    format_envelope,
    never_raising,
    parse_envelope_json,
    success,
)
from itk_rl.formats.plan import Plan, Step
from itk_rl.formats.templates import PromptTemplate, chat_messages, check_role

TEXT_FIELDS = ("step_name", "instruction", "prompt", "auxiliary_text")


def parse_planner_output(text: str) -> ParseResult[Plan]:
    """Parse a planner output leniently; never raises on malformed output."""
    return never_raising(_parse, text)


def _parse(text: str) -> ParseResult[Plan]:
    data, repairs, think, error = parse_envelope_json(text)
    if error:
        return failure(text, error, repairs, think)
    if isinstance(data, list):
        repairs.append("read a bare list of steps as execution_plan")
        items = data
    elif isinstance(data, dict) and "execution_plan" in data:
        items = data["execution_plan"]
    else:
        return failure(text, "the answer JSON has no execution_plan", repairs, think)
    if not isinstance(items, list):
        got = type(items).__name__
        return failure(text, f"execution_plan is not a list (got {got})", repairs, think)

    steps: list[tuple[Any, dict[str, str]]] = []
    for position, item in enumerate(items, start=1):
        label = f"step {position}"
        if not isinstance(item, dict):
            repairs.append(f"dropped {label}: not an object")
            continue
        prompt = item.get("prompt")
        if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
            repairs.append(f"dropped {label}: no prompt")
            continue
        fields: dict[str, str] = {}
        for key in TEXT_FIELDS:
            value = item.get(key)
            if value is None:
                what = "missing" if key not in item else "null"
                repairs.append(f"{label}: {key} was {what}, used empty text")
                value = ""
            elif not isinstance(value, str):
                repairs.append(f"{label}: {key} was a {type(value).__name__}, converted to text")
                value = str(value)
            fields[key] = value
        steps.append((item.get("step_number"), fields))
    if not steps:
        return failure(text, "the plan has no usable steps", repairs, think)

    numbers = [_as_int(number) for number, _ in steps]
    if any(type(n) is not int for n, _ in steps):
        repairs.append("step_number missing or not an integer in some steps")
    known = [n for n in numbers if n is not None]
    if len(known) == len(numbers) and len(set(known)) == len(known):
        order = sorted(range(len(known)), key=known.__getitem__)
        if order != list(range(len(known))):
            repairs.append("sorted steps by step_number")
            steps = [steps[i] for i in order]
            known = [known[i] for i in order]
    if known != list(range(1, len(steps) + 1)):
        repairs.append("renumbered steps 1..n")
    plan = Plan(tuple(Step(step_number=i, **f) for i, (_, f) in enumerate(steps, start=1)))
    return success(text, plan, repairs, think)


def _as_int(value: Any) -> int | None:
    """An integer step number, accepting "2" and 2.0 (the caller notes the repair)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def build_planner_messages(
    request_text: str, num_input_images: int, template: PromptTemplate
) -> list[dict[str, Any]]:
    """Chat messages for the planner in the transformers multimodal format.

    The user message holds `num_input_images` image slots, then the request text; the caller
    passes the images to the processor separately, in the same order.
    """
    check_role(template, "planner")
    if not isinstance(request_text, str):
        raise TypeError(f"request_text must be a str, got {type(request_text).__name__}")
    if isinstance(num_input_images, bool) or not isinstance(num_input_images, int):
        raise TypeError(f"num_input_images must be an int, got {type(num_input_images).__name__}")
    if num_input_images < 0:
        raise ValueError(f"num_input_images must be >= 0, got {num_input_images}")
    system, user = template.render(request=request_text, num_images=str(num_input_images))
    content = [{"type": "image"} for _ in range(num_input_images)]
    return chat_messages(system, [*content, {"type": "text", "text": user}])


def format_planner_answer(plan: Plan, think: str) -> str:
    """The strict target text for a plan (planner SFT); parses back format-valid."""
    return format_envelope(think, plan.to_dict())
