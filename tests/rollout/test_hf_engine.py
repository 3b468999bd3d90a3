"""TransformersEngine on the tiny Qwen2.5-VL / Qwen3-VL: batching, seeds, log-probs, weight sync.

Random weights emit junk text, so the checks are on shapes, finiteness and equalities. The
log-prob checks use a "sharp" copy of each tiny model (lm_head scaled up, so the distribution is
far from uniform and a wrong position or temperature shows) whose generation_config.json carries
hostile sampling defaults the engine must ignore. transformers is imported inside fixtures,
after itk_rl, whose import makes the CUDA torchvision wheel importable on a CPU-only host.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from itk_rl.interfaces.engine import ChatRequest, Completion, SamplingParams
from itk_rl.rollout.hf_engine import TransformersEngine, _Sampler, _top_p

FAMILIES = ["qwen2_5_vl", "qwen3_vl"]
LM_HEAD_SCALE = 25.0  # logits std ~0.16 -> ~4: sampled log-probs spread well around -0.5


def chat_requests(seeds: tuple[int | None, int | None] = (0, 1)) -> list[ChatRequest]:
    """Two chats of different lengths, one image each (48×48, and a small one upscaled)."""
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (48, 48, 3), np.uint8),
        rng.integers(0, 256, (24, 32, 3), np.uint8),
    ]
    return [
        ChatRequest(
            messages=(
                {"role": "system", "content": "You are a critic."},
                {
                    "role": "user",
                    "content": [
                        {"type": "image"},
                        {"type": "text", "text": "is there a red circle? " * (2 * i + 1)},
                    ],
                },
            ),
            images=(image,),
            seed=seed,
        )
        for i, (image, seed) in enumerate(zip(images, seeds, strict=True))
    ]


def token_ids(out: list[list[Completion]]) -> list[list[tuple[int, ...]]]:
    return [[c.token_ids for c in completions] for completions in out]


@pytest.fixture(scope="module", params=FAMILIES)
def family_path(request, tiny_models) -> Path:
    return getattr(tiny_models, request.param)


@pytest.fixture(scope="module")
def engine(family_path: Path) -> TransformersEngine:
    return TransformersEngine(str(family_path), max_batch_size=8)


@pytest.fixture(scope="module")
def sharp_path(family_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with lm_head × LM_HEAD_SCALE and sampling defaults that would distort
    the distribution if the engine let them through."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

    out = tmp_path_factory.mktemp(f"sharp_{family_path.name}")
    model = AutoModelForImageTextToText.from_pretrained(family_path)
    with torch.no_grad():
        model.lm_head.weight.mul_(LM_HEAD_SCALE)
    ids = model.generation_config
    model.generation_config = GenerationConfig(
        bos_token_id=ids.bos_token_id,
        eos_token_id=ids.eos_token_id,
        pad_token_id=ids.pad_token_id,
        do_sample=True,
        temperature=0.1,
        top_k=2,
        repetition_penalty=3.0,
    )
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(family_path).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def sharp_engine(sharp_path: Path) -> TransformersEngine:
    return TransformersEngine(str(sharp_path))


def forward_logprobs(
    engine: TransformersEngine, request: ChatRequest, response: tuple[int, ...], temperature: float
) -> torch.Tensor:
    """Log-probs of `response` `[num_tokens]` from one training-style forward pass, over the
    distribution the engine samples from (its blocked vision-placeholder ids excluded).

    Encodes the prompt through the processor's tokenizing chat-template path (images inlined in
    the messages), not the engine's, so the two are checked against each other.
    """
    images = iter(request.images)
    messages = [
        {
            **m,
            "content": m["content"]
            if isinstance(m["content"], str)
            else [
                {"type": "image", "image": Image.fromarray(next(images))}
                if p["type"] == "image"
                else p
                for p in m["content"]
            ],
        }
        for m in request.messages
    ]
    inputs = engine.processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    response_ids = torch.tensor([response])
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    if "mm_token_type_ids" in extra:
        extra["mm_token_type_ids"] = torch.cat(
            [extra["mm_token_type_ids"], torch.zeros_like(response_ids)], dim=1
        )
    input_ids = torch.cat([inputs["input_ids"], response_ids], dim=1)
    with torch.no_grad():
        logits = engine.model(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **extra
        ).logits
    prompt_len = inputs["input_ids"].shape[1]
    logits = logits[0, prompt_len - 1 : -1].float() / temperature
    logits[:, engine.blocked_ids] = -float("inf")
    return torch.log_softmax(logits, dim=-1).gather(-1, response_ids[0].unsqueeze(-1)).squeeze(-1)


def test_batch_of_two_with_images_and_two_samples(engine: TransformersEngine) -> None:
    out = engine.generate(chat_requests(), SamplingParams(max_new_tokens=10, n=2))
    assert [len(completions) for completions in out] == [2, 2]
    for completion in (c for completions in out for c in completions):
        assert isinstance(completion.text, str)
        assert 1 <= len(completion.token_ids) == len(completion.logprobs) <= 10
        assert all(math.isfinite(lp) and lp <= 0 for lp in completion.logprobs)
        eos_positions = [t for t, tok in enumerate(completion.token_ids) if tok in engine.eos_ids]
        assert eos_positions in ([], [len(completion.token_ids) - 1])  # eos only last, kept
        assert all(0 <= tok < len(engine.tokenizer) for tok in completion.token_ids)


def test_seeds_reproduce_across_calls_batches_and_chunking(engine: TransformersEngine) -> None:
    params = SamplingParams(max_new_tokens=8, n=2)
    first = engine.generate(chat_requests(), params)
    assert token_ids(engine.generate(chat_requests(), params)) == token_ids(first)
    alone = engine.generate(chat_requests()[1:], params)
    assert token_ids(alone) == token_ids(first)[1:]  # batch composition does not matter
    engine.max_batch_size = 1
    try:
        assert token_ids(engine.generate(chat_requests(), params)) == token_ids(first)
    finally:
        engine.max_batch_size = 8
    other = engine.generate(chat_requests(seeds=(5, 6)), params)
    assert token_ids(other) != token_ids(first)
    assert first[0][0].token_ids != first[0][1].token_ids  # the n samples differ


def test_greedy_is_deterministic_without_seeds(engine: TransformersEngine) -> None:
    params = SamplingParams(max_new_tokens=8, temperature=0.0, n=2)
    out = engine.generate(chat_requests(seeds=(None, None)), params)
    again = engine.generate(chat_requests(seeds=(None, None)), params)
    assert token_ids(out) == token_ids(again)
    assert all(c[0].token_ids == c[1].token_ids for c in out)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_equal_a_forward_pass(sharp_engine: TransformersEngine, temperature) -> None:
    """What RL relies on: the rollout's log-probs are the trainer's, at the sampling temperature."""
    requests = chat_requests()
    out = sharp_engine.generate(
        requests, SamplingParams(max_new_tokens=12, temperature=temperature)
    )
    logprobs = [lp for completions in out for lp in completions[0].logprobs]
    assert min(logprobs) < -0.5 and max(logprobs) > -0.5  # far from uniform, not saturated
    for request, (completion,) in zip(requests, out, strict=True):
        expected = forward_logprobs(sharp_engine, request, completion.token_ids, temperature)
        torch.testing.assert_close(
            torch.tensor(completion.logprobs), expected, atol=1e-4, rtol=1e-4
        )


def test_greedy_logprobs_are_untempered_and_top_p_renormalizes(sharp_engine) -> None:
    request = chat_requests()[:1]
    ((greedy,),) = sharp_engine.generate(request, SamplingParams(max_new_tokens=8, temperature=0))
    expected = forward_logprobs(sharp_engine, request[0], greedy.token_ids, 1.0)
    torch.testing.assert_close(torch.tensor(greedy.logprobs), expected, atol=1e-4, rtol=1e-4)
    ((nucleus,),) = sharp_engine.generate(request, SamplingParams(max_new_tokens=8, top_p=0.5))
    full = forward_logprobs(sharp_engine, request[0], nucleus.token_ids, 1.0)
    # Renormalizing over the kept tokens raises every sampled token's log-prob.
    assert (torch.tensor(nucleus.logprobs) >= full - 1e-5).all()
    assert (torch.tensor(nucleus.logprobs) > full + 1e-3).any()


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = torch.log(torch.tensor([[0.1, 0.5, 0.15, 0.25]]))
    kept = lambda p: torch.isfinite(_top_p(logits, p))[0].tolist()  # noqa: E731
    assert kept(0.5) == [False, True, False, False]
    assert kept(0.6) == [False, True, False, True]
    assert kept(0.9) == [False, True, True, True]
    assert kept(1.0) == [True] * 4


def test_update_weights_equals_a_model_saved_with_them(
    family_path: Path, tmp_path: Path, engine: TransformersEngine
) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(family_path)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    model.save_pretrained(tmp_path)
    AutoProcessor.from_pretrained(family_path).save_pretrained(tmp_path)
    params = SamplingParams(max_new_tokens=8, n=2)

    target = TransformersEngine(str(family_path))
    before = target.generate(chat_requests(), params)
    assert target.update_weights(model.state_dict()) == len(model.state_dict())
    after = target.generate(chat_requests(), params)
    saved = TransformersEngine(str(tmp_path)).generate(chat_requests(), params)
    assert [[c.logprobs for c in r] for r in after] == [[c.logprobs for c in r] for r in saved]
    assert token_ids(after) == token_ids(saved)
    assert [[c.logprobs for c in r] for r in after] != [[c.logprobs for c in r] for r in before]

    with pytest.raises(KeyError, match=r"not\.a\.weight"):
        engine.update_weights({"not.a.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"'lm_head.weight' has shape \[1\]"):
        engine.update_weights([("lm_head.weight", torch.zeros(1))])


def test_bad_model_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        TransformersEngine(str(missing))
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(OSError, match="empty_folder"):
        TransformersEngine(str(empty))


def test_invalid_requests_and_params_fail_before_running(engine: TransformersEngine) -> None:
    good = chat_requests()[0]
    bad = ChatRequest(messages=good.messages, images=good.images * 2)
    with pytest.raises(ValueError, match=r"request 1: 1 image placeholder\(s\).* 2 image\(s\)"):
        engine.generate([good, bad], SamplingParams(max_new_tokens=2))
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        engine.generate([good], SamplingParams(temperature=-1.0))
    with pytest.raises(ValueError, match="n must be >= 1"):
        engine.generate([good], SamplingParams(n=0))


def test_vision_placeholder_tokens_are_never_sampled(engine: TransformersEngine) -> None:
    """A response holding an image placeholder would be read as an image slot when it is fed
    back for training, so the engine blocks those ids even when they are the most likely."""
    config = engine.model.config
    assert set(engine.blocked_ids) >= {config.image_token_id, config.video_token_id}
    scores = torch.zeros((2, engine.model.config.get_text_config().vocab_size))
    scores[:, engine.blocked_ids] = 50.0  # by far the most likely tokens
    for temperature in (0.0, 1.0):
        sampler = _Sampler(
            SamplingParams(temperature=temperature), [0, 1], torch.device("cpu"), engine.blocked_ids
        )
        for _ in range(20):
            sampler(torch.zeros((2, 1), dtype=torch.long), scores.clone())
        drawn = {token for row in sampler.tokens for token in row}
        assert not drawn & set(engine.blocked_ids)
