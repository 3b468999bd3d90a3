"""The trainer config names what is wrong with it."""

import pytest

from itk_rl.trainer.config import TrainerConfig


def test_defaults_follow_the_paper_and_feed_the_loss():
    config = TrainerConfig.from_dict({"kl_type": "k3", "betas": [0.9, 0.95]})
    assert (config.lr, config.kl_coef, config.temperature) == (2e-6, 1e-3, 1.0)
    assert config.freeze_vision_tower and config.betas == (0.9, 0.95)
    assert config.loss.kl_type == "k3" and config.loss.kl_coef == 1e-3


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"learning_rate": 1e-5}, r"unknown trainer config keys \['learning_rate'\]"),
        ({"lr_schedule": "cosine"}, "needs trainer.total_steps"),
        ({"lr_schedule": "linear"}, "expected constant|cosine"),
        ({"micro_batch_size": 0}, "must be >= 1"),
    ],
)
def test_bad_values_name_the_key(values, message):
    with pytest.raises(ValueError, match=message):
        TrainerConfig.from_dict(values)
