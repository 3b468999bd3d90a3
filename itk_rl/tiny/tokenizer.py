"""Tiny Qwen2-family tokenizers built offline: byte-level, or a small word-level BPE.

Both are `transformers.Qwen2Tokenizer`s (so `AutoTokenizer.from_pretrained(path)` loads them back
like a real Qwen checkpoint's), carry Qwen's special tokens and a Qwen-style chat template that
understands multimodal content lists. Like Qwen's own tokenizer they NFC-normalize, so any
NFC text (all ordinary text) round-trips exactly.

"byte" has only the 256 byte tokens: nothing to train, but responses get long. "word" trains a
byte-level BPE on a corpus so frequent words become single tokens: a tiny critic must see the
same word as the same token in instruction and reasoning to learn to compare them (DESIGN §5).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Literal

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Always part of the word-level training text, so the agents' response formats stay compact.
FORMAT_TEXT = (
    "<think>\n</think>\n<answer>\n</answer>\n"
    '{"execution_plan": [{"step_number": 1, "step_name": "", "instruction": "", "prompt": "", '
    '"auxiliary_text": ""}]}\n'
    '{"previous_step_success": true, "refine_prompt": ""}\n'
    '{"previous_step_success": false, "refine_prompt": ""}\n'
    "system\nuser\nassistant\n"
)

# Qwen-style chat template (written for these tiny models): no default system prompt (as in
# Qwen3-VL), images and videos inside content lists become vision placeholders that the
# processor expands to one pad token per visual token.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}"
    "{{- message['content'] }}"
    "{%- else %}"
    "{%- for item in message['content'] %}"
    "{%- if item['type'] in ('image', 'image_url') or 'image' in item %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'video' or 'video' in item %}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in item %}"
    "{{- item['text'] }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


def _byte_vocab() -> dict[str, int]:
    """The 256 byte-level symbols in byte order (id = byte value)."""
    return {symbol: i for i, symbol in enumerate(_byte_symbols())}


def _byte_symbols() -> list[str]:
    """ByteLevel's printable stand-ins for bytes 0..255, in byte order (GPT-2's mapping)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def _train_bpe(
    corpus: Iterable[str], vocab_size: int
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE with exactly Qwen2Tokenizer's normalizer and pre-tokenizer.

    The pipeline must match the one `Qwen2Tokenizer` rebuilds on load, or the learned merges
    would not apply the same way after a save/load round trip.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=_byte_symbols(), show_progress=False
    )
    # Repeated so the format markers outrank one-off corpus words for the merges.
    tokenizer.train_from_iterator([FORMAT_TEXT] * 4 + list(corpus), trainer=trainer)
    vocab = dict(_byte_vocab())
    learned = tokenizer.get_vocab()
    for symbol in sorted(learned, key=learned.__getitem__):
        vocab.setdefault(symbol, len(vocab))
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return vocab, [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def build_tokenizer(
    kind: Literal["byte", "word"],
    corpus: Iterable[str] | None = None,
    vocab_size: int = 400,
) -> Qwen2Tokenizer:
    """Build a Qwen2 tokenizer with Qwen's special tokens and chat template.

    kind: "byte" (256 byte tokens, no merges; `corpus` and `vocab_size` unused) or "word"
    (byte-level BPE trained on `corpus` plus the agents' answer formats, at most `vocab_size`
    tokens before the special tokens; fewer when the corpus has no more pairs to merge).
    """
    if kind == "byte":
        vocab, merges = _byte_vocab(), []
    elif kind == "word":
        if vocab_size <= 256:
            raise ValueError(f"vocab_size must exceed the 256 byte tokens, got {vocab_size}")
        vocab, merges = _train_bpe(corpus or (), vocab_size)
    else:
        raise ValueError(f"tokenizer kind must be 'byte' or 'word', got {kind!r}")
    # Special tokens get fixed ids right after the regular vocabulary, in Qwen's order.
    vocab = {**vocab, **{t: len(vocab) + i for i, t in enumerate(SPECIAL_TOKENS)}}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[
            t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")
        ],
        chat_template=CHAT_TEMPLATE,
    )
    return tokenizer
