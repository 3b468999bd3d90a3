"""Engines that generate: critic/planner VLM engines and image generators (imported as `itk_rl.rollout`)."""
