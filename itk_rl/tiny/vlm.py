"""Tiny Qwen2.5-VL / Qwen3-VL checkpoints with random weights, saved like real ones.

Tests and the CPU demo need the real model classes (chat template, processor, mrope, vision
tower) so that the code paths they exercise are the ones a real checkpoint takes, only small.
Everything is written with `save_pretrained` and read back by path through the Auto classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)
from transformers.utils import is_torchvision_available

VLMFamily = Literal["qwen2_5_vl", "qwen3_vl"]


@dataclass(frozen=True)
class TinyVLMConfig:
    """Sizes of a tiny Qwen-VL model.

    Patch 8 with merge 2 turns a 48×48 image into 3×3 = 9 visual tokens (one per left/centre/
    right cell of the testbed); images below `min_pixels` are upscaled, above `max_pixels`
    downscaled, keeping the aspect ratio. The text head_dim (hidden / heads) is 32 by default:
    vLLM's CPU attention serves 32, 64, 80 and up, not 16 (the vision tower's 16 is fine).
    """

    family: VLMFamily = "qwen2_5_vl"
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    intermediate_size: int = 128
    vision_depth: int = 1
    vision_hidden_size: int = 32
    vision_heads: int = 2
    vision_intermediate_size: int = 64
    patch_size: int = 8
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 48 * 48
    max_pixels: int = 128 * 128
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        families = get_args(VLMFamily)
        if self.family not in families:
            raise ValueError(f"vlm_config.family must be one of {families}, got {self.family!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def mrope_section(family: VLMFamily, head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width) in each family's ratio.

    The sections must sum to head_dim/2, or the rotary embedding silently misaligns.
    Qwen2.5-VL uses 1/4, 3/8, 3/8 ([16, 24, 24] at head_dim 128); Qwen3-VL's interleaved
    layout 3/8, 5/16, 5/16 ([24, 20, 20]).
    """
    half = head_dim // 2
    spatial = (3 * half) // 8 if family == "qwen2_5_vl" else (5 * half) // 16
    section = [half - 2 * spatial, spatial, spatial]
    if min(section) <= 0:
        raise ValueError(f"head_dim {head_dim} is too small for a 3-way mrope split: {section}")
    return section


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Token ids the model config must agree on with the tokenizer (else features mismatch)."""
    names = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
        "bos_token_id": "<|endoftext|>",
        "eos_token_id": "<|im_end|>",
        "pad_token_id": "<|endoftext|>",
    }
    ids = {key: tokenizer.convert_tokens_to_ids(token) for key, token in names.items()}
    missing = [names[k] for k, v in ids.items() if v is None or v == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"tokenizer lacks the Qwen special tokens {missing}")
    return ids


def _model_config(
    cfg: TinyVLMConfig, vocab_size: int, ids: dict[str, int]
) -> Qwen2_5_VLConfig | Qwen3VLConfig:
    """The transformers config; vision `out_hidden_size` must equal the text hidden size."""
    rope = {
        "rope_type": "default",
        "rope_theta": 1_000_000.0,
        "mrope_section": mrope_section(cfg.family, cfg.head_dim),
    }
    text = {
        "vocab_size": vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_parameters": rope,
        "pad_token_id": ids["pad_token_id"],
    }
    vision = {
        "depth": cfg.vision_depth,
        "hidden_size": cfg.vision_hidden_size,
        "intermediate_size": cfg.vision_intermediate_size,
        "num_heads": cfg.vision_heads,
        "patch_size": cfg.patch_size,
        "spatial_merge_size": cfg.merge_size,
        "temporal_patch_size": cfg.temporal_patch_size,
        "out_hidden_size": cfg.hidden_size,
    }
    tokens = {k: ids[k] for k in ("image_token_id", "video_token_id")}
    tokens |= {k: ids[k] for k in ("vision_start_token_id", "vision_end_token_id")}
    if cfg.family == "qwen2_5_vl":
        text |= {"bos_token_id": ids["bos_token_id"], "eos_token_id": ids["eos_token_id"]}
        # Window attention over 4×4 merged cells; the last block attends globally.
        vision |= {
            "window_size": 4 * cfg.patch_size * cfg.merge_size,
            "fullatt_block_indexes": [cfg.vision_depth - 1],
        }
        return Qwen2_5_VLConfig(
            text_config=text,
            vision_config=vision,
            tie_word_embeddings=cfg.tie_word_embeddings,
            **tokens,
        )
    rope["mrope_interleaved"] = True
    text["head_dim"] = cfg.head_dim
    side = max(cfg.max_pixels, cfg.min_pixels) ** 0.5 // cfg.patch_size
    vision |= {
        "hidden_act": "gelu_pytorch_tanh",
        "num_position_embeddings": int(side) ** 2,
        "deepstack_visual_indexes": [0],
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=cfg.tie_word_embeddings,
        **tokens,
    )


def _processor(cfg: TinyVLMConfig, tokenizer: PreTrainedTokenizerBase) -> ProcessorMixin:
    """The family's own processor classes, configured for the tiny vision tower.

    `size` is passed explicitly: the processors' `min_pixels=` path edits a class-level dict.
    """
    if not is_torchvision_available():
        raise ImportError(
            "Qwen-VL processors need a video processor, which needs torchvision: install "
            "torchvision (on a CPU-only torch host, the wheel matching torch with --no-deps; "
            "itk_rl.compat.torchvision_cpu makes it importable)"
        )
    common = {
        "size": {"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels},
        "patch_size": cfg.patch_size,
        "merge_size": cfg.merge_size,
        "temporal_patch_size": cfg.temporal_patch_size,
    }
    if cfg.family == "qwen2_5_vl":
        image = Qwen2VLImageProcessor(**common)
        video = Qwen2VLVideoProcessor(**common)
        return Qwen2_5_VLProcessor(image, tokenizer, video, chat_template=tokenizer.chat_template)
    half = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    image = Qwen2VLImageProcessor(**common, **half)
    video = Qwen3VLVideoProcessor(**common, **half)
    return Qwen3VLProcessor(image, tokenizer, video, chat_template=tokenizer.chat_template)


def build_tiny_vlm(
    out_dir: Path | str,
    tokenizer: PreTrainedTokenizerBase,
    config: TinyVLMConfig | None = None,
    seed: int = 0,
) -> Path:
    """Create a seeded random tiny VLM and save model + processor into `out_dir`.

    Loads back with `AutoModelForImageTextToText.from_pretrained(out_dir)` and
    `AutoProcessor.from_pretrained(out_dir)`. Returns `out_dir`.
    """
    cfg = config or TinyVLMConfig()
    out = Path(out_dir)
    ids = _special_ids(tokenizer)
    model_config = _model_config(cfg, len(tokenizer), ids)
    model_class = (
        Qwen2_5_VLForConditionalGeneration
        if cfg.family == "qwen2_5_vl"
        else Qwen3VLForConditionalGeneration
    )
    torch.manual_seed(seed)
    model: PreTrainedModel = model_class(model_config)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos_token_id"],
        eos_token_id=[ids["eos_token_id"], ids["pad_token_id"]],
        pad_token_id=ids["pad_token_id"],
    )
    model.save_pretrained(out)
    _processor(cfg, tokenizer).save_pretrained(out)
    return out
