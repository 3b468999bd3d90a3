"""Engines that generate: VLM engines and image generators (imported as itk_rl.rollout)."""
