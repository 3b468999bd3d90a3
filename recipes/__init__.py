"""Hydra recipes (YAML), importable as `itk_rl.recipes` so Hydra finds them via `pkg://`."""
