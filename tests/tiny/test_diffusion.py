"""The tiny Klein pipeline loads by path and renders text-to-image and edits at 64×64."""

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from itk_rl.tiny import TINY_KLEIN_CALL_KWARGS


@pytest.fixture(scope="module")
def pipe(tiny_models):
    pipe = DiffusionPipeline.from_pretrained(tiny_models.klein)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe, prompt, seed=0, **kwargs) -> np.ndarray:
    """Images as [batch, H, W, 3] floats in [0, 1]."""
    return pipe(
        prompt=prompt,
        num_inference_steps=4,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **TINY_KLEIN_CALL_KWARGS,
        **kwargs,
    ).images


def test_is_a_distilled_klein_pipeline(pipe):
    assert type(pipe).__name__ == "Flux2KleinPipeline"
    assert pipe.config.is_distilled
    assert pipe.transformer.config.in_channels == 4 * pipe.vae.config.latent_channels


def test_text_to_image(pipe):
    images = render(pipe, ["a red circle on the left", "a blue square"], height=64, width=64)
    assert images.shape == (2, 64, 64, 3)
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    again = render(pipe, ["a red circle on the left", "a blue square"], height=64, width=64)
    np.testing.assert_array_equal(images, again)  # seeded


def test_edit_with_reference_images(pipe):
    before = Image.fromarray(
        (render(pipe, "a red circle", height=64, width=64)[0] * 255).astype("uint8")
    )
    edited = render(pipe, "make the circle blue", image=before)
    assert edited.shape == (1, 64, 64, 3) and np.isfinite(edited).all()
    second = Image.new("RGB", (96, 64), "white")
    two_refs = render(pipe, "put both together", image=[before, second], height=64, width=96)
    assert two_refs.shape == (1, 64, 96, 3) and np.isfinite(two_refs).all()
    # The default output type: PIL images.
    out = pipe(prompt="x", image=before, num_inference_steps=1, **TINY_KLEIN_CALL_KWARGS)
    assert np.asarray(out.images[0]).shape == (64, 64, 3)
