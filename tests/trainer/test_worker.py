"""The FSDP2 trainer for real: 2 gloo ranks in Ray actors, against a single-process model.

One group serves the whole module (starting it costs most of the time); the tests run in file
order and the first one needs the group's fresh weights.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from itk_rl.trainer.batch import TrainSample, build_batch, sequence_logprobs
from itk_rl.trainer.config import TrainerConfig
from itk_rl.trainer.group import TrainerGroup
from itk_rl.trainer.grpo import policy_loss

CONFIG = {"world_size": 2, "lr": 1e-3, "micro_batch_size": 2, "kl_coef": 1e-3, "grad_clip": 1.0}


def make_samples(n: int, seed: int) -> list[TrainSample]:
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        image = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        content = [{"type": "image"}, {"type": "text", "text": "red circle? " * (i % 3 + 1)}]
        response = tuple(int(t) for t in rng.integers(0, 250, 2 + i % 4))
        samples.append(TrainSample(({"role": "user", "content": content},), response, (image,)))
    return samples


# 5 samples over 2 ranks at micro-batch 2: rank 0 runs 2 micro-batches, rank 1 one real and
# one padding micro-batch, so the padding path is part of the equality below.
SAMPLES = make_samples(5, seed=1)
ADVANTAGES = np.array([1.0, -0.5, 0.25, -1.0, 0.75], dtype=np.float32)


@pytest.fixture(scope="module")
def group(ray_local, tiny_models):
    trainer = TrainerGroup(str(tiny_models.qwen2_5_vl), CONFIG)
    yield trainer
    trainer.shutdown()


def single_process_step(
    path: Path,
) -> tuple[dict[str, torch.Tensor], float, float, dict[str, torch.Tensor]]:
    """What the trainer's first update must do, written out on one unsharded model.

    Returns the weights after the step, the loss, the gradient norm before clipping, and the
    clipped gradients.
    """
    cfg = TrainerConfig.from_dict(CONFIG)
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    model.model.visual.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = build_batch(processor, SAMPLES)
    logprobs, entropy = sequence_logprobs(model, batch)
    advantages = torch.as_tensor(ADVANTAGES)[:, None] * batch.response_mask
    loss, _ = policy_loss(
        logprobs, logprobs.detach(), advantages, batch.response_mask,
        ref_logprobs=logprobs.detach(), entropy=entropy, settings=cfg.loss,
    )  # fmt: skip
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    return model.state_dict(), loss.item(), norm.item(), grads


def test_one_step_on_two_ranks_equals_one_process_on_the_union_batch(group, tiny_models):
    before = group.state_dict_for_sync()
    metrics = group.update(SAMPLES, ADVANTAGES)  # on-policy: no old log-probs needed
    after = group.state_dict_for_sync()
    expected, loss, grad_norm, grads = single_process_step(tiny_models.qwen2_5_vl)
    # Adam's first step hides a uniform gradient scale; the norm and the loss do not.
    assert metrics["actor/grad_norm"] == pytest.approx(grad_norm, rel=1e-5)
    assert metrics["actor/loss"] == pytest.approx(loss, rel=1e-5, abs=1e-7)
    moved = 0
    near_eps = 0
    for name, weight in after.items():
        # Adam's first step moves each entry by lr·g/(|g| + eps): where |g| is near eps (1e-8),
        # float32 summation-order noise in g changes the step itself (one entry of 8192 had
        # |g| 2e-9 and moved 1.4e-5 apart on 2026-12-03). Entries with 0 < |g| < 1e-7 must
        # move by at most lr; every other entry must equal the single-process step.
        sensitive = torch.zeros_like(weight, dtype=torch.bool)
        if name in grads:  # exact zeros (unused embedding rows) move by exactly 0 on both sides
            sensitive = (grads[name].abs() < 1e-7) & (grads[name] != 0)
        near_eps += int(sensitive.sum())
        assert ((weight - before[name])[sensitive].abs() <= CONFIG["lr"] * 1.01).all(), name
        torch.testing.assert_close(
            weight[~sensitive], expected[name][~sensitive], atol=2e-6, rtol=1e-5, msg=name
        )
        moved += not torch.equal(weight, before[name])
        if "visual" in name:  # the vision tower is frozen
            assert torch.equal(weight, before[name]), name
    assert moved > len(after) // 2
    assert near_eps < 1e-3 * sum(w.numel() for w in after.values())  # the check covers the rest
    assert metrics["actor/kl"] == 0.0  # policy == reference before the first step
    assert metrics["actor/optimizer_steps"] == 1.0 and metrics["actor/lr"] == CONFIG["lr"]
    assert metrics["actor/entropy"] > 0 and metrics["actor/pg_clipfrac"] == 0.0


def test_state_dict_for_sync_matches_the_hf_model(group, tiny_models):
    weights = group.state_dict_for_sync()
    reference = AutoModelForImageTextToText.from_pretrained(tiny_models.qwen2_5_vl).state_dict()
    assert list(weights) == list(reference)
    for name, tensor in weights.items():
        assert tensor.shape == reference[name].shape and tensor.dtype == reference[name].dtype
        assert tensor.device.type == "cpu" and not hasattr(tensor, "placements"), name


def test_logprobs_come_back_in_order_and_move_with_the_update(group):
    old = group.compute_logprobs(SAMPLES)
    ref = group.compute_logprobs(SAMPLES, reference=True)
    assert [len(x) for x in old] == [len(s.response_ids) for s in SAMPLES]
    metrics = group.update(SAMPLES, ADVANTAGES, old, ref)
    new = group.compute_logprobs(SAMPLES)
    change = np.array([np.mean(n - o) for n, o in zip(new, old, strict=True)])
    assert (change * np.sign(ADVANTAGES) > 0).sum() >= 4, change
    assert metrics["actor/kl"] > 0  # one step away from the reference now


def test_checkpoint_round_trip_reproduces_the_next_step(group, tmp_path):
    """Same weights after load, and the next step (which reads Adam's moments, step count and
    the schedule) gives identical weights and metrics: optimizer state came back exactly."""
    saved = group.state_dict_for_sync()
    path = group.save_checkpoint(str(tmp_path / "step_2"), extra={"data_position": 7})
    old = group.compute_logprobs(SAMPLES)
    first = group.update(SAMPLES, ADVANTAGES, old)
    first_weights = group.state_dict_for_sync()
    assert group.load_checkpoint(path) == {"data_position": 7}
    for name, weight in group.state_dict_for_sync().items():
        assert torch.equal(weight, saved[name]), name
    second = group.update(SAMPLES, ADVANTAGES, group.compute_logprobs(SAMPLES))
    for name, weight in group.state_dict_for_sync().items():
        assert torch.equal(weight, first_weights[name]), name
    drop = {"perf/update_s"}
    assert {k: v for k, v in first.items() if k not in drop} == {
        k: v for k, v in second.items() if k not in drop
    }


def test_failed_save_publishes_nothing_and_keeps_the_old_checkpoint(group, tmp_path):
    target = tmp_path / "ckpt"
    group.save_checkpoint(str(target), extra={"good": True})
    unpicklable = {"callback": lambda: None}  # rank 0 fails after the model shards are written
    with pytest.raises(ray.exceptions.RayTaskError):
        group.save_checkpoint(str(target), extra=unpicklable)
    with pytest.raises(ray.exceptions.RayTaskError):
        group.save_checkpoint(str(tmp_path / "fresh"), extra=unpicklable)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no .tmp, no "fresh"
    assert group.load_checkpoint(str(target)) == {"good": True}  # the group still works


def test_export_loads_with_transformers_and_scores_the_same(group, tmp_path):
    path = group.export(str(tmp_path / "export"))
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    with torch.no_grad():
        logprobs, _ = sequence_logprobs(model, build_batch(processor, SAMPLES))
    for row, expected in enumerate(group.compute_logprobs(SAMPLES)):
        np.testing.assert_allclose(logprobs[row, : len(expected)], expected, atol=1e-5)
    weights = group.state_dict_for_sync()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name


def test_sft_steps_lower_the_response_loss(group):
    targets = [dataclasses.replace(s, response_ids=s.response_ids[:2]) for s in SAMPLES]
    losses = [group.sft_step(targets)["sft/loss"] for _ in range(3)]
    assert losses[-1] < losses[0]


def test_sft_eval_loss_is_the_token_mean_over_all_ranks_and_changes_nothing(group, tiny_models):
    """Ranks hold different token counts (and rank 1 a padding micro-batch): the loss must be
    the union batch's token-mean, not a mean of per-rank means."""
    weights = group.state_dict_for_sync()
    metrics = group.sft_eval_loss(SAMPLES)
    model = AutoModelForImageTextToText.from_pretrained(tiny_models.qwen2_5_vl)
    model.load_state_dict(weights)
    batch = build_batch(AutoProcessor.from_pretrained(tiny_models.qwen2_5_vl), SAMPLES)
    with torch.no_grad():
        logprobs, _ = sequence_logprobs(model.eval(), batch)
    mask = batch.response_mask
    assert metrics["eval/tokens"] == mask.sum().item()
    expected = (-(logprobs * mask).sum() / mask.sum()).item()
    assert metrics["eval/loss"] == pytest.approx(expected, rel=1e-5)
    for name, tensor in group.state_dict_for_sync().items():
        assert torch.equal(tensor, weights[name]), name
