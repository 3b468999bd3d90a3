"""Batches of chat + image + response ids, their log-probs, and the loss moving them."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from itk_rl.trainer.batch import TrainSample, build_batch, response_ids_from_text, sequence_logprobs
from itk_rl.trainer.grpo import LossSettings, policy_loss


def make_samples(n: int, seed: int = 0) -> list[TrainSample]:
    """Chats of different lengths, each with one random 48×48 image, random responses."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        image = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        text = "is the circle red? " * (i % 3 + 1)
        content = [{"type": "image"}, {"type": "text", "text": text}]
        response = tuple(int(t) for t in rng.integers(0, 250, 2 + i % 4))
        samples.append(TrainSample(({"role": "user", "content": content},), response, (image,)))
    return samples


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def model_and_processor(request, tiny_models):
    path = getattr(tiny_models, request.param)
    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path)


def test_batch_is_right_padded_with_response_positions(model_and_processor):
    _, processor = model_and_processor
    samples = make_samples(3)
    batch = build_batch(processor, samples)
    lengths = [len(s.response_ids) for s in samples]
    assert batch.response_ids.shape == (3, max(lengths))
    assert batch.response_mask.sum(dim=1).tolist() == lengths
    assert batch.vision["image_grid_thw"].shape == (3, 3)
    for row, sample in enumerate(samples):
        real = int(batch.attention_mask[row].sum())
        assert batch.attention_mask[row, :real].all() and not batch.attention_mask[row, real:].any()
        positions = batch.response_positions[row, : lengths[row]] + 1
        assert batch.input_ids[row, positions].tolist() == list(sample.response_ids)
        assert positions[-1] == real - 1  # the response ends the real tokens


def test_logprobs_do_not_depend_on_batch_padding(model_and_processor):
    model, processor = model_and_processor
    samples = make_samples(3)
    with torch.no_grad():
        batched, entropy = sequence_logprobs(model, build_batch(processor, samples))
        for row, sample in enumerate(samples):
            alone, _ = sequence_logprobs(model, build_batch(processor, [sample]))
            n = len(sample.response_ids)
            torch.testing.assert_close(batched[row, :n], alone[0], atol=1e-5, rtol=1e-5)
    assert (batched <= 0).all() and (entropy >= 0).all()
    assert entropy.max() <= np.log(model.config.text_config.vocab_size) + 1e-4


def test_temperature_scales_logits(model_and_processor):
    model, processor = model_and_processor
    batch = build_batch(processor, make_samples(1))
    with torch.no_grad():
        hot, hot_entropy = sequence_logprobs(model, batch, temperature=10.0)
        cold, cold_entropy = sequence_logprobs(model, batch, temperature=1.0)
    assert (hot_entropy > cold_entropy).all() and not torch.allclose(hot, cold)


def test_image_count_must_match_placeholders(model_and_processor):
    _, processor = model_and_processor
    sample = make_samples(1)[0]
    with pytest.raises(ValueError, match="sample 0: 1 image placeholders but 2 images"):
        build_batch(processor, [TrainSample(sample.messages, (1, 2), sample.images * 2)])
    with pytest.raises(ValueError, match="empty response_ids"):
        build_batch(processor, [TrainSample(sample.messages, (), sample.images)])


def test_response_ids_from_text_end_with_eos(model_and_processor):
    _, processor = model_and_processor
    ids = response_ids_from_text(processor.tokenizer, "<answer>yes</answer>")
    assert ids[-1] == processor.tokenizer.eos_token_id
    assert processor.tokenizer.decode(ids[:-1]) == "<answer>yes</answer>"


def test_policy_loss_moves_positive_advantage_responses_up(tiny_models):
    """A few PPO steps on one repeated batch: the loss falls, log-probs of responses with a
    positive advantage rise and those with a negative one fall."""
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(tiny_models.qwen2_5_vl)
    processor = AutoProcessor.from_pretrained(tiny_models.qwen2_5_vl)
    batch = build_batch(processor, make_samples(4))
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0])
    advantages = sign[:, None] * batch.response_mask
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch.no_grad():
        old, _ = sequence_logprobs(model, batch)
    settings = LossSettings(kl_coef=1e-3)
    losses = []
    for _ in range(5):
        logprobs, entropy = sequence_logprobs(model, batch)
        loss, _ = policy_loss(
            logprobs, old, advantages, batch.response_mask, ref_logprobs=old, entropy=entropy,
            settings=settings,
        )  # fmt: skip
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        new, _ = sequence_logprobs(model, batch)
    mean_change = ((new - old) * batch.response_mask).sum(1) / batch.response_mask.sum(1)
    assert losses[-1] < losses[0]
    assert (mean_change * sign > 0).all(), mean_change
