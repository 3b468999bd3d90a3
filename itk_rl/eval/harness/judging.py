"""Judging: every judge call of every sample, asked concurrently through a VLM engine, cached
per sample so that a rerun asks only what is missing.

The cache (`judge_cache.jsonl` in the run folder) holds one line per answered call, keyed by
sample and call name, with a fingerprint of everything the judge saw — the judge, its sampling,
the rendered template, every text part and the bytes of every image — so a changed output,
template or judge is asked again and an unchanged one never is. An answer the benchmark's
parser cannot read is asked again (`unreadable_retries`, each try with the next seed); one that
stays unreadable is cached as it is and counted as the official script counts it. A call whose
engine fails for good is not cached: it counts as unreadable in this run's figures, is reported
as a failure, and is asked again by the next run.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from itk_rl.eval.harness.core import Answer, Benchmark, JudgeCall, Sample, load_image
from itk_rl.formats.templates import PromptTemplate, chat_messages
from itk_rl.interfaces.engine import ChatRequest, SamplingParams, VLMEngine

CACHE = "judge_cache.jsonl"


@dataclass(frozen=True)
class JudgeSettings:
    """How to judge: the engine, how it samples, a template per role, who the judge is (for
    the fingerprint), further tries of an unreadable answer, the longest image side sent
    (None: as is), calls in flight at once, and the seed of the first try."""

    engine: VLMEngine
    sampling: SamplingParams
    templates: Mapping[str, PromptTemplate]
    judge_id: str
    unreadable_retries: int = 2
    max_image_side: int | None = None
    concurrency: int = 8
    seed: int = 0


@dataclass
class JudgeStats:
    """Calls answered now and from the cache, requests sent (tries), calls whose answer is
    unreadable (now or in the cache), and calls whose engine failed (sample/call → error)."""

    asked: int = 0
    cached: int = 0
    requests: int = 0
    unreadable: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class JudgeCache:
    """The run folder's `judge_cache.jsonl`: append-only, the last line of a key wins, a line
    cut by a crash is skipped."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._entries[(entry["sample"], entry["call"])] = entry
                except (ValueError, KeyError, TypeError):
                    continue

    def get(self, call: JudgeCall, fingerprint: str) -> dict[str, Any] | None:
        entry = self._entries.get((call.sample, call.name))
        return entry if entry is not None and entry.get("fingerprint") == fingerprint else None

    def count(self, sample: str) -> int:
        """Calls of `sample` with a cached answer (any fingerprint), for the call estimate."""
        return sum(1 for key in self._entries if key[0] == sample)

    def put(self, call: JudgeCall, fingerprint: str, answer: Answer) -> None:
        entry = {
            "sample": call.sample,
            "call": call.name,
            "fingerprint": fingerprint,
            "text": answer.text,
            "readable": answer.value is not None,
        }
        with self._lock:
            self._entries[(call.sample, call.name)] = entry
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")


def _render(call: JudgeCall, settings: JudgeSettings) -> tuple[str, str]:
    template = settings.templates.get(call.role)
    if template is None:
        raise KeyError(f"no judge template for role {call.role!r} (judge.templates)")
    return template.render(**call.values)


def fingerprint(call: JudgeCall, settings: JudgeSettings) -> str:
    """A hash of everything the judge sees for `call` (image files by their bytes)."""
    digest = hashlib.sha256()
    system, user = _render(call, settings)
    head = [settings.judge_id, repr(settings.sampling), settings.max_image_side, system, user]
    digest.update(json.dumps(head).encode())
    for part in call.parts:
        if isinstance(part, str):
            digest.update(b"T" + part.encode())
        elif isinstance(part, np.ndarray):
            digest.update(b"A" + repr(part.shape).encode() + part.tobytes())
        else:
            digest.update(b"F" + Path(part).read_bytes())
    return digest.hexdigest()


def chat_request(call: JudgeCall, settings: JudgeSettings, seed: int) -> ChatRequest:
    """The template's system text, then its user text followed by the parts in order."""
    system, user = _render(call, settings)
    content: list[dict[str, Any]] = [{"type": "text", "text": user}]
    images = []
    for part in call.parts:
        if isinstance(part, str):
            content.append({"type": "text", "text": part})
        else:
            content.append({"type": "image"})
            images.append(load_image(part, settings.max_image_side))
    return ChatRequest(tuple(chat_messages(system, content)), tuple(images), seed)


def ask(call: JudgeCall, settings: JudgeSettings) -> Answer:
    """One call, asked again while its answer is unreadable; an engine failure ends it."""
    text: str | None = None
    tries = 1 + settings.unreadable_retries
    for attempt in range(tries):
        request = chat_request(call, settings, settings.seed + attempt)
        try:
            completions = settings.engine.generate([request], settings.sampling)
            text = completions[0][0].text
        except Exception as exc:  # the engine gave up (after its own retries): not cached
            return Answer(text, None, attempt + 1, f"{type(exc).__name__}: {exc}")
        value = call.parse(text)
        if value is not None:
            return Answer(text, value, attempt + 1)
    return Answer(text, None, tries)


def judge(
    bench: Benchmark,
    run: Path,
    samples: Sequence[Sample],
    settings: JudgeSettings,
) -> tuple[dict[str, dict[str, Answer]], JudgeStats]:
    """Every judge call of `samples`, in rounds (a call may need an earlier answer); returns
    the answers by sample and call name, and what was done."""
    cache = JudgeCache(Path(run) / CACHE)
    answers: dict[str, dict[str, Answer]] = {s.key: {} for s in samples}
    stats = JudgeStats()
    for round_number in range(1, 10):
        todo: list[tuple[JudgeCall, str]] = []
        cached = 0
        for sample in samples:
            got = answers[sample.key]
            for call in bench.judge_calls(run, sample, dict(got)):
                if call.name in got:
                    continue
                key = fingerprint(call, settings)
                entry = cache.get(call, key)
                if entry is None:
                    todo.append((call, key))
                    continue
                got[call.name] = Answer(entry["text"], call.parse(entry["text"]))
                cached += 1
                if got[call.name].value is None:
                    stats.unreadable.append(f"{call.sample}/{call.name}")
        stats.cached += cached
        if not todo and not cached:  # no new answer: no call can depend on one
            return answers, stats
        if todo:
            _ask_all(todo, settings, cache, answers, stats, f"judge (round {round_number})")
    raise RuntimeError("judge calls kept depending on new answers after 9 rounds")


def _ask_all(
    todo: list[tuple[JudgeCall, str]],
    settings: JudgeSettings,
    cache: JudgeCache,
    answers: dict[str, dict[str, Answer]],
    stats: JudgeStats,
    label: str,
) -> None:
    with ThreadPoolExecutor(max(1, settings.concurrency), "eval-judge") as pool:
        futures = {pool.submit(ask, call, settings): (call, key) for call, key in todo}
        for future in tqdm(as_completed(futures), total=len(todo), desc=label, file=sys.stderr):
            call, key = futures[future]
            answer = future.result()
            answers[call.sample][call.name] = answer
            stats.asked += 1
            stats.requests += answer.tries
            where = f"{call.sample}/{call.name}"
            if answer.error is not None:
                stats.failed[where] = answer.error
                continue
            if answer.value is None:
                stats.unreadable.append(where)
            cache.put(call, key, answer)
