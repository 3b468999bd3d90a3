"""A tiny FLUX.2-klein pipeline with random weights, saved like the real one.

The generator pool loads a diffusers pipeline by path and calls it for text-to-image and for
edits with reference images (`image=`). This builds the same `Flux2KleinPipeline` classes at a
size that renders 64×64 in 4 steps in well under a second on a CPU, so that code path is tested
for real. Random weights: the images are noise, only their shapes and values are meaningful.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLFlux2,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Transformer2DModel,
)
from transformers import PreTrainedTokenizerBase, Qwen3Config, Qwen3ForCausalLM

from itk_rl.tiny.tokenizer import build_tokenizer

TEXT_HIDDEN = 32
TEXT_LAYERS = 2
# Hidden states stacked into the prompt embedding. The pipeline's default (9, 18, 27) indexes a
# 36-layer encoder; index 0 is the embedding output, so a 2-layer encoder has 0, 1 and 2.
TEXT_ENCODER_OUT_LAYERS = (0, 1, 2)
LATENT_CHANNELS = 4

# Arguments every call of the tiny pipeline needs beside the prompt (the pipeline's defaults
# fit the real checkpoint): pass them through the generator's config.
TINY_KLEIN_CALL_KWARGS: dict[str, Any] = {
    "text_encoder_out_layers": TEXT_ENCODER_OUT_LAYERS,
    "max_sequence_length": 64,
}


def _text_encoder(tokenizer: PreTrainedTokenizerBase) -> Qwen3ForCausalLM:
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=2 * TEXT_HIDDEN,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=TEXT_HIDDEN // 2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return Qwen3ForCausalLM(config)


def _vae() -> AutoencoderKLFlux2:
    """Three resolution levels: 4× downsampling, latents 4 channels (16 after 2×2 patching)."""
    levels = 3
    return AutoencoderKLFlux2(
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=64,
        mid_block_add_attention=False,
    )


def _transformer() -> Flux2Transformer2DModel:
    """One double- and one single-stream block; inputs are 2×2-patched latents (4 × channels).

    `joint_attention_dim` is the width of the stacked text hidden states; the four rope axes
    (time, height, width, sequence) must sum to the head dim. No guidance embedding: distilled.
    """
    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4 * LATENT_CHANNELS,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_HIDDEN * len(TEXT_ENCODER_OUT_LAYERS),
        timestep_guidance_channels=32,
        mlp_ratio=2.0,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )


def _scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Flow matching with resolution-dependent shift (the pipeline passes `mu`)."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def build_tiny_klein(
    out_dir: Path | str,
    seed: int = 0,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Path:
    """Create a seeded random `Flux2KleinPipeline` and save it into `out_dir`.

    Loads back with `DiffusionPipeline.from_pretrained(out_dir)`; call it with
    `**TINY_KLEIN_CALL_KWARGS`. `tokenizer` defaults to the byte-level one (prompts are
    arbitrary text, so a corpus-trained vocabulary buys nothing here). Returns `out_dir`.
    """
    tokenizer = tokenizer or build_tokenizer("byte")
    torch.manual_seed(seed)
    pipe = Flux2KleinPipeline(
        scheduler=_scheduler(),
        vae=_vae(),
        text_encoder=_text_encoder(tokenizer),
        tokenizer=tokenizer,
        transformer=_transformer(),
        is_distilled=True,
    )
    out = Path(out_dir)
    pipe.save_pretrained(out)
    return out
