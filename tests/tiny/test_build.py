"""build_tiny_models: builds all four, reuses a complete build, rebuilds an incomplete one."""

import json

from itk_rl.tiny import build_tiny_models
from itk_rl.tiny.build import MARKER


def test_builds_everything_then_reuses_it(tmp_path):
    paths = build_tiny_models(tmp_path)
    for path in (paths.tokenizer, paths.qwen2_5_vl, paths.qwen3_vl, paths.klein):
        assert path.is_dir() and any(path.iterdir())
    assert (paths.klein / "model_index.json").exists()
    weights = paths.qwen2_5_vl / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert build_tiny_models(tmp_path) == paths
    assert weights.stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_missing_marker_means_incomplete_and_rebuilds(tmp_path):
    paths = build_tiny_models(tmp_path)
    (paths.root / MARKER).unlink()
    (paths.qwen3_vl / "model.safetensors").unlink()  # as if the build had crashed here
    build_tiny_models(tmp_path)
    assert (paths.qwen3_vl / "model.safetensors").exists()
    assert (paths.root / MARKER).exists()


def test_other_settings_rebuild(tmp_path):
    corpus = ["a red circle on the left"] * 10
    build_tiny_models(tmp_path)
    paths = build_tiny_models(tmp_path, tokenizer_kind="word", corpus=corpus, vocab_size=300)
    spec = json.loads((paths.root / MARKER).read_text())
    assert spec["tokenizer_kind"] == "word" and spec["vocab_size"] == 300
    config = json.loads((paths.qwen2_5_vl / "config.json").read_text())
    assert config["text_config"]["vocab_size"] == 300 + 14


def test_same_seed_same_weights(tmp_path):
    first = build_tiny_models(tmp_path / "a", seed=3)
    second = build_tiny_models(tmp_path / "b", seed=3)
    for name in (
        "qwen3_vl/model.safetensors",
        "klein/transformer/diffusion_pytorch_model.safetensors",
    ):
        assert (first.root / name).read_bytes() == (second.root / name).read_bytes(), name
