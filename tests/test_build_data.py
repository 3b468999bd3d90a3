"""The testbed build end to end: three datasets and a report, resumable, bad output counted."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pyarrow.parquet
import pytest

from itk_rl.build_data import DATASETS, run
from itk_rl.data.critic_records import load_critic_records, load_critic_sft_records
from itk_rl.data.planner_records import load_planner_pairs
from itk_rl.formats import parse_critic_output, parse_planner_output
from itk_rl.job import compose_recipe

COUNT = 12


def build(out: Path, *overrides: str) -> dict:
    cfg = compose_recipe(
        "data_testbed",
        [f"output_dir={out}", f"prompts.count={COUNT}", "splits.eval_fraction=0.25", *overrides],
    )
    lines: list[str] = []
    summary = run(cfg, log=lines.append)
    assert json.loads((out / "build.json").read_text())["counts"] == summary["counts"]
    return summary


def rows(out: Path) -> dict[str, list]:
    """Every dataset file's rows as stored (images as PNG bytes)."""
    return {
        f"{name}/{side}": pyarrow.parquet.read_table(out / name / f"{side}.parquet").to_pylist()
        for name in DATASETS
        for side in ("train", "eval")
    }


@pytest.fixture(scope="module")
def full_build(ray_local, tmp_path_factory) -> tuple[Path, dict, str]:
    """The build's folder, its summary and what it printed (progress goes to stdout)."""
    out, console = tmp_path_factory.mktemp("full"), io.StringIO()
    with contextlib.redirect_stdout(console):
        summary = build(out)
    return out, summary, console.getvalue()


def test_the_testbed_build_writes_three_datasets_and_a_report(full_build):
    out, summary, _ = full_build
    counts = summary["counts"]
    assert summary["status"] == "complete"
    assert counts["teacher"]["finished"] == COUNT and counts["teacher"]["failed"] == 0
    for side in ("train", "eval"):
        split = counts["splits"][side]
        sft = load_critic_sft_records(out / "critic_sft" / f"{side}.parquet")
        rl = load_critic_records(out / "critic_rl" / f"{side}.parquet")
        pairs = load_planner_pairs(out / "planner_sft" / f"{side}.parquet")
        assert len(sft) == split["critic_sft"]["rows"] and len(rl) == split["critic_rl"]["rows"]
        assert len(pairs) == split["planner_sft"]["rows"]
        # Balanced labels and SFT:RL = 2:1, as the counts say.
        assert sum(s.evaluation.success for s, _ in sft) == split["critic_sft"]["true"]
        assert split["critic_sft"]["true"] == split["critic_sft"]["false"]
        assert split["critic_rl"]["true"] == split["critic_rl"]["false"]
        assert len(sft) == 2 * len(rl)
        for sample, target in sft:
            verdict = parse_critic_output(target)
            assert verdict.format_valid and verdict.value.success == sample.evaluation.success
            assert verdict.think.startswith("left ")  # the after-scene, described
        for pair in pairs:
            assert parse_planner_output(pair.target).ok and len(pair.prefix_images) == pair.cut
    train = counts["splits"]["train"]
    assert train["critic_sft"]["rows"] > 0 and train["critic_rl"]["rows"] > 0
    assert (
        sum(train["steps_by_bin"].values()) + sum(counts["splits"]["eval"]["steps_by_bin"].values())
        == (counts["teacher"]["steps"])
    )
    report = out / "report"
    assert (report / "score_histograms.png").stat().st_size > 1000
    html = (report / "index.html").read_text()
    assert "critic_sft / train" in html and "<pre>&lt;think&gt;" in html
    assert json.loads((report / "counts.json").read_text()) == counts
    assert len(list((out / "trajectories").iterdir())) == COUNT


def test_the_build_reports_progress_in_summary_lines_not_one_per_prompt(full_build):
    *_, console = full_build
    progress = [line for line in console.splitlines() if "teacher trajectories" in line]
    assert len(progress) < COUNT
    assert progress[-1].startswith(
        f"[build] teacher trajectories: {COUNT}/{COUNT} (100 %), 0 failed"
    )


def test_a_resumed_build_equals_an_uninterrupted_one(full_build, tmp_path):
    full, _, _ = full_build
    first = build(tmp_path, "max_new_trajectories=5")
    assert first["status"].startswith("partial") and first["this_run"]["new"] == 5
    assert first["counts"]["teacher"]["pending"] == COUNT - 5
    second = build(tmp_path)
    assert second["status"] == "complete"
    assert second["this_run"] == {"new": COUNT - 5, "failed": 0, "skipped_as_done": 5}
    assert rows(tmp_path) == rows(full)
    # A trajectory whose folder lost its record (interrupted mid-write) is redone, the same.
    (tmp_path / "trajectories" / "000003" / "trajectory.json").unlink()
    third = build(tmp_path)
    assert third["this_run"]["new"] == 1 and rows(tmp_path) == rows(full)
    for folder in (full / "trajectories").iterdir():
        again = tmp_path / "trajectories" / folder.name / "trajectory.json"
        assert again.read_bytes() == (folder / "trajectory.json").read_bytes()


def test_a_rerun_with_other_prompts_is_refused(full_build):
    out, _, _ = full_build
    with pytest.raises(ValueError, match="prompt 000000 differs"):
        build(out, "prompts.seed=7")


def test_bad_teacher_output_is_counted_and_kept_out(ray_local, tmp_path):
    bank = tmp_path / "bank.yaml"
    bank.write_text(
        "slots:\n  colour: [red, [blue, azure]]\n"
        "domains:\n"
        "  shapes:\n    one: ['Step by step: draw a {colour} circle on the left']\n"
        "  outside:\n    animals: ['Step by step: a {colour} cat wearing a hat']\n"
    )
    out = tmp_path / "out"
    summary = build(out, f"prompts.bank={bank}")
    prompts = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    bad = {p["id"] for p in prompts if p["domain"] == "outside"}
    assert bad and len(bad) < COUNT
    teacher = summary["counts"]["teacher"]
    assert teacher["failures_by_kind"] == {"planner_output": len(bad)}
    assert teacher["finished"] == COUNT - len(bad)
    for prompt_id in bad:
        failure = json.loads((out / "trajectories" / prompt_id / "failure.json").read_text())
        assert failure["kind"] == "planner_output" and "no usable plan" in failure["message"]
    kept = {
        p.id
        for side in ("train", "eval")
        for p in load_planner_pairs(out / "planner_sft" / f"{side}.parquet")
    }
    assert kept and not kept & bad


def test_a_build_the_cluster_cannot_hold_fails_before_any_teacher_starts(ray_local, tmp_path):
    # Without the check, the teachers' actors would wait forever for a resource no node has.
    out = tmp_path / "out"
    cfg = compose_recipe(
        "data_testbed", [f"output_dir={out}", "prompts.count=2", "teachers.resources={flux: 1}"]
    )
    with pytest.raises(RuntimeError, match=r"asks for 2 flux \(teachers 2\) but the Ray cluster"):
        run(cfg, log=lambda line: None)
    assert not (out / "trajectories").exists()
