"""The benchmark judges' prompt templates: our own wording, asking for each benchmark's official
answer format, so the official parsing rules read our judges' answers.

The file layout is the project's (`itk_rl.formats.templates`): a `role:` line, then a system
and a user section of `string.Template` text. The role names the judge call a template serves,
and each role has its placeholders. A recipe may replace a packaged template by a path, e.g. a
file holding the official prompt text rewritten in this layout to reproduce official numbers;
the file must declare the role it replaces.
"""

from __future__ import annotations

import string
from importlib import resources
from pathlib import Path

from itk_rl.formats.templates import PromptTemplate

# Role → (placeholders it must use, placeholders it may use). Images and interleaved content
# are attached by the harness after the user text, in the order each module's docs give.
JUDGE_ROLES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "wise_legacy": (frozenset({"prompt"}), frozenset({"explanation"})),
    "wise_verified": (frozenset({"prompt"}), frozenset({"explanation"})),
    "rise_consistency": (frozenset({"instruction"}), frozenset()),
    "rise_reasoning": (frozenset({"instruction", "reference"}), frozenset()),
    "rise_reasoning_image": (frozenset({"instruction"}), frozenset()),
    "rise_plausibility": (frozenset(), frozenset()),
    "rise_logical_consistency": (frozenset({"instruction"}), frozenset()),
    "rise_logical_reasoning": (frozenset({"instruction", "reference"}), frozenset()),
    "rise_logical_reasoning_image": (frozenset({"instruction"}), frozenset()),
    "ueval_text": (frozenset({"question", "text_answer", "criterion"}), frozenset()),
    "ueval_image_open": (frozenset({"question", "text_answer", "criterion"}), frozenset()),
    "ueval_image_closed": (frozenset({"question", "criterion"}), frozenset()),
    "comm_coherence": (frozenset(), frozenset({"title"})),
    "comm_descriptions": (frozenset(), frozenset({"title"})),
    "comm_fidelity": (frozenset(), frozenset()),
}

_SYSTEM = "=== system ==="
_USER = "=== user ==="


def load_judge_template(role: str, path: str | Path | None = None) -> PromptTemplate:
    """The packaged template for `role`, or the file at `path` (which must declare `role`).

    Raises KeyError for an unknown role, FileNotFoundError naming a missing file, and
    ValueError naming the file when its layout, role or placeholders are wrong.
    """
    if role not in JUDGE_ROLES:
        raise KeyError(f"unknown benchmark judge role {role!r}; known: {', '.join(JUDGE_ROLES)}")
    if path is None:
        resource = resources.files("itk_rl.eval.benchmarks") / "templates" / f"{role}.txt"
        return parse_judge_template(resource.read_text(encoding="utf-8"), role, str(resource))
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"judge template {str(path)!r} (role {role}) not found")
    return parse_judge_template(path.read_text(encoding="utf-8"), role, str(path))


def parse_judge_template(text: str, role: str, source: str) -> PromptTemplate:
    """Parse a template's text and check it serves `role`; `source` names it in errors."""
    first, _, body = text.partition("\n")
    declared = first.strip().removeprefix("role:").strip() if first.startswith("role:") else None
    if declared != role:
        raise ValueError(f"judge template {source}: first line must be 'role: {role}'")
    if body.count(_SYSTEM) != 1 or body.count(_USER) != 1:
        raise ValueError(f"judge template {source}: needs one {_SYSTEM!r} then one {_USER!r} line")
    before, _, rest = body.partition(_SYSTEM)
    system, _, user = rest.partition(_USER)
    if before.strip() or _USER in before:
        raise ValueError(f"judge template {source}: text before {_SYSTEM!r}")
    template = PromptTemplate(Path(source).stem, role, source, system.strip(), user.strip())
    required, optional = JUDGE_ROLES[role]
    used = _placeholders(template.system, source) | _placeholders(template.user, source)
    if required - used:
        missing = ", ".join("$" + p for p in sorted(required - used))
        raise ValueError(f"judge template {source}: role {role} must use {missing}")
    if used - required - optional:
        unknown = ", ".join("$" + p for p in sorted(used - required - optional))
        allowed = ", ".join("$" + p for p in sorted(required | optional)) or "none"
        raise ValueError(f"judge template {source}: unknown {unknown} (role {role}: {allowed})")
    return template


def _placeholders(text: str, source: str) -> set[str]:
    names = set()
    for match in string.Template.pattern.finditer(text):
        if match.group("invalid") is not None:
            raise ValueError(f"judge template {source}: stray '$' (write $$ for a dollar sign)")
        if match.group("named") or match.group("braced"):
            names.add(match.group("named") or match.group("braced"))
    return names
