"""The trainer's settings: one flat, typed record built from the recipe's `trainer` dict.

It crosses the Ray boundary as a plain dict (`OmegaConf.to_container`) and is checked here,
so a misspelt key fails at start-up with its name instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from itk_rl.formats.dtypes import check_dtype
from itk_rl.trainer.grpo import LossSettings, RolloutCorrection


@dataclass(frozen=True)
class TrainerConfig:
    """Defaults follow the paper's critic GRPO (DESIGN §1): lr 2e-6, KL coefficient 1e-3,
    temperature 1.0, vision tower frozen."""

    # Resources, read by TrainerGroup: ranks, and what each rank's actor reserves; custom Ray
    # resources ({name: amount}) and node labels ({label: value}) each rank's placement-group
    # bundle also needs, to place the group on a node type (None: none).
    world_size: int = 1
    num_cpus: float = 1
    num_gpus: float = 0
    resources: dict[str, float] | None = None
    label_selector: dict[str, str] | None = None
    # Seconds any trainer call (placement, update, checkpoint, weight gather) may take before
    # the group counts as failed and is rebuilt from the last checkpoint (None: no limit).
    call_timeout_s: float | None = None
    # Model: parameter dtype ("float32", "bfloat16"), bf16 compute with fp32 gradient reduction,
    # ZeRO-3 (True) or ZeRO-2 (False), activation checkpointing, frozen vision tower.
    dtype: str = "float32"
    mixed_precision: bool = False
    reshard_after_forward: bool = True
    gradient_checkpointing: bool = False
    freeze_vision_tower: bool = True
    seed: int = 0
    # AdamW and the learning-rate schedule ("constant" or "cosine", both after linear warmup;
    # cosine needs total_steps and decays to min_lr_ratio · lr).
    lr: float = 2e-6
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    total_steps: int | None = None
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    # PPO: passes over each batch, samples per optimizer step over all ranks (None: the whole
    # batch, one step), samples per forward on one rank, sampling temperature of the rollout.
    ppo_epochs: int = 1
    ppo_mini_batch_size: int | None = None
    micro_batch_size: int = 4
    temperature: float = 1.0
    # Loss (see grpo.LossSettings); kl_coef 0 also skips loading the reference model.
    clip_ratio: float = 0.2
    clip_ratio_low: float | None = None
    clip_ratio_high: float | None = None
    clip_ratio_c: float = 3.0
    kl_coef: float = 1e-3
    kl_type: str = "low_var_kl"
    entropy_coef: float = 0.0
    loss_agg_mode: str = "token-mean"
    # Rollout correction between the engine's and the trainer's log-probs (see
    # grpo.RolloutCorrection): importance level None|"token"|"sequence", its truncation
    # threshold, verl's rejection modes and their thresholds.
    rollout_is: str | None = None
    rollout_is_threshold: float | str = 2.0
    rollout_rs: str | None = None
    rollout_rs_threshold: float | str | None = None

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TrainerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown trainer config keys {unknown}; known: {sorted(known)}")
        values = dict(config)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        made = cls(**values)
        check_dtype(made.dtype, "trainer.dtype")
        if made.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"trainer.lr_schedule={made.lr_schedule!r}: expected constant|cosine")
        if made.lr_schedule == "cosine" and not made.total_steps:
            raise ValueError("trainer.lr_schedule=cosine needs trainer.total_steps")
        if made.micro_batch_size < 1 or made.ppo_epochs < 1 or made.world_size < 1:
            raise ValueError("trainer.micro_batch_size, ppo_epochs and world_size must be >= 1")
        if made.rollout_is not in (None, "token", "sequence"):
            raise ValueError(
                f"trainer.rollout_is={made.rollout_is!r}: expected null|token|sequence"
            )
        if made.rollout_rs is not None and made.rollout_rs_threshold is None:
            raise ValueError("trainer.rollout_rs needs trainer.rollout_rs_threshold")
        return made

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def loss(self) -> LossSettings:
        names = {f.name for f in dataclasses.fields(LossSettings)}
        return LossSettings(**{k: v for k, v in self.as_dict().items() if k in names})

    @property
    def correction(self) -> RolloutCorrection:
        return RolloutCorrection(
            self.rollout_is, self.rollout_is_threshold, self.rollout_rs, self.rollout_rs_threshold
        )
