"""LockstepEngine: which calls share a batch depends on the participants' calls, never on timing."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from itk_rl.eval.lockstep import LockstepEngine
from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams

GREEDY = SamplingParams(max_new_tokens=4, temperature=0.0)


class RecordingEngine:
    """Answers each request with its own first message text; records every batch it served."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[tuple[tuple[str, ...], SamplingParams]] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def generate(self, requests, params):
        texts = tuple(r.messages[0]["content"] for r in requests)
        with self.lock:
            self.batches.append((texts, params))
        if self.fail_on in texts:
            raise RuntimeError(f"engine broke on {self.fail_on}")
        return [[Completion(text=t)] for t in texts]


def _request(text: str) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": text},), images=(np.zeros((2, 2, 3)),))


def _run(engine: LockstepEngine, calls: dict[int, list[tuple[str, SamplingParams]]], jitter: int):
    """Participant p makes calls[p] in order, sleeping a random while between them."""
    rng = random.Random(jitter)
    pauses = {p: [rng.random() * 0.01 for _ in c] for p, c in calls.items()}

    def participant(p: int) -> list[str]:
        engine.join(p)
        answers = []
        try:
            for (text, params), pause in zip(calls[p], pauses[p], strict=True):
                time.sleep(pause)
                answers.append(engine.generate([_request(text)], params)[0][0].text)
        finally:
            engine.leave()
        return answers

    with ThreadPoolExecutor(len(calls)) as threads:
        return [f.result() for f in [threads.submit(participant, p) for p in sorted(calls)]]


def test_rounds_hold_the_rth_call_of_each_participant_whatever_the_timing():
    calls = {
        0: [("a0", GREEDY), ("a1", GREEDY)],
        1: [("b0", GREEDY)],
        2: [("c0", GREEDY), ("c1", GREEDY), ("c2", GREEDY)],
    }
    for jitter in range(3):
        inner = RecordingEngine()
        answers = _run(LockstepEngine(inner, 3), calls, jitter)
        assert answers == [["a0", "a1"], ["b0"], ["c0", "c1", "c2"]]
        assert [texts for texts, _ in inner.batches] == [
            ("a0", "b0", "c0"),
            ("a1", "c1"),
            ("c2",),
        ]


def test_calls_with_different_sampling_are_batched_apart():
    sampled = SamplingParams(max_new_tokens=4, temperature=1.0)
    inner = RecordingEngine()
    _run(LockstepEngine(inner, 3), {0: [("a", GREEDY)], 1: [("b", sampled)], 2: [("c", GREEDY)]}, 0)
    assert sorted(inner.batches, key=lambda b: b[0]) == [(("a", "c"), GREEDY), (("b",), sampled)]


def test_an_engine_error_reaches_every_caller_of_its_batch_and_no_one_else():
    inner = RecordingEngine(fail_on="b0")
    engine = LockstepEngine(inner, 2)
    outcomes = {}

    def participant(p: int, text: str) -> None:
        engine.join(p)
        try:
            outcomes[p] = engine.generate([_request(text)], GREEDY)[0][0].text
        except RuntimeError as error:
            outcomes[p] = str(error)
        finally:
            engine.leave()

    with ThreadPoolExecutor(2) as threads:
        for f in [threads.submit(participant, 0, "a0"), threads.submit(participant, 1, "b0")]:
            f.result()
    assert outcomes == {0: "engine broke on b0", 1: "engine broke on b0"}


def test_a_participant_that_leaves_without_asking_stalls_no_one():
    inner = RecordingEngine()
    answers = _run(LockstepEngine(inner, 2), {0: [("a0", GREEDY), ("a1", GREEDY)], 1: []}, 0)
    assert answers == [["a0", "a1"], []]
    assert [texts for texts, _ in inner.batches] == [("a0",), ("a1",)]


def test_misuse_is_named():
    engine = LockstepEngine(RecordingEngine(), 1)
    with pytest.raises(RuntimeError, match="join"):
        engine.generate([_request("x")], GREEDY)
    with pytest.raises(ValueError, match="participant 3"):
        engine.join(3)
    with pytest.raises(ValueError, match="participants must be >= 1"):
        LockstepEngine(RecordingEngine(), 0)
    engine.join(0)
    engine.leave()
    with pytest.raises(RuntimeError, match="after leaving"):
        engine.generate([_request("x")], GREEDY)
