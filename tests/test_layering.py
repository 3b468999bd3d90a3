"""The import arrows docs/architecture.md states, checked on every module of the package.

Libraries import only the layers beneath them; drivers (the modules at the root of itk_rl/ and
`itk generate`) may import anything. Imports under `if TYPE_CHECKING:` are type hints, not
arrows, and are not checked.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Folder → the package it imports as (setup.py's package_dir).
SOURCES = {"itk_rl": "itk_rl", "rollout": "itk_rl.rollout", "rewards": "itk_rl.rewards"}
DRIVERS = "drivers"
# Each library package → what it may import besides itself (docs/architecture.md, "Layers").
ALLOWED: dict[str, set[str]] = {
    "compat": set(),
    "formats": set(),
    "tiny": set(),
    "interfaces": {"formats"},
    "trainer": {"formats", "interfaces"},
    "rollout": {"formats", "interfaces"},
    "rewards": {"formats", "interfaces", "rollout"},
    "pipeline": {"formats", "interfaces"},
    "data": {"formats", "interfaces", "pipeline", "rewards", "rollout"},
    "testbed": {"formats", "interfaces", "tiny", "data"},
    "eval": {"formats", "interfaces", "pipeline", "rollout", "testbed"},
}
# Modules inside a library folder that are drivers all the same.
DRIVER_MODULES = {"itk_rl.pipeline.generate", "itk_rl.eval.command"}


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [SOURCES[folder], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    """The package a module belongs to (`itk_rl.X.…` → X); root modules are drivers."""
    parts = module.split(".")
    if module in DRIVER_MODULES or (len(parts) > 1 and parts[1] not in ALLOWED):
        return DRIVERS
    return parts[1] if len(parts) > 1 else "itk_rl"


def runtime_imports(path: Path, module: str) -> list[tuple[int, str]]:
    """Every `itk_rl.…` module imported by `path`, at any depth, except type-only imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] == "itk_rl"]


def all_modules() -> list[tuple[Path, str]]:
    return [
        (path, module_name(path))
        for folder in SOURCES
        for path in sorted((ROOT / folder).rglob("*.py"))
    ]


def test_every_package_is_placed_in_a_layer():
    packages = {p.parent.name for p in (ROOT / "itk_rl").glob("*/__init__.py")}
    assert packages | {"rollout", "rewards"} == set(ALLOWED), (
        "a new package needs its arrows in ALLOWED and docs/architecture.md"
    )


def test_libraries_import_only_the_layers_beneath_them():
    wrong = []
    for path, module in all_modules():
        source = layer_of(module)
        if source in (DRIVERS, "itk_rl"):
            continue
        for line, target in runtime_imports(path, module):
            layer = layer_of(target)
            if layer == "itk_rl" or layer == source or layer in ALLOWED[source]:
                continue
            wrong.append(f"{path.relative_to(ROOT)}:{line} ({source}) imports {target} ({layer})")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_wrong_arrow(tmp_path):
    """The rule is not vacuous: an upward import in a library module is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from itk_rl.train import train\n")
    assert runtime_imports(bad, "itk_rl.formats.bad") == [(2, "itk_rl.train")]
    assert layer_of("itk_rl.train") == DRIVERS not in ALLOWED["formats"]


@pytest.mark.parametrize("module", ["itk_rl.formats", "itk_rl.interfaces.reward"])
def test_the_data_model_imports_without_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
