"""Tiny models built offline with random weights, saved and loaded exactly like real checkpoints.

`build_tiny_models(dir)` writes a tokenizer, a tiny Qwen2.5-VL, a tiny Qwen3-VL and a tiny
FLUX.2-klein pipeline in a few seconds; tests, the CPU demo and `itk tiny-models DIR` use it.
"""

from itk_rl.tiny.build import TinyModelPaths, build_tiny_models
from itk_rl.tiny.diffusion import TINY_KLEIN_CALL_KWARGS, build_tiny_klein
from itk_rl.tiny.tokenizer import build_tokenizer
from itk_rl.tiny.vlm import TinyVLMConfig, build_tiny_vlm

__all__ = [
    "TINY_KLEIN_CALL_KWARGS",
    "TinyModelPaths",
    "TinyVLMConfig",
    "build_tiny_klein",
    "build_tiny_models",
    "build_tiny_vlm",
    "build_tokenizer",
]
