"""`itk generate`: compose a recipe, check it and the input, build the pipeline, run into folders.

Everything that can be wrong with the input — an empty request, a missing or unreadable image,
a bad batch line, a model that is neither a folder nor a hub id, a `_target_` that does not
import — fails here, with a message naming it, before any model loads.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from itk_rl.formats import Request, Trajectory
from itk_rl.job import RecipeError, compose_recipe
from itk_rl.pipeline.loop import InterleavePipeline, PipelineError
from itk_rl.pipeline.page import FINISHED
from itk_rl.pipeline.run_folder import RunFolder, read_status, run_into_folder

DEFAULT_RECIPE = "generate_testbed"
AGENTS = ("planner", "critic")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
"""`name` or `org/name`: what a Hugging Face Hub id looks like (no deeper paths)."""
_RUN_ID = re.compile(r"[A-Za-z0-9][\w.-]*")


def _leaves(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every (dotted key, value) under a plain (resolved) container, depth first."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _leaves(child, f"{path}.{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _leaves(child, f"{path}[{index}]")
    else:
        yield path, node


def check_recipe(cfg: DictConfig) -> None:
    """Checks needing no model: every value resolves, every `_target_` imports, every `model`
    is an existing path or a plausible hub id. RecipeError names the config key."""
    from hydra.utils import get_method

    for key in ("pipeline", "generator"):
        if cfg.get(key) is None:
            raise RecipeError(f"the recipe has no {key!r} section")
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise RecipeError(f"recipe value {exc.full_key!r} cannot be resolved: {exc.msg}") from exc
    assert isinstance(plain, dict)
    for top in ("pipeline", "generator", *AGENTS):
        for path, value in _leaves(plain.get(top), top):
            name = path.rsplit(".", 1)[-1]
            if name == "_target_":
                try:
                    get_method(str(value))
                except Exception as exc:
                    raise RecipeError(f"{path}: cannot import {value!r} ({exc})") from exc
            elif name == "model":
                _check_model_id(str(value), path)


def _check_model_id(model: str, key: str) -> None:
    path = Path(model).expanduser()
    if path.exists():
        return
    looks_local = model.startswith(("/", "./", "../", "~", "."))
    if looks_local or not _HUB_ID.fullmatch(model):
        raise RecipeError(
            f"{key}: {model!r} is neither an existing path nor a Hugging Face Hub id "
            "('name' or 'org/name')"
        )


def build_pipeline(cfg: DictConfig) -> InterleavePipeline:
    """Instantiate (load) the generator, then the planner and critic, then the pipeline."""
    from hydra.utils import instantiate

    generator = instantiate(cfg.generator)
    agents = {role: instantiate(cfg[role]) if cfg.get(role) else None for role in AGENTS}
    return instantiate(cfg.pipeline)(generator=generator, **agents)


def recipe_notes(name: str, cfg: DictConfig) -> dict[str, str]:
    """The settings a reader of the page needs: which components, T_max, the last-attempt rule."""

    def component(key: str) -> str:
        node = cfg.get(key)
        if node is None:
            return "none"
        engine = node.get("engine", node)
        target = str(engine.get("_target_", "?")).rsplit(".", 1)[-1]
        model = engine.get("model")
        return f"{target} ({model})" if model else target

    pipeline = cfg.pipeline
    last = "kept unreviewed" if pipeline.accept_last_attempt_unreviewed else "reviewed"
    return {
        "recipe": name,
        "planner": component("planner"),
        "generator": component("generator"),
        "critic": component("critic"),
        "attempts per step": str(pipeline.max_attempts),
        "last attempt": last,
        "seed": str(pipeline.seed),
    }


def default_run_dir(request_text: str, root: str | Path = "itk_runs") -> Path:
    """`itk_runs/<time>-<first words>`: a new folder per run, readable in a listing."""
    slug = re.sub(r"[^a-z0-9]+", "-", request_text.lower()).strip("-")[:40].strip("-")
    return Path(root) / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug or 'run'}"


def check_run_dir(path: Path) -> None:
    """A single run never overwrites another run's folder."""
    if read_status(path) is not None:
        raise ValueError(f"--out {str(path)!r} already holds a run; choose another folder")
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {str(path)!r} exists and is not a folder")


def generate_one(
    pipeline: InterleavePipeline,
    request: Request,
    out: Path,
    notes: dict[str, str],
    log: Callable[[str], None],
) -> Trajectory:
    """One request into the run folder `out`; errors as `run_into_folder`."""
    return run_into_folder(pipeline, request, RunFolder(out, request.text, notes), log)


@dataclass(frozen=True)
class BatchItem:
    """One line of a batch file: its `id` (the run folder's name) and the request."""

    id: str
    request: Request
    line: int


def load_batch(path: str | Path) -> list[BatchItem]:
    """Read and check a JSONL batch file: one `{"id", "text", "images": [...]}` per line.

    Image paths are relative to the file's folder. Errors name the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"batch file not found: {str(path)!r}")
    items: list[BatchItem] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{where}: not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
        unknown = set(data) - {"id", "text", "images"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (expected id, text, images)")
        run_id = str(data.get("id", ""))
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError(
                f"{where}: id {data.get('id')!r} must be letters, digits, '_', '-' or '.', "
                "starting with a letter or digit (it names the run folder)"
            )
        if run_id in seen:
            raise ValueError(f"{where}: id {run_id!r} already used on line {seen[run_id]}")
        seen[run_id] = number
        images = data.get("images", [])
        text = data.get("text")
        if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
            raise ValueError(f"{where}: images must be a list of paths")
        if not isinstance(text, str):
            raise ValueError(f"{where}: text must be a string, got {text!r}")
        try:
            request = Request.from_user(text, [path.parent / p for p in images])
        except (ValueError, FileNotFoundError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
        items.append(BatchItem(run_id, request, number))
    if not items:
        raise ValueError(f"batch file {str(path)!r} holds no requests")
    return items


@dataclass
class BatchReport:
    """What a batch run did: ids finished now, skipped as already finished, and failed."""

    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def pending(items: Sequence[BatchItem], out_dir: Path) -> list[BatchItem]:
    """Items whose run folder holds no finished run (resume skips the others)."""
    return [item for item in items if not is_finished(out_dir / item.id)]


def is_finished(folder: Path) -> bool:
    status = read_status(folder)
    return status is not None and status.state == FINISHED


def generate_batch(
    pipeline: InterleavePipeline,
    items: Sequence[BatchItem],
    out_dir: Path,
    notes: dict[str, str],
    log: Callable[[str], None],
) -> BatchReport:
    """Every unfinished item into `out_dir/<id>`; a failed request is reported and the batch
    goes on (a rerun retries it)."""
    report = BatchReport()
    for number, item in enumerate(items, start=1):
        folder = out_dir / item.id
        if is_finished(folder):
            report.skipped.append(item.id)
            log(f"[{number}/{len(items)}] {item.id}: already finished, skipped")
            continue

        def item_log(line: str, prefix: str = f"[{number}/{len(items)}] {item.id}: ") -> None:
            log(prefix + line)

        try:
            generate_one(pipeline, item.request, folder, notes, item_log)
        except PipelineError as exc:
            report.failed[item.id] = str(exc)
            item_log(f"failed: {exc}")
            continue
        report.finished.append(item.id)
    return report


def generate_command(
    text: str | None,
    images: Sequence[str],
    batch: str | None,
    out: str | None,
    recipe: str,
    overrides: Sequence[str],
    log: Callable[[str], None],
) -> int:
    """`itk generate`, as a function: check everything, then load the models and run.

    Returns the exit status: 0 when every request finished, 1 when one stopped (its folder
    says where). Bad input raises ValueError / FileNotFoundError / RecipeError before any
    model loads.
    """
    cfg = compose_recipe(recipe, overrides)
    if batch is not None:
        if text is not None or images:
            raise ValueError("with --batch, give no request text or --image (they are per line)")
        if out is None:
            raise ValueError("--batch needs --out DIR (the folder of the run folders)")
        items = load_batch(batch)
        todo = pending(items, Path(out))
        check_recipe(cfg)
        if not todo:
            log(f"all {len(items)} request(s) in {batch} are already finished in {out}")
            return 0
        log(f"{len(todo)} of {len(items)} request(s) to run; loading models")
        pipeline = build_pipeline(cfg)
        report = generate_batch(pipeline, items, Path(out), recipe_notes(recipe, cfg), log)
        log(
            f"done: {len(report.finished)} finished, {len(report.skipped)} skipped, "
            f"{len(report.failed)} failed (rerun to retry them); pages under {out}"
        )
        return 1 if report.failed else 0
    if text is None:
        raise ValueError("give the request text (or --batch FILE)")
    request = Request.from_user(text, list(images))
    run_dir = Path(out) if out is not None else default_run_dir(text)
    check_run_dir(run_dir)
    check_recipe(cfg)
    log("loading models")
    pipeline = build_pipeline(cfg)
    try:
        generate_one(pipeline, request, run_dir, recipe_notes(recipe, cfg), log)
    except PipelineError as exc:
        log(f"stopped: {exc}")
        log(f"what was done is in {run_dir / 'index.html'}")
        return 1
    log(f"finished: {run_dir / 'index.html'}")
    return 0
