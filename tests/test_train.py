"""The GRPO driver end to end on a local Ray cluster with 2 FSDP ranks on gloo.

One shared set of inputs (tiny critic, testbed records); three short runs: an uninterrupted
one, and an interrupted one resumed with `resume=auto` whose rollout streams record by record,
which must reproduce the next step. A run whose rollouts run one step ahead (staleness 1) with
dynamic sampling, interrupted and resumed.
The reward is a user's own function in a module outside the package (the custom-reward swap),
chosen so that groups have reward variance and the policy is really updated. And the recipe's
rewards phase on real generator and judge pools, with the reward it names.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from itk_rl.critic_grpo_rewards import Response, score_responses
from itk_rl.data.critic_records import load_critic_records
from itk_rl.data.sampler import BatchSampler
from itk_rl.formats import (
    CriticSample,
    CriticVerdict,
    Evaluation,
    format_critic_answer,
    parse_critic_output,
)
from itk_rl.interfaces.engine import Completion
from itk_rl.job import plain
from itk_rl.rewards.judge_pool import JudgePool
from itk_rl.rollout.pool import GeneratorPool
from itk_rl.train import step_settings, train

REWARD_MODULE = '''
from itk_rl.rewards.critic import RewardInputs, RewardOutput, format_reward


def length_reward(inputs: RewardInputs, *, period: int) -> RewardOutput:
    """Not a sensible reward: it varies within groups, so every update has a signal."""
    length = (len(inputs.response) % period) / period
    fmt = format_reward(inputs.parsed)
    return RewardOutput(length + fmt, {"length": length, "format": fmt})


def label_gated_length_reward(inputs: RewardInputs, *, period: int) -> RewardOutput:
    """The length reward for records labelled failed, 0 for those labelled success: only the
    groups of failed-labelled records can have reward variance."""
    failed = float(not inputs.sample.evaluation.success)
    length = failed * (len(inputs.response) % period) / period
    return RewardOutput(length, {"failed_label": failed})


label_gated_length_reward.needs_rerender = False
'''


@pytest.fixture
def user_rewards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`user_rewards.length_reward` importable, from a module outside the package."""
    user_dir = tmp_path / "user_code"
    user_dir.mkdir()
    (user_dir / "user_rewards.py").write_text(textwrap.dedent(REWARD_MODULE))
    monkeypatch.syspath_prepend(str(user_dir))


def _config(tmp_path: Path, inputs: Path, name: str, total_steps: int, *extra: str):
    overrides = [
        f"output_dir={tmp_path / name}",
        f"total_steps={total_steps}",
        "checkpoint_every=2",
        f"prepare.tiny_models_dir={inputs / 'tiny_models'}",
        f"data.train_path={inputs / 'critic_rl.parquet'}",
        "prepare.num_tasks=8",
        "data.batch_size=2",
        "rollout.sampling.n=4",
        "rollout.sampling.max_new_tokens=12",
        "logging.sample_every=1",
        "+reward.period=5",
        "reward._target_=user_rewards.length_reward",
        "+reward._partial_=true",
        "~reward.format_weight",
        "~reward.alpha",
        "~reward.sem_share",
        *extra,
    ]
    with initialize_config_module("itk_rl.recipes", version_base="1.3"):
        return compose("testbed_critic_grpo", overrides=overrides)


def _metrics(run: Path) -> dict[int, dict[str, float]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {record["step"]: record for record in map(json.loads, lines)}


def _deterministic(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith(("time/", "perf/", "fault/"))}


@pytest.mark.usefixtures("ray_local", "user_rewards")
def test_grpo_runs_logs_checkpoints_and_resumes_exactly(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"

    rows = "rollout.component.max_batch_size=4"
    full = train(_config(tmp_path, inputs, "full", 3, rows))
    run = full.parent
    metrics = _metrics(run)
    assert sorted(metrics) == [1, 2, 3]
    for record in metrics.values():
        assert "reward/length" in record  # the user's reward was used, component logged
        assert record["data/update_skipped"] == 0.0
        assert record["data/responses_trained"] > 0
        # dynamic sampling is off: the batch is drawn and every group counted, none unused
        assert (record["data/groups_drawn"], record["data/groups_unused"]) == (2.0, 0.0)
        for key in ("actor/grad_norm", "actor/lr", "actor/pg_clipfrac", "actor/kl"):
            assert key in record
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_000002",
        "step_000003",
    ]
    assert (full / "config.json").is_file()

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("reward/total", "reward/verdict_accuracy", "time/rollout_s", "actor/kl"):
        assert tag in scalars
    assert [e.step for e in events.Scalars("reward/total")] == [1, 2, 3]
    assert "samples/0" in events.Tags()["images"]

    # Interrupted after step 2 (its checkpoint), then resumed: step 3 is reproduced, although
    # these runs stream their rollouts one record per call (all runs' engines batch 4 rows:
    # the unchunked run's 8 rows are cut as the chunks are, so the same rows meet in each
    # forward pass).
    streamed = (rows, "rollout.chunk_records=1")
    train(_config(tmp_path, inputs, "resumed", 2, *streamed))
    train(_config(tmp_path, inputs, "resumed", 3, *streamed))
    resumed = _metrics(tmp_path / "resumed")
    assert sorted(resumed) == [1, 2, 3]
    assert _deterministic(resumed[3]) == pytest.approx(_deterministic(metrics[3]), rel=1e-5)


@pytest.mark.usefixtures("ray_local", "user_rewards")
def test_grpo_one_step_ahead_with_dynamic_sampling_trains_signal_and_resumes_at_the_next_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # max_staleness 1: step 2's batch is sampled while step 1 updates, with the weights before
    # it (corrected by verl's importance weights). Dynamic sampling (oversample 2): each step
    # draws 4 records for a batch of 2, rewards all, and trains the first 2 whose rewards vary;
    # only failed-labelled records' can. The checkpoint after step 1 is taken with step 2's
    # records drawn ahead and holds the position before them: with step 2's checkpoint removed,
    # resume=auto redoes step 2 on the records drawn for it before, then step 3.
    draws: list[list[int]] = []

    class RecordingSampler(BatchSampler):
        def next_batch(self) -> list[int]:
            draws.append(super().next_batch())
            return draws[-1]

    monkeypatch.setattr("itk_rl.train.BatchSampler", RecordingSampler)
    inputs = tmp_path / "inputs"
    ahead = (
        "algorithm.max_staleness=1",
        "trainer.rollout_is=token",
        "rollout.chunk_records=1",
        "reward._target_=user_rewards.label_gated_length_reward",
        "algorithm.dynamic_sampling.oversample=2",
        "checkpoint_every=1",
    )
    run = train(_config(tmp_path, inputs, "ahead", 2, *ahead)).parent
    first, first_draws = _metrics(run), list(draws)
    assert [first[s]["rollout/staleness_max"] for s in (1, 2)] == [0.0, 1.0]
    records = load_critic_records(inputs / "critic_rl.parquet")
    sampler = BatchSampler(len(records), 4)
    batches = [sampler.next_batch()]
    after_one = sampler.state()
    batches += [sampler.next_batch(), sampler.next_batch()]
    state = torch.load(run / "checkpoints/step_000001/trainer_state.pt", weights_only=False)
    assert state["extra"]["sampler"] == after_one  # before step 2's draw, although it was drawn
    shutil.rmtree(run / "checkpoints/step_000002")
    draws.clear()
    train(_config(tmp_path, inputs, "ahead", 3, *ahead))
    # the records of steps 1, 2 (redone) and 3 are the sampler's first three draws: no record
    # trained twice, none skipped
    assert first_draws == batches[:2] and draws == batches[1:]
    metrics = _metrics(run)
    assert sorted(metrics) == [1, 2, 3]
    # step 2 redone on-policy (nothing was in flight at the resume), step 3 drawn ahead again
    assert [metrics[s]["rollout/staleness_max"] for s in (1, 2, 3)] == [0.0, 0.0, 1.0]
    for step, drawn in zip((1, 2, 3), batches, strict=True):
        record = metrics[step]
        assert record["data/update_skipped"] == 0.0
        # verl's truncated importance weights were applied (clipped at 2.0)
        assert 0.0 < record["rollout_corr/rollout_is_mean"] <= 2.0
        failed = [not records[i].evaluation.success for i in drawn]
        with_signal = record["data/groups_with_signal"]
        assert record["data/groups_drawn"] == 4.0 == with_signal + record["data/groups_filtered"]
        assert with_signal <= sum(failed)  # success-labelled groups are flat: filtered
        trained = min(2.0, with_signal)
        assert (record["data/groups"], record["data/zero_variance_groups"]) == (trained, 0.0)
        assert record["data/groups_unused"] == with_signal - trained
        assert record["data/responses_trained"] == 4 * trained  # G = 4 responses per group
        # the reward metrics cover every drawn group; the trained ones have a mean of their own
        assert record["reward/failed_label"] == pytest.approx(np.mean(failed))
        assert "reward/mean_trained" in record
    assert sum(record["data/groups_filtered"] for record in metrics.values()) > 0
    assert metrics[3]["time/wait_for_batch_s"] >= 0.0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("algorithm.max_staleness", -1),
        ("rollout.chunk_records", -1),
        ("algorithm.dynamic_sampling.oversample", 0.5),
    ],
)
def test_bad_step_numbers_are_refused_before_any_actor_starts_naming_the_key(
    key: str, value: float
) -> None:
    with initialize_config_module("itk_rl.recipes", version_base="1.3"):
        cfg = compose("testbed_critic_grpo", overrides=[f"{key}={value}"])
    with pytest.raises(ValueError, match=rf"^{key} must be a number >= "):
        step_settings(cfg, instantiate(cfg.reward))


@pytest.mark.parametrize(("oversample", "train_groups"), [(1.0, None), (1.5, 4)])
def test_dynamic_sampling_trains_a_batch_of_groups_once_it_oversamples(
    oversample: float, train_groups: int | None
) -> None:
    overrides = [f"algorithm.dynamic_sampling.oversample={oversample}"]
    with initialize_config_module("itk_rl.recipes", version_base="1.3"):
        cfg = compose("testbed_critic_grpo", overrides=overrides)
    assert step_settings(cfg, instantiate(cfg.reward)).train_groups == train_groups


@pytest.mark.parametrize(
    ("overrides", "rerendered"),
    [([], True), (["reward.alpha=1.0"], False)],
    ids=["critic_reward", "verdict_only"],
)
@pytest.mark.usefixtures("ray_local")
def test_the_rewards_phase_rerenders_exactly_when_the_recipes_reward_reads_rerenders(
    overrides: list[str], rerendered: bool
) -> None:
    # A failed text-to-image step and one response refining it: the paper's reward reads the
    # refinement's re-render; the verdict-only one (alpha = 1) needs none, so none is made.
    with initialize_config_module("itk_rl.recipes", version_base="1.3"):
        cfg = compose("testbed_critic_grpo", overrides=overrides)
    reward_fn = instantiate(cfg.reward)
    canvas = np.full((48, 48, 3), 255, dtype=np.uint8)
    prompt = "draw a large red circle on the left"
    failed = CriticSample(
        prompt, "draw a crimson disc", canvas, canvas, Evaluation(0, 10, False), True
    )
    answer = format_critic_answer(CriticVerdict(False, prompt, "left none"))
    responses = [Response(0, Completion(answer), parse_critic_output(answer))]
    generator, judge = cfg.generator, cfg.judge
    retries = {"max_restarts": 0, "max_task_retries": 0}
    with (
        GeneratorPool(
            plain(generator.component),
            generator.num_actors,
            generator.num_cpus,
            generator.num_gpus,
            generator.max_batch_size,
            generator.max_wait_s,
            **retries,
        ) as generators,
        JudgePool(
            plain(judge.component), judge.num_actors, judge.num_cpus, judge.num_gpus, **retries
        ) as judges,
    ):
        settings = step_settings(cfg, reward_fn)
        score_responses(generators, judges, reward_fn, [failed], responses, settings, step=1)
    (response,) = responses
    assert response.reward is not None and not response.render_failed
    assert (response.rerender is not None) is rerendered
    assert ("sem" in response.reward.components) is rerendered


@pytest.mark.usefixtures("ray_local", "user_rewards")
def test_grpo_with_vllm_rollout_workers(tmp_path: Path) -> None:
    # The same short run with the critic served by vLLM (its CPU build) in the rollout actor:
    # the weights reach vLLM after every step, and its log-probs are logged against the trainer's.
    vllm = "engine@rollout.component=vllm_cpu"
    final = train(_config(tmp_path, tmp_path / "inputs", "vllm", 2, vllm))
    metrics = _metrics(final.parent)
    assert sorted(metrics) == [1, 2]
    for record in metrics.values():
        assert record["data/update_skipped"] == 0.0 and record["data/responses_trained"] > 0
        # vLLM samples without the vision tokens, the trainer's log-probs keep their mass: for
        # this random tiny critic about 0.015 nats per token (tests/rollout/test_vllm_engine.py
        # shows the rest is float32 noise).
        assert 0.0 < record["rollout/logprob_gap_mean"] < 0.05
    assert [p.name for p in (final.parent / "checkpoints").iterdir()] == ["step_000002"]
    events = EventAccumulator(str(final.parent / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("rollout/logprob_gap_mean")] == [1, 2]


def _kill_a_trainer_rank_after(run: Path, steps: int, seen: dict[str, object]) -> None:
    """Once `steps` steps are logged, keep their metrics and SIGKILL one trainer rank's process,
    as a node losing a GPU worker. Only this test's ranks: those under this process's own Ray
    cluster (its raylet is our child), never another job's on the machine."""
    metrics = run / "metrics.jsonl"
    while not metrics.is_file() or len(metrics.read_text().splitlines()) < steps:
        time.sleep(0.2)
    seen["metrics"] = _metrics(run)
    ours = os.getpid()
    ranks = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "ray::TrainerWorker" in " ".join(p.info["cmdline"] or [])
        and ours in {parent.pid for parent in p.parents()}
    ]
    seen["ranks"] = len(ranks)
    ranks[-1].kill()


@pytest.mark.usefixtures("ray_local", "user_rewards")
def test_a_dead_trainer_rank_is_replaced_in_the_same_job_and_the_steps_since_redone(
    tmp_path: Path,
) -> None:
    # A rank is killed during step 4 (checkpoint after step 2): the driver notices at the next
    # trainer call, rebuilds the group from step 2's checkpoint and redoes step 3 (and 4); the
    # redone step 3 equals the one logged before the failure, every step is logged once.
    run, seen = tmp_path / "recovered", {}
    killer = threading.Thread(target=_kill_a_trainer_rank_after, args=(run, 3, seen))
    killer.start()
    train(_config(tmp_path, tmp_path / "inputs", "recovered", 4))
    killer.join()
    metrics = _metrics(run)
    assert seen["ranks"] == 2 and sorted(metrics) == [1, 2, 3, 4]
    assert _deterministic(metrics[3]) == pytest.approx(_deterministic(seen["metrics"][3]), rel=1e-5)
    assert (
        metrics[4]["fault/trainer_restarts"] == 1.0 and metrics[4]["fault/trainer_recovery_s"] > 0
    )
    assert metrics[4]["fault/trainer_steps_redone"] == 1.0  # step 3 (step 4 had not finished)
