"""The tiny tokenizers: exact round trips, compact words, Qwen special tokens and chat template."""

import pytest
from transformers import AutoTokenizer

from itk_rl.tiny import build_tokenizer
from itk_rl.tiny.tokenizer import SPECIAL_TOKENS

CORPUS = [
    "<think>left red circle; centre none; right blue square</think>",
    '<answer>{"previous_step_success": false, "refine_prompt": "a red circle on the left"}'
    "</answer>",
    "draw a green triangle in the centre and a blue square on the right",
] * 30

TEXTS = [
    "",
    "plain ascii text, with punctuation!?",
    "  leading and trailing spaces \n\n\ttabs\r\nand CRLF ",
    "unicode: héllo wörld ñ 日本語 😀🎨 — “quotes”",
    '<think>reasoning</think><answer>{"a": [1, 2.5, null]}</answer>',
    "words never seen in training: xylophone quagmire 12345",
]


@pytest.fixture(scope="module", params=["byte", "word"])
def tokenizer(request, tmp_path_factory):
    """Each kind, saved and loaded back by path as every user of it will."""
    path = tmp_path_factory.mktemp(f"tok_{request.param}")
    build_tokenizer(request.param, CORPUS).save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trips_text_exactly(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_is_a_qwen2_tokenizer_with_qwen_special_tokens(tokenizer):
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    for token in SPECIAL_TOKENS:
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [
            tokenizer.convert_tokens_to_ids(token)
        ]


def test_byte_kind_is_bytes_plus_special_tokens():
    tokenizer = build_tokenizer("byte")
    assert len(tokenizer) == 256 + len(SPECIAL_TOKENS)
    assert len(tokenizer("héllo", add_special_tokens=False)["input_ids"]) == len("héllo".encode())


def test_word_kind_makes_corpus_words_and_format_tags_compact():
    tokenizer = build_tokenizer("word", CORPUS, vocab_size=400)
    assert len(tokenizer) == 400 + len(SPECIAL_TOKENS)
    for word in ["red", "circle", "centre", "blue", "square", "triangle", "left", "right"]:
        assert len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1, word
    for tag in ["<think>", "</think>", "<answer>", "</answer>"]:
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) <= 3, tag


def test_chat_template_expands_images_and_adds_generation_prompt(tokenizer):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]},
        {"role": "assistant", "content": "a circle"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nbe brief<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>what?<|im_end|>\n"
        "<|im_start|>assistant\na circle<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    without = tokenizer.apply_chat_template(messages[:2], tokenize=False)
    assert without.endswith("what?<|im_end|>\n")


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="kind"):
        build_tokenizer("chars")  # type: ignore[arg-type]
