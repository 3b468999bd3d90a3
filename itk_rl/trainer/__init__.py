"""The FSDP2 trainer: W Ray actors forming one group, driven by the recipe.

`TrainerGroup` is what a driver uses; `TrainerWorker` is one rank; `grpo` holds the math
(verl's estimator and loss); `batch` turns chats + responses into model inputs; `sharding`
is the one FSDP2 setup function; `checkpoint` writes checkpoints and exports atomically.
Import `TrainerGroup` from `itk_rl.trainer.group` (it imports Ray).
"""

from itk_rl.trainer.batch import ModelBatch, TrainSample, build_batch, sequence_logprobs
from itk_rl.trainer.config import TrainerConfig

__all__ = ["ModelBatch", "TrainSample", "TrainerConfig", "build_batch", "sequence_logprobs"]
