"""The tiny Qwen-VL models load by path like real checkpoints and run generate, log-probs, grads."""

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from itk_rl.tiny import TinyVLMConfig
from itk_rl.tiny.vlm import mrope_section

FAMILIES = ["qwen2_5_vl", "qwen3_vl"]


@pytest.fixture(scope="module", params=FAMILIES)
def vlm(request, tiny_models):
    path = getattr(tiny_models, request.param)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    return request.param, model, processor


def conversations(n_text: int = 2) -> list[list[dict]]:
    """Two chats of different lengths, each with one image (48×48, and a small one upscaled)."""
    images = [Image.new("RGB", (48, 48), (220, 30, 30)), Image.new("RGB", (24, 32), (0, 0, 200))]
    return [
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": image},
                    {"type": "text", "text": "is there a circle?" * (i * n_text + 1)},
                ],
            }
        ]
        for i, image in enumerate(images)
    ]


def encode(processor, chats):
    """Batch with left padding, as generation needs."""
    return processor.apply_chat_template(
        chats,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True, "padding_side": "left"},
    )


def response_logprobs(model, inputs, response_ids: torch.Tensor) -> torch.Tensor:
    """Log-prob of each response token given prompt and image: [batch, response_len].

    Test-local: the trainer keeps its own, batched and masked, version.
    """
    input_ids = torch.cat([inputs["input_ids"], response_ids], dim=1)
    attention_mask = torch.cat([inputs["attention_mask"], torch.ones_like(response_ids)], dim=1)
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in extra:
        extra["mm_token_type_ids"] = torch.cat(
            [extra["mm_token_type_ids"], torch.zeros_like(response_ids)], dim=1
        )
    logits = model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
    prompt_len = inputs["input_ids"].shape[1]
    logits = logits[:, prompt_len - 1 : -1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)


def test_loads_as_the_real_classes(vlm):
    family, model, processor = vlm
    assert model.config.model_type == family
    assert type(processor).__name__ == {"qwen2_5_vl": "Qwen2_5_VLProcessor"}.get(
        family, "Qwen3VLProcessor"
    )
    assert model.config.vision_config.out_hidden_size == model.config.text_config.hidden_size
    head_dim = model.config.text_config.hidden_size // model.config.text_config.num_attention_heads
    assert sum(model.config.text_config.rope_parameters["mrope_section"]) == head_dim // 2
    tokenizer = processor.tokenizer
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert model.generation_config.eos_token_id[0] == tokenizer.eos_token_id
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_48px_image_gives_nine_visual_tokens(vlm):
    _, _, processor = vlm
    inputs = encode(processor, conversations())
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    counts = (inputs["input_ids"] == image_id).sum(dim=1).tolist()
    assert counts[0] == 9  # 48×48 at patch 8, merge 2
    assert counts[1] >= 9  # smaller images are upscaled to min_pixels


def test_generate_on_a_left_padded_batch(vlm):
    _, model, processor = vlm
    inputs = encode(processor, conversations())
    assert (inputs["attention_mask"][:, 0] == 0).any()  # left padding happened
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=8, do_sample=True, temperature=1.0)
    prompt_len = inputs["input_ids"].shape[1]
    assert out.shape[0] == 2
    assert prompt_len < out.shape[1] <= prompt_len + 8
    assert torch.equal(out[:, :prompt_len], inputs["input_ids"])
    assert int(out.max()) < len(processor.tokenizer)


def test_response_logprobs_and_backward(vlm):
    _, model, processor = vlm
    inputs = encode(processor, conversations())
    response = processor.tokenizer(["<answer>yes", "<answer>no!"], return_tensors="pt")
    response_ids = response["input_ids"]
    model.train()
    model.zero_grad()
    logprobs = response_logprobs(model, inputs, response_ids)
    assert logprobs.shape == response_ids.shape
    assert torch.isfinite(logprobs).all() and (logprobs <= 0).all()
    (-logprobs.mean()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    vision_grads = [p.grad for n, p in model.named_parameters() if "visual" in n]
    assert any(g.abs().sum() > 0 for g in vision_grads)  # the image reaches the loss
    model.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_mrope_section_sums_to_half_head_dim(family):
    for head_dim in (16, 32, 64, 128):
        section = mrope_section(family, head_dim)
        assert sum(section) == head_dim // 2 and min(section) > 0
    assert mrope_section("qwen2_5_vl", 128) == [16, 24, 24]
    assert mrope_section("qwen3_vl", 128) == [24, 20, 20]


def test_config_reloads_through_auto_config(tiny_models):
    config = AutoConfig.from_pretrained(tiny_models.qwen3_vl)
    assert config.text_config.hidden_size == TinyVLMConfig().hidden_size


def test_left_padding_does_not_change_logprobs(vlm):
    """The padded (shorter) chat scores its response as it does alone: positions and masks agree."""
    _, model, processor = vlm
    chats = conversations()
    response_ids = processor.tokenizer(["<answer>yes"] * 2, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        batched = response_logprobs(model, encode(processor, chats), response_ids)
        alone = response_logprobs(model, encode(processor, chats[:1]), response_ids[:1])
    torch.testing.assert_close(batched[:1], alone, atol=1e-4, rtol=1e-4)


def test_an_unknown_family_is_named() -> None:
    with pytest.raises(ValueError, match=r"vlm_config.family .*'qwen2_vl'"):
        TinyVLMConfig(family="qwen2_vl")
