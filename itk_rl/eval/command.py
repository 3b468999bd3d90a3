"""`itk eval BENCHMARK`: one benchmark run end to end, and `itk eval compare RUN...`.

    compose the recipe (eval_<benchmark>) → check it → load the data (fetched at the pinned
    revision when missing) → count the calls, and stop unless paid ones are confirmed →
    generate what has no output (resumable) → judge what is not cached → score with the
    official rules → results.json, results.md, gallery.html

A driver (it composes recipes and builds the pipeline); the phases live in
`itk_rl.eval.harness`. Everything that can be wrong with the recipe or the data fails before
any model loads or any paid call is made.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from itk_rl.eval.benchmarks.templates import JUDGE_ROLES, load_judge_template
from itk_rl.eval.harness import generation, judging, paid, report
from itk_rl.eval.harness.core import Benchmark
from itk_rl.eval.harness.gallery import write_gallery
from itk_rl.formats.files import write_atomic
from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams, VLMEngine
from itk_rl.job import RecipeError, compose_recipe
from itk_rl.pipeline.generate import build_pipeline, check_recipe, recipe_notes

BENCHMARKS = ("wise", "wise_verified", "rise", "ueval", "comm")
RUN_RECORD = "run.json"


class LazyEngine:
    """Builds the judge engine on its first call: a rerun whose answers are all cached needs
    no key and loads no model."""

    def __init__(self, make: Callable[[], VLMEngine]) -> None:
        self._make, self._engine, self._lock = make, None, threading.Lock()

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        with self._lock:
            if self._engine is None:
                self._engine = self._make()
        return self._engine.generate(requests, params)

    def close(self) -> None:
        if self._engine is not None and hasattr(self._engine, "close"):
            self._engine.close()


def identity(cfg: DictConfig, bench: Benchmark) -> dict[str, Any]:
    """What makes outputs comparable across resumed runs: the benchmark, the system and its
    components' models, the pipeline's rules. Time-outs or concurrency may change freely."""

    def model_of(node: Any) -> str | None:
        if node is None:
            return None
        engine = node.get("engine", node)
        return f"{engine.get('_target_')}:{engine.get('model')}"

    pipeline = cfg.pipeline
    return {
        "benchmark": bench.name,
        "system": cfg.system.name,
        "generator": model_of(cfg.generator),
        "planner": model_of(cfg.get("planner")),
        "critic": model_of(cfg.get("critic")),
        "max_attempts": pipeline.max_attempts,
        "accept_last_attempt_unreviewed": pipeline.accept_last_attempt_unreviewed,
        "seed": pipeline.seed,
    }


def check_run_folder(run: Path, ident: dict[str, Any]) -> None:
    """A run folder is resumed only by the same system on the same benchmark."""
    path = run / RUN_RECORD
    if not path.is_file():
        return
    before = json.loads(path.read_text(encoding="utf-8")).get("identity", {})
    changed = [
        f"{k}: {before.get(k)!r} there, {v!r} now" for k, v in ident.items() if before.get(k) != v
    ]
    if changed:
        raise ValueError(
            f"{run} holds a run of another configuration ({'; '.join(changed)}); choose another "
            "--out (or out_dir), or delete that folder"
        )


def _judge_settings(cfg: DictConfig) -> judging.JudgeSettings:
    node = cfg.judge
    engine_cfg = node.engine
    try:
        get_method(str(engine_cfg._target_))
    except Exception as exc:
        raise RecipeError(f"judge.engine._target_: cannot import ({exc})") from exc
    paths = OmegaConf.to_container(node.templates) if node.get("templates") else {}
    unknown = sorted(set(paths) - set(JUDGE_ROLES))
    if unknown:
        raise RecipeError(f"judge.templates: unknown role(s) {unknown}; known: {list(JUDGE_ROLES)}")
    templates = {role: load_judge_template(role, paths.get(role)) for role in JUDGE_ROLES}
    return judging.JudgeSettings(
        engine=LazyEngine(lambda: instantiate(engine_cfg)),
        sampling=instantiate(node.sampling),
        templates=templates,
        judge_id=f"{engine_cfg._target_}:{engine_cfg.get('model')}",
        unreadable_retries=int(node.unreadable_retries),
        max_image_side=node.max_image_side,
        concurrency=int(node.concurrency),
        seed=node.seed,
    )


def eval_command(
    benchmark: str,
    overrides: Sequence[str],
    out: str | None,
    yes: bool,
    log: Callable[[str], None],
) -> int:
    """`itk eval`, as a function. Returns 0 when every sample has an output and every judge
    call an answer, 1 when some failed (a rerun retries them), 2 when paid calls were not
    confirmed. Bad recipes and missing data raise before any model loads."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    recipe = f"eval_{benchmark}"
    cfg = compose_recipe(recipe, overrides)
    check_recipe(cfg)
    settings = _judge_settings(cfg)
    try:
        bench: Benchmark = instantiate(cfg.benchmark)
    except Exception as exc:  # Hydra wraps the constructor's error; name the section
        raise RecipeError(f"benchmark: cannot be built ({exc})") from exc
    run = Path(out or cfg.out_dir).expanduser()
    ident = identity(cfg, bench)
    check_run_folder(run, ident)
    samples = bench.samples()
    log(f"{bench.name}: {len(samples)} sample(s); run folder {run}")

    # Count, and stop before any paid call that is not confirmed.
    todo = generation.pending(bench, run, samples)
    cache = judging.JudgeCache(run / judging.CACHE)
    to_judge = sum(max(0, bench.count_judge_calls(s) - cache.count(s.key)) for s in samples)
    plain = OmegaConf.to_container(cfg, resolve=True)
    components = paid.paid_components(plain)
    estimate = paid.estimate(
        len(todo),
        to_judge,
        has_planner=cfg.get("planner") is not None,
        has_critic=cfg.get("critic") is not None,
        max_attempts=cfg.pipeline.max_attempts,
        accept_last_unreviewed=cfg.pipeline.accept_last_attempt_unreviewed,
        steps_per_sample=cfg.costs.steps_per_sample,
        unreadable_retries=settings.unreadable_retries,
    )
    log(f"{len(todo)} sample(s) to generate, about {to_judge} judge call(s) to make")
    for line in paid.describe(estimate, components, plain["costs"]["usd_per_call"]):
        log(line)
    if cfg.confirm_paid_calls and not yes and paid.needs_confirmation(estimate, components):
        log("this run calls paid APIs: rerun with --yes to go on (or confirm_paid_calls=false)")
        return 2
    missing = paid.missing_keys(plain, estimate)
    if missing:
        raise ValueError(f"set the API key variable(s) first: {', '.join(missing)}")

    run.mkdir(parents=True, exist_ok=True)
    notes = {**recipe_notes(recipe, cfg), "judge": settings.judge_id}
    record = {"identity": ident, "components": notes, "data": bench.provenance()}
    write_atomic(run / RUN_RECORD, json.dumps(record, indent=1) + "\n")
    write_atomic(run / "config.yaml", OmegaConf.to_yaml(cfg))

    if todo:
        log("loading the system under test")
        pipeline = build_pipeline(cfg)
        made = generation.generate(bench, run, samples, pipeline, cfg.generation_workers, log)
        log(f"generated {len(made.done)}, failed {len(made.failed)}, kept {made.skipped}")
    try:
        answers, stats = judging.judge(bench, run, samples, settings)
    finally:
        settings.engine.close()
    log(
        f"judged: {stats.asked} asked ({stats.requests} requests), {stats.cached} from the "
        f"cache, {len(stats.unreadable)} unreadable, {len(stats.failed)} failed"
    )
    scores = bench.score(run, samples, answers)
    log_records = generation.read_log(run)
    results = report.build_results(
        benchmark=bench.name,
        system=cfg.system.name,
        components=notes,
        scores=scores,
        samples=len(samples),
        outputs=sum(bench.has_output(run, s) for s in samples),
        generation_log=log_records,
        judge_calls=sum(len(a) for a in answers.values()),
        judge=stats,
        provenance=bench.provenance(),
    )
    _, markdown = report.write_results(run, results)
    gallery = write_gallery(run, bench, samples, answers, results, scores.per_sample, log_records)
    log(f"{scores.metric}:\n{report.table(results)}")
    log(f"report: {markdown}; gallery: {gallery}")
    failed = results["generation"]["failed"] or stats.failed
    return 1 if failed else 0


def compare_command(runs: Sequence[str], out: str | None) -> str:
    """The comparison table of `runs` (written to `out` too when given)."""
    text = report.compare([Path(run) for run in runs])
    if out is not None:
        write_atomic(Path(out), text)
    return text
