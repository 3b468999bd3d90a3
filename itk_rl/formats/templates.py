"""Prompt templates for the planner, the critic and the VLM judge, as plain text files.

A checkpoint only works with the prompts it was trained on, so templates are files a user can
point at (`load_template("path/to/critic.txt")`) as well as packaged ones (`"critic"`). A file
declares its role on the first line and has a system and a user section:

    role: critic
    === system ===
    …text…
    === user ===
    …text with $original_prompt and $used_prompt…

Both sections are `string.Template` texts (JSON examples keep their braces; write `$$` for a
literal dollar sign). The images go before the user text, in the order the builders document.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

# Placeholders each role must use, and the ones it may use.
ROLE_PLACEHOLDERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "planner": (frozenset({"request"}), frozenset({"num_images"})),
    "critic": (frozenset({"original_prompt", "used_prompt"}), frozenset()),
    # The judge's semantic consistency (SC) sees the instruction; its perceptual quality (PQ)
    # must not, since PQ is judged on the image alone.
    "judge_semantics": (frozenset({"instruction"}), frozenset()),
    "judge_quality": (frozenset(), frozenset()),
}

_SYSTEM_MARK = "=== system ==="
_USER_MARK = "=== user ==="


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded template: its role, where it came from, and its two sections."""

    name: str
    role: str
    source: str
    system: str
    user: str

    def render(self, **values: str) -> tuple[str, str]:
        """(system text, user text) with the placeholders filled in."""
        return (
            string.Template(self.system).substitute(values),
            string.Template(self.user).substitute(values),
        )


def packaged_template_names() -> list[str]:
    """Names of the templates shipped with itk_rl (the file names without `.txt`)."""
    folder = resources.files("itk_rl.formats") / "templates"
    return sorted(p.name[: -len(".txt")] for p in folder.iterdir() if p.name.endswith(".txt"))


def load_template(name_or_path: str | Path) -> PromptTemplate:
    """Load a packaged template by name (e.g. "critic") or a template file by path.

    Raises FileNotFoundError naming the path and the packaged names when nothing is found, and
    ValueError naming the file when it is malformed or misses a required placeholder.
    """
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError(f"name_or_path must be a str or Path, got {type(name_or_path).__name__}")
    text_name = str(name_or_path)
    packaged = packaged_template_names()
    if isinstance(name_or_path, str) and text_name in packaged:
        resource = resources.files("itk_rl.formats") / "templates" / f"{text_name}.txt"
        return parse_template(resource.read_text(encoding="utf-8"), text_name, str(resource))
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"prompt template {str(path)!r} not found (not a file); "
            f"packaged templates: {', '.join(packaged)}"
        )
    return parse_template(path.read_text(encoding="utf-8"), path.stem, str(path))


def parse_template(text: str, name: str, source: str) -> PromptTemplate:
    """Parse and validate a template's text; `source` names it in errors."""
    lines = text.splitlines()
    first = lines[0].strip() if lines else ""
    if not first.startswith("role:"):
        raise ValueError(f"prompt template {source}: first line must be 'role: <role>'")
    role = first[len("role:") :].strip()
    if role not in ROLE_PLACEHOLDERS:
        raise ValueError(
            f"prompt template {source}: unknown role {role!r}, expected one of "
            f"{sorted(ROLE_PLACEHOLDERS)}"
        )
    body = "\n".join(lines[1:])
    if body.count(_SYSTEM_MARK) != 1 or body.count(_USER_MARK) != 1:
        raise ValueError(
            f"prompt template {source}: needs exactly one {_SYSTEM_MARK!r} line "
            f"followed by one {_USER_MARK!r} line"
        )
    before, _, rest = body.partition(_SYSTEM_MARK)
    system, _, user = rest.partition(_USER_MARK)
    if before.strip() or _USER_MARK in before:
        raise ValueError(f"prompt template {source}: text before {_SYSTEM_MARK!r}")
    template = PromptTemplate(name, role, source, system.strip(), user.strip())
    required, optional = ROLE_PLACEHOLDERS[role]
    used = _placeholders(template.system, source) | _placeholders(template.user, source)
    missing = sorted(required - used)
    if missing:
        raise ValueError(
            f"prompt template {source}: missing required placeholder "
            f"{', '.join('$' + p for p in missing)} (a {role} template must use "
            f"{', '.join('$' + p for p in sorted(required))})"
        )
    unknown = sorted(used - required - optional)
    if unknown:
        allowed = ", ".join("$" + p for p in sorted(required | optional))
        raise ValueError(
            f"prompt template {source}: unknown placeholder {', '.join('$' + p for p in unknown)}"
            f" (a {role} template may use {allowed})"
        )
    return template


def _placeholders(text: str, source: str) -> set[str]:
    """Names used as $name / ${name}; a stray `$` is an error naming the template."""
    names = set()
    for match in string.Template.pattern.finditer(text):
        if match.group("invalid") is not None:
            line = text.count("\n", 0, match.start()) + 1
            raise ValueError(
                f"prompt template {source}: stray '$' in line {line} of a section "
                "(write $$ for a literal dollar sign)"
            )
        name = match.group("named") or match.group("braced")
        if name:
            names.add(name)
    return names


def check_role(template: PromptTemplate, role: str) -> None:
    """Fail early when a planner template is handed to the critic or vice versa."""
    if template.role != role:
        raise ValueError(
            f"prompt template {template.source} has role {template.role!r}, expected {role!r}"
        )


def chat_messages(system: str, user_content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A system message (only when the template has one) and the user message."""
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append({"role": "user", "content": user_content})
    return messages
