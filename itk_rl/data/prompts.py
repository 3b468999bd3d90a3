"""Prompt banks: domains → sub-categories → templates with `{slot}`s, sampled by seed.

The paper synthesises its ~40k requests from 8 domains, ~75 sub-categories and 100+ templates.
A bank is a YAML (or JSON) file of that shape:

    slots:                        # values a `{name}` placeholder is filled with
      colour:
        - [red, crimson, scarlet] # a group: interchangeable spellings, the first the plain one
        - blue                    # a single spelling
    domains:
      editing:                    # domain
        recolour:                 # sub-category: a list of templates
          - "draw a {colour} circle on the left, then make the circle {colour#2}"

`{name}` repeated in a template takes the same value each time; `{name#2}`, `{name#3}` take
values from the same list that differ from `{name}` and from each other (distinct groups, so
`crimson` never stands in for "another colour than red"). Within a group, a synonym is chosen
with probability `synonym_rate` instead of the plain spelling.

Prompt `index` of a sampler depends only on (seed, index): a domain uniformly, a sub-category
of it uniformly, a template of that uniformly, then the slots — so a larger build extends a
smaller one with the same prompts, and resuming a build re-derives exactly the same prompts.

`expand_bank` asks any VLM engine (an API teacher) for more templates per sub-category and
keeps only the lines that use known slots.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from itk_rl.interfaces.engine import ChatRequest, SamplingParams, VLMEngine

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:#(\d+))?\}")
BANKS_PACKAGE = "itk_rl.data"


@dataclass(frozen=True)
class PromptBank:
    """`slots[name]` = groups of spellings; `domains[domain][sub_category]` = templates."""

    slots: Mapping[str, tuple[tuple[str, ...], ...]]
    domains: Mapping[str, Mapping[str, tuple[str, ...]]]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if not self.domains:
            raise ValueError(f"prompt bank {self.source}: no domains")
        for domain, subs in self.domains.items():
            if not subs:
                raise ValueError(f"prompt bank {self.source}: domain {domain!r} is empty")
            for sub, templates in subs.items():
                if not templates:
                    raise ValueError(f"prompt bank {self.source}: {domain}/{sub} has no templates")
                for template in templates:
                    self.check_template(template, f"{domain}/{sub}")

    def check_template(self, template: str, where: str) -> None:
        """ValueError naming the template if it uses an unknown slot or too many distinct ones."""
        wanted: dict[str, set[int]] = {}
        for match in PLACEHOLDER.finditer(template):
            name, number = match.group(1), int(match.group(2) or 1)
            if name not in self.slots:
                raise ValueError(
                    f"prompt bank {self.source}: {where} template {template!r} uses unknown "
                    f"slot {name!r} (known: {sorted(self.slots)})"
                )
            wanted.setdefault(name, set()).add(number)
        for name, numbers in wanted.items():
            if len(numbers) > len(self.slots[name]):
                raise ValueError(
                    f"prompt bank {self.source}: {where} template {template!r} needs "
                    f"{len(numbers)} distinct {name!r} values, the slot has {len(self.slots[name])}"
                )

    @property
    def num_templates(self) -> int:
        return sum(len(t) for subs in self.domains.values() for t in subs.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "slots": {name: [list(g) for g in groups] for name, groups in self.slots.items()},
            "domains": {
                d: {s: list(t) for s, t in subs.items()} for d, subs in self.domains.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> PromptBank:
        if not isinstance(data, dict) or not {"slots", "domains"} <= set(data):
            raise ValueError(f"prompt bank {source}: expected an object with slots and domains")
        slots = {}
        for name, values in data["slots"].items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"prompt bank {source}: slot {name!r} must be a non-empty list")
            groups = tuple(
                tuple(str(v) for v in g) if isinstance(g, list) else (str(g),) for g in values
            )
            slots[str(name)] = groups
        domains = {
            str(d): {str(s): tuple(str(t) for t in templates) for s, templates in subs.items()}
            for d, subs in data["domains"].items()
        }
        return cls(slots, domains, source)


def load_bank(name_or_path: str | Path) -> PromptBank:
    """A packaged bank by name (`itk_rl/data/banks/<name>.yaml`) or a YAML/JSON file path."""
    import yaml

    packaged = resources.files(BANKS_PACKAGE) / "banks" / f"{name_or_path}.yaml"
    if isinstance(name_or_path, str) and "/" not in name_or_path and packaged.is_file():
        text, source = packaged.read_text(encoding="utf-8"), str(packaged)
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"prompt bank {str(path)!r} not found (not a packaged name)")
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        data = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except ValueError as error:  # yaml.YAMLError is not a ValueError; handled below
        raise ValueError(f"prompt bank {source}: not JSON ({error})") from error
    except yaml.YAMLError as error:
        raise ValueError(f"prompt bank {source}: not YAML ({error})") from error
    return PromptBank.from_dict(data, source)


@dataclass(frozen=True)
class Prompt:
    """One synthesised request: its id (the trajectory folder's name), text and provenance.

    `seed` is the pipeline's base seed for this request (renders and agent calls derive theirs).
    """

    id: str
    text: str
    domain: str
    sub_category: str
    template: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fill(
    template: str,
    slots: Mapping[str, Sequence[Sequence[str]]],
    rng: np.random.Generator,
    synonym_rate: float,
) -> str:
    """`template` with every placeholder filled (rules in the module docstring)."""
    chosen: dict[tuple[str, int], str] = {}
    by_name: dict[str, list[int]] = {}
    for match in PLACEHOLDER.finditer(template):
        numbers = by_name.setdefault(match.group(1), [])
        number = int(match.group(2) or 1)
        if number not in numbers:
            numbers.append(number)
    for name, numbers in by_name.items():
        groups = slots[name]
        picks = rng.choice(len(groups), size=len(numbers), replace=False)
        for number, pick in zip(numbers, picks, strict=True):
            group = groups[int(pick)]
            word = group[0]
            if len(group) > 1 and rng.random() < synonym_rate:
                word = group[1 + int(rng.integers(len(group) - 1))]
            chosen[(name, number)] = word
    return PLACEHOLDER.sub(lambda m: chosen[(m.group(1), int(m.group(2) or 1))], template)


@dataclass
class PromptSampler:
    """Samples `Prompt`s from a bank; prompt `index` depends only on (seed, index).

    Args:
        bank: a packaged bank name, a file path, or a `PromptBank`.
        seed: base seed of the sampling and of each prompt's pipeline seed.
        synonym_rate: chance that a slot group's synonym is used instead of its plain word.
    """

    bank: str | PromptBank
    seed: int = 0
    synonym_rate: float = 0.0
    _bank: PromptBank = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.synonym_rate <= 1.0:
            raise ValueError(f"prompts.synonym_rate must be in [0, 1], got {self.synonym_rate}")
        self._bank = self.bank if isinstance(self.bank, PromptBank) else load_bank(self.bank)

    def prompt(self, index: int) -> Prompt:
        rng = np.random.default_rng([self.seed, index])
        domains = sorted(self._bank.domains)
        domain = domains[int(rng.integers(len(domains)))]
        subs = sorted(self._bank.domains[domain])
        sub = subs[int(rng.integers(len(subs)))]
        templates = self._bank.domains[domain][sub]
        template = templates[int(rng.integers(len(templates)))]
        text = fill(template, self._bank.slots, rng, self.synonym_rate)
        seed = int(rng.integers(2**31))
        return Prompt(f"{index:06d}", text, domain, sub, template, seed)

    def sample(self, count: int, start: int = 0) -> list[Prompt]:
        return [self.prompt(index) for index in range(start, start + count)]


EXPAND_REQUEST = (
    "You write request templates for an image-generation agent.\n"
    "Domain: {domain}. Sub-category: {sub_category}.\n"
    "Examples:\n{examples}\n"
    "Slots you may use, in braces: {slots}. Write {count} new, different templates in the "
    "same style, one per line, with no numbering and no other text."
)


@dataclass
class ExpansionReport:
    """How many template lines the teacher wrote, kept, and rejected (with why, a few each)."""

    asked: int = 0
    kept: int = 0
    rejected: int = 0
    examples_rejected: list[str] = field(default_factory=list)


def expand_bank(
    bank: PromptBank,
    engine: VLMEngine,
    per_sub_category: int,
    sampling: SamplingParams | None = None,
    seed: int = 0,
) -> tuple[PromptBank, ExpansionReport]:
    """Ask `engine` for `per_sub_category` more templates for every sub-category.

    All sub-categories go in one `generate` call (an HTTP or vLLM engine batches them). A line
    is kept when it has a placeholder, uses only known slots, and is new; bad lines are
    counted, never guessed at. The bank's own templates are always kept.
    """
    params = sampling or SamplingParams(max_new_tokens=1024, temperature=1.0)
    keys = [(d, s) for d in sorted(bank.domains) for s in sorted(bank.domains[d])]
    requests = []
    for index, (domain, sub) in enumerate(keys):
        text = EXPAND_REQUEST.format(
            domain=domain,
            sub_category=sub,
            examples="\n".join(bank.domains[domain][sub]),
            slots=", ".join("{" + name + "}" for name in sorted(bank.slots)),
            count=per_sub_category,
        )
        messages = ({"role": "user", "content": [{"type": "text", "text": text}]},)
        requests.append(ChatRequest(messages, (), seed=seed + index))
    answers = engine.generate(requests, params)
    report = ExpansionReport(asked=per_sub_category * len(keys))
    domains = {d: dict(subs) for d, subs in bank.domains.items()}
    for (domain, sub), completions in zip(keys, answers, strict=True):
        templates = list(domains[domain][sub])
        lines = [line.strip(" -*\t").strip() for line in completions[0].text.splitlines()]
        for line in [line for line in lines if line][:per_sub_category]:
            try:
                if not PLACEHOLDER.search(line) or line in templates:
                    raise ValueError("no slot placeholder, or a duplicate")
                bank.check_template(line, f"{domain}/{sub}")
            except ValueError as error:
                report.rejected += 1
                if len(report.examples_rejected) < 5:
                    report.examples_rejected.append(f"{line!r}: {error}")
                continue
            templates.append(line)
            report.kept += 1
        domains[domain][sub] = tuple(templates)
    return PromptBank(bank.slots, domains, f"{bank.source} (expanded)"), report
