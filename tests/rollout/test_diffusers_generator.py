"""DiffusersGenerator on the tiny Klein (text-to-image and reference edits) and a tiny Stable
Diffusion (edits through img2img): shapes, seeding, batching, order and errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from itk_rl.interfaces.generator import RenderRequest
from itk_rl.rollout.diffusers_generator import DiffusersGenerator
from itk_rl.tiny import TINY_KLEIN_CALL_KWARGS, build_tokenizer

H, W = 64, 96  # not square, so height and width cannot be swapped unnoticed


def klein(path: Path, **kwargs) -> DiffusersGenerator:
    settings = dict(
        height=H, width=W, num_inference_steps=2, max_batch_size=4,
        call_kwargs=TINY_KLEIN_CALL_KWARGS,
    )  # fmt: skip
    return DiffusersGenerator(str(path), **{**settings, **kwargs})


@pytest.fixture(scope="module")
def gen(tiny_models) -> DiffusersGenerator:
    return klein(tiny_models.klein)


def build_tiny_sd(out_dir: Path) -> Path:
    """A seeded random Stable Diffusion (text-to-image) pipeline, saved: ~0.1 s."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tokenizer("byte")
    tokenizer.model_max_length = 16  # SD pads every prompt to this length
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def sd_path(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="module")
def sd(sd_path) -> DiffusersGenerator:
    return DiffusersGenerator(str(sd_path), height=64, width=64, num_inference_steps=2)


def picture(seed: int, height: int = 64, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def assert_same_image(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to one grey level: batched kernels may round the last float bit differently."""
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def assert_different(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape != b.shape or np.abs(a.astype(int) - b.astype(int)).mean() > 5


def spy_batches(generator: DiffusersGenerator, monkeypatch) -> list[list[str]]:
    """Record the prompts of every pipeline call the generator makes."""
    calls: list[list[str]] = []
    render = generator._render

    def recording(batch):
        calls.append([request.prompt for request in batch])
        return render(batch)

    monkeypatch.setattr(generator, "_render", recording)
    return calls


def test_auto_detects_reference_edits_on_klein_and_img2img_on_sd(gen, sd):
    assert (gen.pipe_class, gen.edit_mode, gen.text_to_image) == (
        "Flux2KleinPipeline",
        "reference",
        True,
    )
    assert gen.edit_pipe is gen.pipe
    assert (sd.edit_mode, type(sd.edit_pipe).__name__) == (
        "img2img",
        "StableDiffusionImg2ImgPipeline",
    )
    assert sd.edit_pipe.unet is sd.pipe.unet  # from_pipe shares the weights


def test_text_to_image_batch(gen):
    images = gen([RenderRequest(f"a red circle number {i}", seed=i) for i in range(3)])
    assert len(images) == 3
    for image in images:
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert_different(images[0], images[1])


def test_an_image_depends_only_on_its_seed_and_prompt(gen, monkeypatch):
    alone = gen([RenderRequest("a blue square", seed=7)])[0]
    assert_same_image(alone, gen([RenderRequest("a blue square", seed=7)])[0])
    assert_different(alone, gen([RenderRequest("a blue square", seed=8)])[0])
    calls = spy_batches(gen, monkeypatch)
    others = [RenderRequest(f"something much longer, number {i}", seed=i) for i in range(3)]
    batch = gen([others[0], RenderRequest("a blue square", seed=7), *others[1:]])
    assert [len(call) for call in calls] == [4]  # really rendered inside one batch
    assert_same_image(alone, batch[1])


def test_edit_with_one_and_two_references(gen):
    before = gen([RenderRequest("a red circle", seed=1)])[0]
    one, two = gen(
        [
            RenderRequest("make it blue", references=(before,), seed=2),
            RenderRequest("put both together", references=(before, picture(0, 64, 80)), seed=2),
        ]
    )
    assert one.shape == two.shape == (H, W, 3) and one.dtype == two.dtype == np.uint8
    # Random weights barely look at references; any change shows the second one was seen.
    assert not np.array_equal(one, two)
    assert_same_image(one, gen([RenderRequest("make it blue", references=(before,), seed=2)])[0])


def test_mixed_batch_returns_in_order_and_groups_compatible_calls(gen, monkeypatch):
    ref_a, ref_b = picture(1), picture(2)
    requests = [
        RenderRequest("a green triangle", seed=3),
        RenderRequest("edit a, first", references=(ref_a,), seed=4),
        RenderRequest("edit b", references=(ref_b,), seed=5),
        RenderRequest("a yellow star", seed=6),
        RenderRequest("edit a, second", references=(ref_a.copy(),), seed=7),
    ]
    alone = [gen([request])[0] for request in requests]
    calls = spy_batches(gen, monkeypatch)
    together = gen(requests)
    for a, b in zip(alone, together, strict=True):
        assert_same_image(a, b)
    # Klein shares `image=` across a call: only edits with identical references batch.
    assert calls == [
        ["a green triangle", "a yellow star"],
        ["edit a, first", "edit a, second"],
        ["edit b"],
    ]


def test_max_batch_size_splits_calls(tiny_models, monkeypatch):
    small = klein(tiny_models.klein, max_batch_size=2)
    calls = spy_batches(small, monkeypatch)
    images = small([RenderRequest(f"p{i}", seed=i) for i in range(5)])
    assert len(images) == 5 and [len(call) for call in calls] == [2, 2, 1]


def test_img2img_edits_keep_the_reference_size_and_batch_per_prompt(sd, monkeypatch):
    t2i = sd([RenderRequest("a red circle", seed=1)])[0]
    assert t2i.shape == (64, 64, 3) and t2i.dtype == np.uint8
    requests = [
        RenderRequest("make it blue", references=(t2i,), seed=2),
        RenderRequest("make it green", references=(picture(3),), seed=3),
        RenderRequest("wider", references=(picture(4, 64, 96),), seed=4),
    ]
    alone = [sd([request])[0] for request in requests]
    calls = spy_batches(sd, monkeypatch)
    together = sd(requests)
    assert [len(call) for call in calls] == [2, 1]  # one image per prompt: same size batches
    for a, b in zip(alone, together, strict=True):
        assert_same_image(a, b)
    assert together[2].shape == (64, 96, 3)
    assert_different(together[0], t2i)


def test_img2img_takes_exactly_one_reference(sd):
    with pytest.raises(ValueError, match=r"request 1 has 2 references.*takes exactly one"):
        sd(
            [
                RenderRequest("a", seed=0),
                RenderRequest("b", references=(picture(0), picture(1))),
            ]
        )


def test_edit_on_a_pipeline_that_cannot_edit_names_model_and_request(tiny_models, sd_path):
    no_edit = klein(tiny_models.klein, edit_mode="none")
    with pytest.raises(
        ValueError, match=rf"request 1 is an edit.*{re.escape(str(tiny_models.klein))}"
    ):
        no_edit([RenderRequest("a"), RenderRequest("b", references=(picture(0),))])
    with pytest.raises(ValueError, match=r"edit_mode='reference'.*StableDiffusionPipeline"):
        DiffusersGenerator(str(sd_path), edit_mode="reference")
    with pytest.raises(ValueError, match=r"edit_mode='img2img'.*Flux2KleinPipeline"):
        klein(tiny_models.klein, edit_mode="img2img")


def test_bad_model_paths_are_named(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        DiffusersGenerator(str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty.*not a diffusers pipeline"):
        DiffusersGenerator(str(tmp_path / "empty"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dtype": "float64"}, "dtype"),
        ({"dtype": "fp16"}, "dtype"),
        ({"device": "gpu"}, "device"),
        ({"edit_mode": "inpaint"}, "edit_mode"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"strength": 1.5}, "strength"),
    ],
)
def test_bad_settings_are_named(tiny_models, kwargs, match):
    with pytest.raises(ValueError, match=match):
        klein(tiny_models.klein, **kwargs)


def test_cuda_device_without_cuda_is_named(tiny_models):
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    with pytest.raises(ValueError, match=r"device='cuda:1'"):
        klein(tiny_models.klein, device="cuda:1")


def test_call_kwargs_are_checked(tiny_models):
    with pytest.raises(ValueError, match=r"call_kwargs\['height'\]"):
        klein(tiny_models.klein, call_kwargs={**TINY_KLEIN_CALL_KWARGS, "height": 32})
    with pytest.raises(ValueError, match=r"call_kwargs\['no_such_arg'\].*Flux2KleinPipeline"):
        klein(tiny_models.klein, call_kwargs={**TINY_KLEIN_CALL_KWARGS, "no_such_arg": 1})


def test_bad_reference_is_named(gen):
    with pytest.raises(ValueError, match=r"request 0 reference 0"):
        gen([RenderRequest("x", references=(np.zeros((64, 64), dtype=np.uint8),))])
