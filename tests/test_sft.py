"""The SFT driver end to end on a local Ray cluster with 2 FSDP ranks on gloo.

One shared set of inputs (a small testbed data build and the tiny models, made by the recipe's
own `prepare`); short runs: an uninterrupted critic run, an interrupted one resumed with
`resume=auto` (its next step must equal the uninterrupted run's), a planner run and a run whose
record file does not exist. Learning thresholds are measured by benchmarks/sft_testbed.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from itk_rl.interfaces.engine import ChatRequest, SamplingParams
from itk_rl.rollout.hf_engine import TransformersEngine
from itk_rl.sft import sft


def _config(recipe: str, inputs: Path, out: Path, *overrides: str):
    base = [
        f"output_dir={out}",
        f"prepare.data_dir={inputs / 'data'}",
        "prepare.data_overrides=['prompts.count=40']",
        f"prepare.tiny_models_dir={inputs / 'tiny_models'}",
        "data.batch_size=4",
        "data.max_eval_samples=8",
        "epochs=3",  # 40 prompts give a few batches of 4: enough for max_steps=4
        "eval_every=1",
        "checkpoint_every=2",
        "trainer.micro_batch_size=2",
        "check.num_prompts=0",
    ]
    with initialize_config_module("itk_rl.recipes", version_base="1.3"):
        return compose(recipe, overrides=[*base, *overrides])


def _metrics(run: Path) -> dict[int, dict[str, float]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {record["step"]: record for record in map(json.loads, lines)}


def _deterministic(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith(("time/", "perf/"))}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sft_inputs")


@pytest.mark.usefixtures("ray_local")
def test_critic_sft_lowers_the_held_out_loss_logs_checkpoints_exports_and_resumes(
    tmp_path: Path, inputs: Path
) -> None:
    checked = ["max_steps=4", "check.num_prompts=2", "check.max_new_tokens=8"]
    final = sft(_config("testbed_critic_sft", inputs, tmp_path / "full", *checked))
    run = final.parent
    for name in ("build.json", "report", "critic_sft", "critic_rl", "planner_sft"):
        assert (inputs / "data" / name).exists(), name  # the build and its report
    pretrained = inputs / "tiny_models" / "qwen3_vl" / "vision_pretraining.json"
    assert json.loads(pretrained.read_text())["places_right_after"] > 0.9  # the recipe's family
    assert json.loads((final / "config.json").read_text())["model_type"] == "qwen3_vl"
    metrics = _metrics(run)
    assert sorted(metrics) == [0, 1, 2, 3, 4]
    assert metrics[4]["eval/loss"] < metrics[0]["eval/loss"]
    assert metrics[4]["sft/loss"] < metrics[1]["sft/loss"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_000002",
        "step_000004",
    ]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/loss")] == [0, 1, 2, 3, 4]
    assert [e.step for e in events.Scalars("sft/loss")] == [1, 2, 3, 4]
    assert "check/format_valid_rate" in events.Tags()["scalars"]
    report = json.loads((run / "eval.json").read_text())
    assert report["prompts"] == 2 and 0.0 <= report["format_valid_rate"] <= 1.0

    engine = TransformersEngine(str(final))
    request = ChatRequest(
        ({"role": "user", "content": [{"type": "text", "text": "left red circle"}]},)
    )
    (completion,) = engine.generate([request], SamplingParams(max_new_tokens=4))[0]
    assert completion.token_ids

    # Interrupted after step 2 (its checkpoint), then resumed: step 3 is reproduced.
    sft(_config("testbed_critic_sft", inputs, tmp_path / "resumed", "max_steps=2"))
    sft(_config("testbed_critic_sft", inputs, tmp_path / "resumed", "max_steps=3"))
    resumed = _metrics(tmp_path / "resumed")
    assert sorted(resumed) == [0, 1, 2, 3]
    assert _deterministic(resumed[3]) == pytest.approx(_deterministic(metrics[3]), rel=1e-5)


@pytest.mark.usefixtures("ray_local")
def test_planner_sft_runs_a_few_steps(tmp_path: Path, inputs: Path) -> None:
    sft(_config("testbed_planner_sft", inputs, tmp_path / "planner", "max_steps=2"))
    metrics = _metrics(tmp_path / "planner")
    assert sorted(metrics) == [0, 1, 2]
    assert metrics[2]["sft/tokens"] > 0 and metrics[2]["eval/loss"] > 0
    assert (tmp_path / "planner" / "final" / "config.json").is_file()


def test_a_missing_record_file_is_named(tmp_path: Path, inputs: Path) -> None:
    missing = tmp_path / "nowhere" / "train.parquet"
    cfg = _config("testbed_critic_sft", inputs, tmp_path / "bad", f"data.train_path={missing}")
    with pytest.raises(FileNotFoundError, match=str(missing)):
        sft(cfg)
