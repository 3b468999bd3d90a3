"""Write docs/config-reference.md from the comments in the recipes.

Why generated: every recipe key has a comment above it (STYLE 7), and that comment is the one
place where its meaning is kept. A reference written by hand would drift away from it; this
script pairs each key with the comment lines above it, and tests/test_config_reference.py fails
when the checked-in file differs from what the script writes now.

    .venv/bin/python scripts/config_reference.py           # rewrite docs/config-reference.md
    .venv/bin/python scripts/config_reference.py --check   # exit 1 when it is out of date

How a key gets its description (read line by line, with PyYAML giving the structure):
- the comment block directly above the key (no blank line between them);
- else, when the line above is not blank, the description of the key just above: the previous
  sibling, or the parent for a first child (`sampling:` under its comment, then `n:`), so a
  comment can cover a short run of keys; a blank line ends the run;
- a file's opening comment block describes the whole file; when it runs straight into a key,
  its last sentence that starts a line is that key's (the whole block when it has one sentence),
  except for `defaults` and `_target_`.
Keys that share a description are shown in one row. `defaults` is listed as what the recipe
composes; the `hydra` block (where Hydra keeps its own record of a run) is left out.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
OUTPUT = ROOT / "docs" / "config-reference.md"

# Each driver and the top-level recipes it takes (`--config-name`). A top-level recipe missing
# here is an error, so a new recipe cannot be left out of the reference.
DRIVERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "Data build",
        "python -m itk_rl.build_data --config-name RECIPE",
        ("data_testbed", "data_real"),
    ),
    (
        "SFT",
        "python -m itk_rl.sft --config-name RECIPE",
        ("testbed_critic_sft", "testbed_planner_sft", "critic_sft", "planner_sft"),
    ),
    (
        "Critic GRPO",
        "python -m itk_rl.train --config-name RECIPE",
        ("testbed_critic_grpo", "critic_grpo"),
    ),
    ("The main job", "python -m itk_rl.demo", ("demo",)),
    (
        "Interleaved generation",
        'itk generate "REQUEST" --config-name RECIPE',
        ("generate_testbed", "generate_tiny", "generate_real"),
    ),
    (
        "Benchmarks",
        "itk eval BENCHMARK (recipe eval_BENCHMARK)",
        ("eval_wise", "eval_wise_verified", "eval_rise", "eval_ueval", "eval_comm"),
    ),
)
SKIPPED = ("defaults", "hydra")  # top-level keys not listed in the tables
# What Hydra's own keys mean, for those with no comment of their own.
HYDRA_MEANINGS = {
    "_target_": "The class or function built from this node (Hydra).",
    "_partial_": "Built as a partial: the code adds the remaining arguments at run time (Hydra).",
}


@dataclass(frozen=True)
class Entry:
    """One key of a recipe file.

    key: dotted path inside the file (`rollout.sampling.n`; list items as `overrides[3]`).
    value: the value's source text for a leaf, None for a mapping (a section).
    group: first line of the comment block describing it, None when nothing does.
    """

    key: str
    value: str | None
    group: int | None


@dataclass(frozen=True)
class RecipeFile:
    """A parsed recipe file: its description, what it composes, its keys and their comments."""

    path: Path
    header: str
    defaults: tuple[str, ...]
    entries: tuple[Entry, ...]
    comments: dict[int, str]

    def rows(self) -> list[tuple[list[Entry], str]]:
        """Table rows in file order: the entries sharing a description, and that description.

        A row shows the group's leaves; a group made of sections only shows the sections.
        Leaves with no description get a row each with an empty description.
        """
        listed = [e for e in self.entries if e.key.split(".")[0].split("[")[0] not in SKIPPED]
        rows: list[tuple[list[Entry], str]] = []
        seen: set[int] = set()
        for entry in listed:
            if entry.group is None:
                if entry.value is not None:
                    name = entry.key.rsplit(".", 1)[-1]
                    rows.append(([entry], HYDRA_MEANINGS.get(name, "")))
                continue
            if entry.group in seen:
                continue
            seen.add(entry.group)
            members = [e for e in listed if e.group == entry.group]
            leaves = [e for e in members if e.value is not None]
            if not leaves and self.comments[entry.group] == self.header:
                continue  # a section under the file's header: said once, above the table
            rows.append((leaves or members, self.comments[entry.group]))
        return rows

    def undocumented(self) -> list[str]:
        """Leaf keys (outside `defaults` and `hydra`) that no comment describes."""
        return [
            e.key
            for e in self.entries
            if e.value is not None
            and e.group is None
            and e.key.rsplit(".", 1)[-1] not in HYDRA_MEANINGS
            and e.key.split(".")[0].split("[")[0] not in SKIPPED
        ]


def comment_text(lines: list[str], code_sep: str = " ") -> str:
    """Comment lines as one paragraph. A line indented past `# ` right after a line ending in
    `.` or `:` is a command: it becomes a code span, set apart by `code_sep`."""
    parts: list[str] = []
    previous = ""
    for line in lines:
        body = line.strip()[1:]
        text = body.strip()
        if not text:
            continue
        command = body.startswith("   ") and previous.endswith((".", ":")) and "`" not in text
        parts.append(f"{code_sep}`{text}`{code_sep}" if command else f" {text}")
        previous = text if not command else "."
    return "".join(parts).strip().replace(f"{code_sep} ", code_sep)


def split_header(block: list[str]) -> int:
    """Where a file's opening comment that runs straight into a key stops describing the file:
    at its last line that starts a sentence (the line before ends with `.`), which is that
    key's comment. 0 when there is no such line (the whole block is the file's)."""
    for i in range(len(block) - 1, 0, -1):
        text = block[i].strip()[1:].strip()
        if block[i - 1].rstrip().endswith(".") and text[:1].isupper():
            return i
    return 0


def comment_block_above(lines: list[str], line: int) -> int | None:
    """First line of the comment block directly above `line`, or None."""
    start = line
    while start > 0 and lines[start - 1].lstrip().startswith("#"):
        start -= 1
    return start if start < line else None


def header_block(lines: list[str]) -> tuple[int, int] | None:
    """(first, end) lines of the file's opening comment block, past a `# @package` line; when
    the block runs straight into a key other than `defaults` or `_target_`, its last sentence
    is left to that key (`split_header`)."""
    first = 1 if lines and lines[0].startswith("# @package") else 0
    end = first
    while end < len(lines) and lines[end].startswith("#"):
        end += 1
    if end == first:
        return None
    touches_key = end < len(lines) and lines[end].strip() != ""
    if touches_key and lines[end].startswith(("defaults:", "_target_:")):
        touches_key = False  # listed apart (defaults) or described by the header (_target_)
    cut = split_header(lines[first:end]) if touches_key else 0
    return (first, first + cut) if cut else (first, end)


def source(text: str, node: yaml.Node) -> str:
    """The node's text as written in the file, on one line."""
    return " ".join(text[node.start_mark.index : node.end_mark.index].split())


def parse_recipe(path: Path) -> RecipeFile:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    header = header_block(lines)
    comments: dict[int, str] = {}
    entries: list[Entry] = []

    def describe(line: int, inherited: int | None) -> int | None:
        start = comment_block_above(lines, line)
        if start is not None and header is not None and start <= header[0] < line:
            if header[1] < line:  # the header's last sentence is this key's
                start = header[1]
            elif lines[line].startswith(("defaults:", "_target_:")):
                start = None  # listed apart, or what the whole file builds
            else:  # a header that cannot be split describes the file and its one key
                start = header[0]
        if start is not None:
            end = line
            comments[start] = comment_text(lines[start:end])
            return start
        if line > 0 and lines[line - 1].strip() and not lines[line - 1].lstrip().startswith("#"):
            return inherited
        return None

    def walk(node: yaml.Node, prefix: str, parent_group: int | None) -> None:
        previous = parent_group
        if isinstance(node, yaml.MappingNode):
            items = [(f"{prefix}{k.value}", k.start_mark.line, v) for k, v in node.value]
        else:
            stem = prefix[:-1]
            items = [(f"{stem}[{i}]", v.start_mark.line, v) for i, v in enumerate(node.value)]
        for key, line, value in items:
            group = describe(line, previous)
            nested = isinstance(value, (yaml.MappingNode, yaml.SequenceNode))
            if nested and not value.flow_style and value.value:
                entries.append(Entry(key, None, group))
                walk(value, f"{key}.", group)
            else:
                entries.append(Entry(key, source(text, value), group))
            previous = group

    root = yaml.compose(text)
    defaults: tuple[str, ...] = ()
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "defaults" and isinstance(value, yaml.SequenceNode):
                defaults = tuple(source(text, item) for item in value.value)
        walk(root, "", None)
    return RecipeFile(
        path=path,
        header=comment_text(lines[header[0] : header[1]], "\n\n") if header else "",
        defaults=defaults,
        entries=tuple(entries),
        comments=comments,
    )


def top_level_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def driver_recipes() -> list[str]:
    """Every top-level recipe, in the drivers' order; ValueError if one is unassigned."""
    listed = [name for _, _, names in DRIVERS for name in names]
    present = top_level_recipes()
    unassigned = sorted(set(present) - set(listed))
    gone = sorted(set(listed) - set(present))
    if unassigned or gone:
        raise ValueError(
            f"scripts/config_reference.py DRIVERS is out of date: recipes not assigned to a "
            f"driver {unassigned}, assigned but missing {gone}"
        )
    return listed


def cell(text: str) -> str:
    """Text for a table cell or paragraph: pipes escaped, `<` outside code spans made literal
    (`<think>` in a comment is text, not an HTML tag)."""
    parts = text.replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;")
    return "`".join(parts)


def code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text.replace('|', chr(92) + '|')}{pad}{fence}"


def render_file(recipe: RecipeFile, title: str) -> list[str]:
    relative = recipe.path.relative_to(ROOT).as_posix()
    out = [f"{title} [`{relative}`](../{relative})", ""]
    if recipe.header:
        out += [cell(recipe.header), ""]
    composed = [d for d in recipe.defaults if d != "_self_"]
    if composed:
        out += ["Composes: " + ", ".join(code(d) for d in composed) + ".", ""]
    rows = recipe.rows()
    if rows:
        out += ["| key | value | meaning |", "|---|---|---|"]
        for entries, meaning in rows:
            keys = "<br>".join(code(e.key) for e in entries)
            values = "<br>".join("" if e.value is None else code(e.value) for e in entries)
            out.append(f"| {keys} | {values} | {cell(meaning)} |")
        out.append("")
    return out


def render() -> str:
    """The whole reference, deterministic: recipes in the drivers' order, groups sorted."""
    out = [
        "# Config reference",
        "",
        "<!-- Generated by scripts/config_reference.py from the comments in recipes/; do not",
        "     edit by hand: change the recipe's comment and run the script. -->",
        "",
        "Every key of every recipe, with the comment written above it in the YAML file. Override",
        "any of them on the command line (`key=value`, Hydra syntax). Keys that share one comment",
        "share a row. `Composes` lists the recipe's defaults list: the config-group options it",
        "pulls in, described under [Config groups](#config-groups). The `hydra:` block of each",
        "recipe only keeps Hydra's own record of a run inside `output_dir`, and is left out.",
        "",
    ]
    for title, command, names in DRIVERS:
        out += [f"## {title}", "", f"`{command}`", ""]
        for name in names:
            out += render_file(parse_recipe(RECIPES / f"{name}.yaml"), f"### `{name}`:")
    out += [
        "## Config groups",
        "",
        "A group option's keys are relative to where the recipe's defaults list puts the group:",
        "`- generator: testbed` puts them under `generator`, `- /generator@generator.component:",
        "testbed` under `generator.component`. Files that begin with `# @package _global_` give",
        "full paths. Pick an option on the command line with `GROUP=OPTION` (e.g. `critic=none`);",
        "`_shared/` holds fragments that options include through their own defaults list.",
        "",
    ]
    groups = [p for p in RECIPES.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))]
    for folder in sorted(groups):
        out += [f"### `{folder.name}/`", ""]
        for path in sorted(folder.glob("*.yaml")):
            # `_shared/` holds fragments other files include, not options picked by name.
            sep = "/" if folder.name.startswith("_") else "="
            out += render_file(parse_recipe(path), f"#### `{folder.name}{sep}{path.stem}`:")
    driver_recipes()  # fails when a top-level recipe is not assigned to a driver
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the file differs from what is written"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.is_file() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run scripts/config_reference.py")
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
