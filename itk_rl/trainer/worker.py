"""One rank of the FSDP2 trainer: load, shard, score, update, checkpoint, export.

`TrainerWorker` is a plain class (a Ray actor through `itk_rl.trainer.group`); the driver calls
the same method on every rank with that rank's share of the batch. Every method is collective:
each forward all-gathers a block's weights from all ranks, so all ranks must run the same
number of forwards and backwards. Ranks whose share needs fewer micro-batches run padding
micro-batches (a real sample with an all-zero mask: no loss, no metrics, same collectives).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch
import torch.distributed as dist
from torch import nn
from transformers import AutoModelForImageTextToText, AutoProcessor, get_scheduler
from transformers.utils import logging as hf_logging
from verl.trainer.ppo.core_algos import agg_loss

from itk_rl.formats.dtypes import torch_dtype
from itk_rl.trainer import checkpoint
from itk_rl.trainer.batch import ModelBatch, TrainSample, build_batch, sequence_logprobs
from itk_rl.trainer.config import TrainerConfig
from itk_rl.trainer.grpo import LOSS_METRICS, GlobalBatch, policy_loss, rollout_correction
from itk_rl.trainer.sharding import data_parallel_mesh, join_process_group, serve_store, shard


@dataclass
class _Micro:
    """One forward: the batch and the local sample behind each row. A padding micro-batch
    repeats sample 0 with an all-zero response mask."""

    batch: ModelBatch
    indices: np.ndarray
    padding: bool = False


def _pad_rows(rows: Sequence[np.ndarray], indices: np.ndarray, width: int) -> torch.Tensor:
    """Per-sample arrays `[len_i]` → `[len(indices), width]`, zero-padded on the right."""
    out = torch.zeros((len(indices), width), dtype=torch.float32)
    for row, i in enumerate(indices):
        values = torch.tensor(np.asarray(rows[i], dtype=np.float32))[
            :width
        ]  # copy: Ray's are read-only
        out[row, : len(values)] = values
    return out


class TrainerWorker:
    """One rank; see the module docstring. `config` is a plain dict of `TrainerConfig` keys."""

    def __init__(self, rank: int, world_size: int, model_path: str, config: dict[str, Any]) -> None:
        self.config = TrainerConfig.from_dict(config)
        self.rank, self.world_size = rank, world_size
        self.model_path = model_path
        self._store: dist.TCPStore | None = None

    def open_rendezvous(self) -> tuple[str, int]:
        """Rank 0 only: serve the group's key-value store on a port the OS picks, in this very
        process, so no other process can take the port between choosing and binding it, and on
        this node's cluster address only, not every interface. Returns the address the other
        ranks join."""
        address = ray.util.get_node_ip_address()
        self._store, self._listener = serve_store(address, self.world_size)
        return address, self._store.port

    def setup(self, master_addr: str, master_port: int) -> None:
        """Join the process group through rank 0's store, then load and shard the model."""
        self.device = join_process_group(
            self.rank, self.world_size, self._store, master_addr, master_port
        )
        torch.manual_seed(self.config.seed)
        hf_logging.disable_progress_bar()  # one bar per rank and load is noise in the driver log
        self.mesh = data_parallel_mesh(self.device.type, self.world_size)
        self.processor = AutoProcessor.from_pretrained(self.model_path)
        self.model = self._load(self.model_path, trainable=True)
        cfg = self.config
        self.reference = self._load(self.model_path, trainable=False) if cfg.kl_coef else None
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=cfg.lr,
            betas=cfg.betas,
            weight_decay=cfg.weight_decay,
        )
        self.scheduler = get_scheduler(
            "cosine_with_min_lr" if cfg.lr_schedule == "cosine" else "constant_with_warmup",
            self.optimizer,
            num_warmup_steps=cfg.warmup_steps,
            num_training_steps=cfg.total_steps,
            scheduler_specific_kwargs=(
                {"min_lr_rate": cfg.min_lr_ratio} if cfg.lr_schedule == "cosine" else None
            ),
        )
        self.step = 0  # optimizer steps taken

    def _load(self, path: str, *, trainable: bool) -> nn.Module:
        """Load from `path`, freeze what must not train, shard; the reference never trains."""
        cfg = self.config
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=torch_dtype(cfg.dtype, "trainer.dtype")
        )
        model.to(self.device)
        if not trainable:
            model.requires_grad_(False)
        elif cfg.freeze_vision_tower:
            model.model.visual.requires_grad_(False)
        if trainable and cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        shard(
            model,
            self.mesh,
            reshard_after_forward=cfg.reshard_after_forward,
            mixed_precision=cfg.mixed_precision,
        )
        return model.train(trainable)

    # -- planning: same number of forwards on every rank ---------------------------------------

    def _global_sum(self, values: Sequence[float], op: dist.ReduceOp = dist.ReduceOp.SUM) -> list:
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=op)
        return tensor.tolist()

    def _plan(self, samples: Sequence[TrainSample], num_steps: int) -> list[list[_Micro]]:
        """Split this rank's samples into `num_steps` mini-batches of micro-batches, padded so
        every rank has as many micro-batches per mini-batch."""
        if not samples:
            raise ValueError(f"rank {self.rank} got no samples; give every rank at least one")
        size = self.config.micro_batch_size
        parts = np.array_split(np.arange(len(samples)), num_steps)
        chunks = [[p[i : i + size] for i in range(0, len(p), size)] for p in parts]
        counts = self._global_sum([len(c) for c in chunks], op=dist.ReduceOp.MAX)
        plan = []
        for part_chunks, count in zip(chunks, counts, strict=True):
            micros = [_Micro(self._batch(samples, c), c) for c in part_chunks]
            for _ in range(int(count) - len(part_chunks)):
                padding = self._batch(samples, np.zeros(1, dtype=np.int64))
                padding.response_mask.zero_()
                micros.append(_Micro(padding, np.zeros(1, dtype=np.int64), padding=True))
            plan.append(micros)
        return plan

    def _batch(self, samples: Sequence[TrainSample], indices: np.ndarray) -> ModelBatch:
        return build_batch(self.processor, [samples[i] for i in indices]).to(self.device)

    def _global_batches(self, plan: list[list[_Micro]]) -> list[GlobalBatch]:
        """Tokens and sequences of each mini-batch summed over ranks (the loss normaliser)."""
        local = [
            (sum(m.batch.num_tokens for m in ms), sum(len(m.indices) for m in ms if not m.padding))
            for ms in plan
        ]
        totals = self._global_sum([v for pair in local for v in pair])
        return [
            GlobalBatch(self.world_size, int(totals[2 * k]), int(totals[2 * k + 1]))
            for k in range(len(plan))
        ]

    # -- scoring ------------------------------------------------------------------------------

    @torch.no_grad()
    def compute_logprobs(
        self, samples: Sequence[TrainSample], *, reference: bool = False
    ) -> list[np.ndarray]:
        """Per-token log-probs of each sample's response, `[len(response_ids)]` float32 each,
        under the current policy (old log-probs) or the frozen reference."""
        model = self.reference if reference else self.model
        if model is None:
            raise ValueError("no reference model: trainer.kl_coef is 0")
        was_training = model.training
        model.eval()
        out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(samples)
        for micro in self._plan(samples, 1)[0]:
            logprobs, _ = sequence_logprobs(model, micro.batch, self.config.temperature)
            if micro.padding:
                continue
            for row, i in enumerate(micro.indices):
                out[i] = logprobs[row, : len(samples[i].response_ids)].float().cpu().numpy()
        model.train(was_training)
        return out

    # -- training -----------------------------------------------------------------------------

    def _optimizer_step(self) -> tuple[float, float]:
        """Clip, step (skipped when the norm is not finite), advance the schedule."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        lr = self.scheduler.get_last_lr()[0]
        if torch.isfinite(norm):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return float(norm), lr

    def _reduce_metrics(
        self, sums: dict[str, float], tokens: float, num_steps: int, steps: list[tuple]
    ) -> dict[str, float]:
        """Loss shares summed over ranks / dp_size per step; other metrics token-weighted."""
        keys = sorted(sums)
        totals = self._global_sum([sums[k] for k in keys] + [tokens])
        metrics = {}
        for key, total in zip(keys, totals[:-1], strict=True):
            scale = self.world_size * num_steps if key in LOSS_METRICS else totals[-1]
            metrics[key] = total / max(scale, 1e-12)
        norms = [n for n, _ in steps]
        metrics["actor/grad_norm"] = float(np.mean(norms))
        metrics["actor/grad_norm_nonfinite_steps"] = float(sum(not math.isfinite(n) for n in norms))
        metrics["actor/lr"] = steps[-1][1]
        metrics["actor/optimizer_steps"] = float(len(steps))
        return metrics

    def update(
        self,
        samples: Sequence[TrainSample],
        advantages: np.ndarray,
        old_logprobs: Sequence[np.ndarray] | None = None,
        ref_logprobs: Sequence[np.ndarray] | None = None,
        rollout_logprobs: Sequence[np.ndarray] | None = None,
    ) -> dict[str, float]:
        """PPO-clip updates on this rank's samples; returns metrics averaged over all ranks.

        advantages: `[n]`, one per sample, applied to all its response tokens (outcome
        advantage). old_logprobs / ref_logprobs: per sample `[len(response_ids)]`. Without
        old_logprobs the update must be one optimizer step (on-policy: ratio 1 at the start);
        without ref_logprobs the reference model scores each micro-batch when kl_coef > 0.
        rollout_logprobs: the rollout engine's, per sample; needed when the config turns the
        rollout correction on (`rollout_is`, `rollout_rs`), unused otherwise.
        """
        start = time.perf_counter()
        cfg = self.config
        total = int(self._global_sum([len(samples)])[0])
        mini = cfg.ppo_mini_batch_size or total
        if mini < self.world_size:
            raise ValueError(
                f"trainer.ppo_mini_batch_size={mini} is below world_size={self.world_size}: "
                "some optimizer steps would have no sample on any rank"
            )
        num_mini = math.ceil(total / mini)
        if old_logprobs is None and num_mini * cfg.ppo_epochs > 1:
            raise ValueError(
                f"old_logprobs are required for {num_mini * cfg.ppo_epochs} optimizer steps "
                "(trainer.ppo_mini_batch_size / ppo_epochs): the policy moves after the first"
            )
        correction = cfg.correction
        if correction.enabled and rollout_logprobs is None:
            raise ValueError(
                "trainer.rollout_is / rollout_rs need the rollout engine's log-probs of the "
                "sampled tokens; this engine returns none (TransformersEngine and VLLMEngine do)"
            )
        plan = self._plan(samples, num_mini)
        global_batches = self._global_batches(plan)
        advantages = np.asarray(advantages, dtype=np.float32)
        sums: dict[str, float] = {}
        tokens, steps = 0.0, []
        self.model.train()
        for _ in range(cfg.ppo_epochs):
            for micros, global_batch in zip(plan, global_batches, strict=True):
                for micro in micros:
                    batch, idx = micro.batch, micro.indices
                    width = batch.response_ids.shape[1]
                    mask = batch.response_mask
                    logprobs, entropy = sequence_logprobs(self.model, batch, cfg.temperature)
                    old = logprobs.detach()  # on-policy; padding rows are masked
                    if old_logprobs is not None:
                        old = _pad_rows(old_logprobs, idx, width).to(self.device)
                    ref = None
                    if cfg.kl_coef and ref_logprobs is not None:  # padding: masked anyway
                        ref = _pad_rows(ref_logprobs, idx, width).to(self.device)
                    elif cfg.kl_coef:  # every rank, padding included: the forward is collective
                        with torch.no_grad():
                            ref, _ = sequence_logprobs(self.reference, batch, cfg.temperature)
                    weights, corrected = None, {}
                    if correction.enabled:
                        behaviour = _pad_rows(rollout_logprobs, idx, width).to(self.device)
                        weights, mask, corrected = rollout_correction(
                            old, behaviour, mask, correction
                        )
                    adv = torch.as_tensor(advantages[idx]).to(self.device)[:, None] * mask
                    loss, metrics = policy_loss(
                        logprobs,
                        old,
                        adv,
                        mask,
                        ref_logprobs=ref,
                        entropy=entropy,
                        rollout_is_weights=weights,
                        settings=cfg.loss,
                        global_batch=global_batch,
                    )
                    metrics |= corrected
                    loss.backward()
                    n = batch.num_tokens
                    tokens += n
                    for key, value in metrics.items():
                        weight = 1.0 if key in LOSS_METRICS else n
                        sums[key] = sums.get(key, 0.0) + value * weight
                steps.append(self._optimizer_step())
        metrics = self._reduce_metrics(sums, tokens, len(steps), steps)
        metrics["perf/update_s"] = time.perf_counter() - start
        return metrics

    def _sft_logprobs(self, batch: ModelBatch) -> torch.Tensor:
        """`[batch, response_len]` log-probs, with the vision tower run even on a micro-batch
        without images (text-only planner pairs): FSDP all-gathers the tower's blocks in every
        forward on every rank, in the same order, so a rank that skipped it would desynchronise
        the collectives. A blank patch grid goes through the tower where the images would (just
        before the language model) and its output enters the result times 0."""
        if "pixel_values" in batch.vision:
            return sequence_logprobs(self.model, batch, self.config.temperature)[0]
        vision = self.model.config.vision_config
        merge = vision.spatial_merge_size
        dim = getattr(vision, "in_channels", 3) * vision.temporal_patch_size * vision.patch_size**2
        pixels = torch.zeros((merge * merge, dim), device=self.device)
        grid = torch.tensor([[1, merge, merge]], device=self.device)
        blank: list[torch.Tensor] = []

        def run_tower(*_: Any) -> None:
            out = self.model.model.visual(pixels, grid_thw=grid)
            blank.extend(v.float().sum() for v in out.values() if isinstance(v, torch.Tensor))

        hook = self.model.model.language_model.register_forward_pre_hook(run_tower)
        try:
            logprobs, _ = sequence_logprobs(self.model, batch, self.config.temperature)
        finally:
            hook.remove()
        return logprobs + 0.0 * sum(blank)

    def sft_step(self, samples: Sequence[TrainSample]) -> dict[str, float]:
        """One optimizer step of token-mean cross-entropy on the response tokens only."""
        start = time.perf_counter()
        plan = self._plan(samples, 1)
        global_batch = self._global_batches(plan)[0]
        self.model.train()
        loss_sum = 0.0
        for micro in plan[0]:
            logprobs = self._sft_logprobs(micro.batch)
            loss = agg_loss(
                loss_mat=-logprobs,
                loss_mask=micro.batch.response_mask,
                loss_agg_mode="token-mean",
                dp_size=global_batch.dp_size,
                batch_num_tokens=global_batch.num_tokens,
            )
            loss.backward()
            loss_sum += loss.item()
        norm, lr = self._optimizer_step()
        total = self._global_sum([loss_sum])[0] / self.world_size
        return {
            "sft/loss": total,
            "sft/grad_norm": norm,
            "sft/lr": lr,
            "sft/tokens": float(global_batch.num_tokens),
            "perf/sft_step_s": time.perf_counter() - start,
        }

    @torch.no_grad()
    def sft_eval_loss(self, samples: Sequence[TrainSample]) -> dict[str, float]:
        """Held-out SFT loss: the token-mean cross-entropy of the response tokens over the
        whole batch on all ranks (summed negative log-likelihood / summed tokens, so ranks with
        longer responses weigh more, exactly as if one process saw the union). Forward only."""
        start = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        nll, tokens = 0.0, 0.0
        for micro in self._plan(samples, 1)[0]:  # padding micro-batches have an all-zero mask
            logprobs = self._sft_logprobs(micro.batch)
            nll -= float((logprobs * micro.batch.response_mask).sum())
            tokens += micro.batch.num_tokens
        self.model.train(was_training)
        nll, tokens = self._global_sum([nll, tokens])
        return {
            "eval/loss": nll / max(tokens, 1.0),
            "eval/tokens": tokens,
            "perf/eval_s": time.perf_counter() - start,
        }

    # -- weights out --------------------------------------------------------------------------

    def state_dict_for_sync(self) -> dict[str, torch.Tensor]:
        """Full unsharded weights on CPU for the rollout engines: rank 0 returns them, others {}."""
        return checkpoint.full_state_dict(self.model)

    def save_checkpoint(self, directory: str, extra: dict[str, Any] | None = None) -> str:
        """Atomic sharded checkpoint of model, optimizer, scheduler, step and the driver's
        `extra` (data position, driver RNG...; rank 0's copy is kept)."""
        state = {"scheduler": self.scheduler.state_dict(), "step": self.step, "extra": extra or {}}
        path = checkpoint.save_checkpoint(directory, self.model, self.optimizer, state, self.device)
        return str(path)

    def load_checkpoint(self, directory: str) -> dict[str, Any]:
        """Restore a `save_checkpoint` directory; returns the `extra` dict saved with it."""
        state = checkpoint.load_checkpoint(directory, self.model, self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        return state["extra"]

    def export(self, directory: str) -> str:
        """Write a transformers checkpoint (save_pretrained + processor), atomically."""
        path = checkpoint.export_pretrained(directory, self.model, self.processor, self.device)
        return str(path)

    def shutdown(self) -> None:
        """Leave the process group; the barrier first avoids aborts at exit (DESIGN §5)."""
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
