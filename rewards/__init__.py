"""Reward functions and judges (imported as `itk_rl.rewards`)."""
