"""The training loop, end to end on a tiny random Llama (seconds per run)."""

import json

import pytest
import safetensors.torch
import torch

from pgrpo.core.checkpoint import latest_checkpoint
from pgrpo.core.models import load_policy
from pgrpo.core.metric_log import read_metrics
from pgrpo.core.trainer import Trainer, train_policy


def _weights(model_dir):
    return safetensors.torch.load_file(str(model_dir / "model.safetensors"))


def _without_perf(rows):
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def test_run_writes_metrics_checkpoint_and_a_loadable_policy(tmp_path, tiny_cfg):
    result = train_policy(tiny_cfg(steps=2), tmp_path)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    keys = set().union(*rows)
    for key in ["train/loss", "train/kl", "train/clip_frac/region", "train/entropy", "train/reward",
                "train/completion_len/mean", "train/adv_mean", "train/adv_std", "train/zero_std_frac",
                "perf/tokens_per_s", "perf/step_time_s", "train/grad_norm", "train/lr"]:
        assert key in keys, key
    group_keys = {k for k in keys if k.startswith("train/group_mu/")}
    assert group_keys and all(k.split("/")[-1] in result.group_names for k in group_keys)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "step_000002"
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "optimizer.pt", "scheduler.pt",
                                                "rng.pt", "group_stats.pt", "trainer_state.json",
                                                "metrics.jsonl"}
    model, tok = load_policy(str(result.model_dir))
    assert torch.equal(model.state_dict()["model.embed_tokens.weight"],
                       _weights(result.model_dir)["model.embed_tokens.weight"])
    stats = json.loads((result.model_dir / "group_stats.json").read_text())
    assert sum(g["count"] for g in stats.values()) == 2 * 2 * 4  # steps * prompts * G


@pytest.mark.parametrize("lora_r", [0, 4])  # full fine-tuning, and a LoRA adapter
def test_resumed_run_matches_uninterrupted_run(tmp_path, tiny_cfg, lora_r):
    """Stop after 2 of 4 steps, resume in a fresh Trainer: same weights, same metrics."""
    cfg = tiny_cfg(steps=4, lr_schedule="cosine", half_life=3.0, checkpoint_every=1, lora_r=lora_r)
    whole = train_policy(cfg, tmp_path / "whole")
    Trainer(cfg, tmp_path / "split").train(stop_after_steps=2)
    assert not (tmp_path / "split" / "model").exists()  # not finished, nothing exported
    resumed = Trainer(cfg, tmp_path / "split")
    assert resumed.step == 2
    split = resumed.train()
    a, b = _weights(whole.model_dir), _weights(split.model_dir)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    rows_a = _without_perf(read_metrics(tmp_path / "whole" / "metrics.jsonl"))
    rows_b = _without_perf(read_metrics(tmp_path / "split" / "metrics.jsonl"))
    assert [r["step"] for r in rows_b] == [1, 2, 3, 4]
    for ra, rb in zip(rows_a, rows_b):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-7), (ra["step"], k)
    torch.testing.assert_close(whole.stats.mean(whole.stats.ids), split.stats.mean(split.stats.ids))


# bnpo is left out on purpose: it is a token mean per forward batch by definition,
# so it changes with the micro-batch split (tests/core/test_loss.py checks its formula).
@pytest.mark.parametrize("agg", ["grpo", "dr_grpo", "dapo"])
def test_gradient_accumulation_is_exact(tmp_path, tiny_cfg, agg):
    """One step in micro-batches of 2 equals one step on the whole batch of 8.

    In fp32: under bf16 autocast (the GPU default) the split changes rounding, so
    the two runs agree only to bf16 precision. On an H100 in fp32, GEMMs of other
    shapes round differently and Adam's normalized step turns that into at most
    4e-6 on 1 of 8192 weights, hence atol 1e-5: still 1/100 of one lr-sized
    update, which a wrong accumulation scale moves on every weight.
    """
    runs = {}
    for mb in (2, 8):
        cfg = tiny_cfg(steps=1, micro_batch_size=mb, loss_agg=agg, precision="fp32")
        runs[mb] = _weights(train_policy(cfg, tmp_path / str(mb)).model_dir)
    for name in runs[8]:
        torch.testing.assert_close(runs[2][name], runs[8][name], rtol=1e-4, atol=1e-5, msg=name)


def test_kl_multi_iteration_and_lora_paths_train(tmp_path, tiny_cfg):
    full = train_policy(tiny_cfg(steps=1, beta=0.1, num_iterations=2, loss_agg="dapo"), tmp_path / "a")
    rows = read_metrics(full.output_dir / "metrics.jsonl")
    assert rows[0]["train/kl"] >= 0
    lora = train_policy(tiny_cfg(steps=1, beta=0.1, lora_r=4, loss_agg="bnpo"), tmp_path / "b")
    merged = _weights(lora.model_dir)
    assert not any("lora" in k for k in merged)  # exported merged, loadable as a plain model
    load_policy(str(lora.model_dir))


def test_nan_rewards_stop_the_run_with_a_clear_error_or_are_dropped(tmp_path, tiny_cfg):
    def half_nan(prompts, completions, group_ids, metadata):
        r = torch.ones(len(completions))
        r[::3] = float("nan")
        return r

    with pytest.raises(ValueError, match=r"3 of 8 rewards are NaN or infinite, at positions \[0, 3, 6\]"):
        train_policy(tiny_cfg(steps=1), tmp_path / "err", reward_fn=half_nan)
    result = train_policy(tiny_cfg(steps=1, nan_rewards="drop"), tmp_path / "drop", reward_fn=half_nan)
    row = read_metrics(result.output_dir / "metrics.jsonl")[0]
    assert row["train/nan_rewards"] == 3
    assert row["train/reward"] == 1.0
    assert int(result.stats.count(result.stats.ids).sum()) == 5


def test_reward_function_returning_wrong_length_is_named(tmp_path, tiny_cfg):
    with pytest.raises(ValueError, match="returned 1 rewards for 8 completions"):
        train_policy(tiny_cfg(steps=1), tmp_path, reward_fn=lambda *a: torch.zeros(1))


def test_a_checkpoint_of_another_config_inputs_or_code_is_never_resumed(tmp_path, tiny_cfg, capsys):
    Trainer(tiny_cfg(steps=3), tmp_path).train(stop_after_steps=2)
    assert Trainer(tiny_cfg(steps=5), tmp_path).step == 2  # running longer is fine
    capsys.readouterr()
    changed = Trainer(tiny_cfg(steps=3, lr=2e-3), tmp_path)
    out = capsys.readouterr().out
    assert changed.step == 0 and latest_checkpoint(tmp_path) is None
    assert "starting over" in out and "lr: 0.001 -> 0.002" in out, out
    Trainer(tiny_cfg(steps=3), tmp_path).train(stop_after_steps=2)
    other_code = Trainer(tiny_cfg(steps=3), tmp_path, fingerprint={"code": {"pgrpo/core/loss.py": "x"}})
    assert other_code.step == 0 and "code changed: pgrpo/core/loss.py" in capsys.readouterr().out
    Trainer(tiny_cfg(steps=3), tmp_path).train(stop_after_steps=2)
    fresh = Trainer(tiny_cfg(steps=3, resume=False), tmp_path)
    assert fresh.step == 0 and latest_checkpoint(tmp_path) is None


def test_a_resumed_run_restores_metrics_that_were_deleted(tmp_path, tiny_cfg):
    """DVC deletes a stage's outputs before rerunning it, metrics.jsonl among them; the
    checkpoint's copy brings the rows back, and the run ends as an uninterrupted one."""
    whole = train_policy(tiny_cfg(steps=4, checkpoint_every=2), tmp_path / "whole")
    Trainer(tiny_cfg(steps=4, checkpoint_every=2), tmp_path / "cut").train(stop_after_steps=3)
    (tmp_path / "cut" / "metrics.jsonl").unlink()
    cut = train_policy(tiny_cfg(steps=4, checkpoint_every=2), tmp_path / "cut")
    rows = {k: read_metrics(r.output_dir / "metrics.jsonl") for k, r in [("w", whole), ("c", cut)]}
    assert [r["step"] for r in rows["c"]] == [1, 2, 3, 4]
    drop = ("perf/", "train/completion_tokens")
    for a, b in zip(rows["w"], rows["c"]):
        assert {k: v for k, v in a.items() if not k.startswith(drop)} == \
            pytest.approx({k: v for k, v in b.items() if not k.startswith(drop)}, abs=1e-5)


def test_random_group_ablation_normalizes_by_shuffled_labels_but_reports_true_groups(tmp_path, tiny_cfg):
    def group_id_reward(prompts, completions, group_ids, metadata):
        return group_ids.float()  # reward = true group index: a group's mean is its index

    def last_row(advantage_groups):
        cfg = tiny_cfg(steps=1, prompts_per_step=8, advantage_groups=advantage_groups)
        result = train_policy(cfg, tmp_path / advantage_groups, reward_fn=group_id_reward)
        return read_metrics(result.output_dir / "metrics.jsonl")[-1], result.group_names

    row, names = last_row("assigned")
    shuffled, _ = last_row("random")
    for i, name in enumerate(names):
        if f"train/reward/{name}" in row:
            assert row[f"train/reward/{name}"] == shuffled[f"train/reward/{name}"] == i
    mus = [(row.get(f"train/group_mu/{n}"), shuffled.get(f"train/group_mu/{n}")) for n in names]
    assert all(a is None or a == i for i, (a, _) in enumerate(mus))
    assert any(b is not None and b != i for i, (_, b) in enumerate(mus))  # labels were mixed


def test_runs_with_different_precisions_share_one_process(tmp_path, tiny_cfg):
    # accelerate's process-wide state refuses a changed mixed_precision unless reset
    # (found on a GPU, where the default is bf16 and a test asked for fp32).
    for precision in ("bf16", "fp32"):
        result = train_policy(tiny_cfg(steps=1, precision=precision), tmp_path / precision)
        assert result.step == 1


def test_hooks_of_a_bf16_run_read_the_fp32_forward(tmp_path, tiny_cfg):
    """accelerate wraps the prepared model's forward in bf16 autocast; a hook (a judge curve)
    must read the model's own fp32 forward, as the evaluate stage reads every policy, and
    training must get its autocast back afterwards."""
    ids = torch.tensor([[1, 2, 3, 4]])
    seen = {}

    def probe(name):
        def hook(step, model, tokenizer):
            seen[name] = model(input_ids=ids).logits[0, -1]
            return {}
        return hook

    trainer = Trainer(tiny_cfg(steps=1, precision="bf16"), tmp_path, hooks=[probe("hook")])
    trainer.run_hooks()
    model = trainer.acc.unwrap_model(trainer.model)
    with torch.no_grad():
        reference = model._original_forward(input_ids=ids).logits[0, -1]
        as_trained = model(input_ids=ids).logits[0, -1]  # training's forward, under autocast
    assert torch.equal(seen["hook"], reference)
    assert not torch.equal(as_trained, reference)
    assert torch.equal(as_trained, as_trained.to(torch.bfloat16).float())  # bf16 values
    assert model.forward is not model._original_forward  # training's autocast is back
