"""W `TrainerWorker` Ray actors forming one FSDP2 group, driven as one object.

The group reserves one placement-group bundle per rank (`{"CPU": num_cpus, "GPU": num_gpus}`
plus the config's custom `resources`, on nodes matching its `label_selector`; packed onto as
few nodes as possible), lets rank 0 open the rendezvous store on a port its OS picks, and fans
each call out to every rank with that rank's share of the batch. Ranks get contiguous,
near-equal shares; results come back in the caller's order.

A rank that dies, or a call not answered within `trainer.call_timeout_s`, raises
`TrainerFailed` at once (the surviving ranks would wait in a collective forever): the group is
then unusable, and the driver kills it and starts another from the last checkpoint.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray
import torch
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from itk_rl.trainer.batch import TrainSample
from itk_rl.trainer.config import TrainerConfig
from itk_rl.trainer.worker import TrainerWorker

TrainerActor = ray.remote(TrainerWorker)


class TrainerFailed(RuntimeError):
    """A trainer rank died or did not answer in time; the group must be rebuilt."""


class TrainerGroup:
    """The trainer as the driver sees it: every method runs on all ranks and waits for them."""

    def __init__(self, model_path: str, config: dict[str, Any]) -> None:
        self.config = TrainerConfig.from_dict(config)
        size = self.config.world_size
        bundle = {"CPU": self.config.num_cpus, **(self.config.resources or {})}
        if self.config.num_gpus:
            bundle["GPU"] = self.config.num_gpus
        selector = self.config.label_selector
        self.placement_group = placement_group(
            [dict(bundle) for _ in range(size)],
            "PACK",
            bundle_label_selector=[dict(selector) for _ in range(size)] if selector else None,
        )
        self.call_timeout_s = self.config.call_timeout_s
        try:
            ray.get(self.placement_group.ready(), timeout=self.call_timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(self.placement_group)
            raise TrainerFailed(
                f"the trainer's {size} bundles of {bundle} could not be placed within "
                f"trainer.call_timeout_s={self.call_timeout_s} s; the cluster has "
                f"{ray.available_resources()} available (a node lost?)"
            ) from None

        def on_bundle(index: int) -> PlacementGroupSchedulingStrategy:
            return PlacementGroupSchedulingStrategy(self.placement_group, index)

        run = uuid.uuid4().hex[:8]
        self.workers = [
            TrainerActor.options(
                name=f"itk-trainer-{rank}-{run}",
                num_cpus=self.config.num_cpus,
                num_gpus=self.config.num_gpus,
                scheduling_strategy=on_bundle(rank),
            ).remote(rank, size, str(model_path), dict(config))
            for rank in range(size)
        ]
        master_addr, master_port = ray.get(self.workers[0].open_rendezvous.remote())
        self._all("setup", master_addr, master_port)  # raises here if any rank failed to start

    @property
    def world_size(self) -> int:
        return len(self.workers)

    def _all(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        return self._wait(
            method, [getattr(w, method).remote(*args, **kwargs) for w in self.workers]
        )

    def _wait(self, method: str, refs: list[ray.ObjectRef]) -> list[Any]:
        """Every rank's result, in rank order; `TrainerFailed` as soon as one rank dies or when
        the call is not done within `call_timeout_s`."""
        deadline = None if self.call_timeout_s is None else time.monotonic() + self.call_timeout_s
        pending = list(refs)
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, pending = ray.wait(pending, num_returns=1, timeout=left)
            if not done:
                raise TrainerFailed(
                    f"trainer.{method} was not answered by every rank within "
                    f"trainer.call_timeout_s={self.call_timeout_s} s"
                )
            try:
                ray.get(done)
            except ray.exceptions.RayActorError as error:
                rank = refs.index(done[0])
                raise TrainerFailed(f"trainer rank {rank} died during {method}: {error}") from error
        return ray.get(refs)

    def _shares(self, n: int) -> list[np.ndarray]:
        if n < self.world_size:
            raise ValueError(f"a batch of {n} cannot feed {self.world_size} trainer ranks")
        return np.array_split(np.arange(n), self.world_size)

    def _scatter(self, method: str, columns: Sequence[Sequence | None], **kwargs: Any) -> list:
        """Call `method` on each rank with its rows of every column (None stays None)."""
        n = len(columns[0])
        futures = []
        for worker, rows in zip(self.workers, self._shares(n), strict=True):
            args = [None if c is None else [c[i] for i in rows] for c in columns]
            futures.append(getattr(worker, method).remote(*args, **kwargs))
        return self._wait(method, futures)

    def compute_logprobs(
        self, samples: Sequence[TrainSample], *, reference: bool = False
    ) -> list[np.ndarray]:
        """Per-sample `[len(response_ids)]` log-probs (policy, or reference), in input order."""
        shares = self._scatter("compute_logprobs", [samples], reference=reference)
        return [row for share in shares for row in share]

    def update(
        self,
        samples: Sequence[TrainSample],
        advantages: np.ndarray,
        old_logprobs: Sequence[np.ndarray] | None = None,
        ref_logprobs: Sequence[np.ndarray] | None = None,
        rollout_logprobs: Sequence[np.ndarray] | None = None,
    ) -> dict[str, float]:
        """PPO update on the whole batch; metrics are already averaged over ranks."""
        advantages = list(np.asarray(advantages, dtype=np.float32))
        columns = [samples, advantages, old_logprobs, ref_logprobs, rollout_logprobs]
        metrics = self._scatter("update", columns)
        return metrics[0]

    def sft_step(self, samples: Sequence[TrainSample]) -> dict[str, float]:
        return self._scatter("sft_step", [samples])[0]

    def sft_eval_loss(self, samples: Sequence[TrainSample]) -> dict[str, float]:
        """Held-out loss over the whole batch (token-mean over all ranks); no update."""
        return self._scatter("sft_eval_loss", [samples])[0]

    def state_dict_for_sync(self) -> dict[str, torch.Tensor]:
        """Full weights, gathered once (on rank 0)."""
        return self._all("state_dict_for_sync")[0]

    def save_checkpoint(self, directory: str, extra: dict[str, Any] | None = None) -> str:
        return self._all("save_checkpoint", str(directory), extra)[0]

    def load_checkpoint(self, directory: str) -> dict[str, Any]:
        return self._all("load_checkpoint", str(directory))[0]

    def export(self, directory: str) -> str:
        return self._all("export", str(directory))[0]

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Leave the process group on every rank, then free the actors and their bundles.

        After a rank failed mid-collective the others wait in it forever, so the clean exit
        gets `timeout_s`; the actors are killed either way.
        """
        try:
            ray.get([w.shutdown.remote() for w in self.workers], timeout=timeout_s)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError):
            pass  # the group is unusable; killing its actors below is all that is left
        finally:
            self.kill()

    def kill(self) -> None:
        """Kill every rank and free the bundles at once (a failed group: no clean exit)."""
        for worker in self.workers:
            ray.kill(worker)
        remove_placement_group(self.placement_group)
