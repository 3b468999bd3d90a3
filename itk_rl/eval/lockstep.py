"""One engine shared by a fixed group of threads, answered in rounds: batching without timing.

Pipelines ask their critic one request at a time; a CPU or GPU engine answers 16 requests in
about the time of one. Running several pipelines in threads and merging whatever requests
happen to be waiting would batch them, but which requests share a batch would then depend on
thread timing, and padded batches differ in float noise: the same evaluation run twice could
differ. Here a round is answered only when every participant still running has asked (or
left), as one `generate` call in participant order. Round r therefore holds exactly the r-th
call of every participant that makes one: batches depend only on what each participant does,
so runs are repeatable.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams, VLMEngine


class LockstepEngine:
    """A `VLMEngine` over `engine` for `participants` threads, numbered 0 … participants − 1.

    Each participant's thread calls `join(index)` first and `leave()` when it will ask no more
    (also after an error: a participant that neither asks nor leaves stalls every other one).
    A round whose calls differ in `SamplingParams` is answered as one batch per distinct
    params. An engine error is raised in every participant of the failed batch.
    """

    def __init__(self, engine: VLMEngine, participants: int) -> None:
        if participants < 1:
            raise ValueError(f"LockstepEngine: participants must be >= 1, got {participants}")
        self.engine = engine
        self._live = set(range(participants))
        self._asked: dict[int, tuple[Sequence[ChatRequest], SamplingParams]] = {}
        self._answers: dict[int, list[list[Completion]] | BaseException] = {}
        self._changed = threading.Condition()
        self._thread = threading.local()

    def join(self, index: int) -> None:
        """Bind the calling thread to participant `index`."""
        if index not in self._live:
            raise ValueError(f"LockstepEngine: participant {index} is not expected (or left)")
        self._thread.index = index

    def leave(self) -> None:
        """The calling thread's participant asks no more; the round may now be complete."""
        with self._changed:
            self._live.discard(self._index())
            self._answer_round_if_complete()

    def generate(
        self, requests: Sequence[ChatRequest], params: SamplingParams
    ) -> list[list[Completion]]:
        index = self._index()
        with self._changed:
            if index not in self._live:
                raise RuntimeError(f"LockstepEngine: participant {index} asked after leaving")
            self._asked[index] = (requests, params)
            self._answer_round_if_complete()
            while index not in self._answers:
                self._changed.wait()
            answer = self._answers.pop(index)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _index(self) -> int:
        index = getattr(self._thread, "index", None)
        if index is None:
            raise RuntimeError("LockstepEngine: call join(index) on this thread first")
        return index

    def _answer_round_if_complete(self) -> None:
        """With the lock held: once every live participant has asked, answer them all."""
        if not self._asked or set(self._asked) != self._live:
            return
        asked, self._asked = sorted(self._asked.items()), {}
        by_params: dict[SamplingParams, list[int]] = {}
        for index, (_, params) in asked:
            by_params.setdefault(params, []).append(index)
        calls = dict(asked)
        for params, indices in by_params.items():
            batch = [request for index in indices for request in calls[index][0]]
            try:
                completions = self.engine.generate(batch, params)
                if len(completions) != len(batch):
                    raise RuntimeError(
                        f"{type(self.engine).__name__}.generate returned {len(completions)} "
                        f"result lists for {len(batch)} requests"
                    )
            except Exception as error:  # every caller of the batch sees the engine's error
                self._answers.update(dict.fromkeys(indices, error))
                continue
            start = 0
            for index in indices:
                count = len(calls[index][0])
                self._answers[index] = completions[start : start + count]
                start += count
        self._changed.notify_all()
