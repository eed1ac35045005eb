"""Fault injection: rewards that are not finite, never vary, or explode (issue 15).

The documented rules (PolicyConfig.nan_rewards, pgrpo.core.advantages.check_finite):
- a NaN or inf reward stops the run with an error naming how many and where
  (nan_rewards: error), or is dropped from the batch and counted (nan_rewards: drop);
- a group whose rewards never vary gets advantage 0 (no contrast, no push), never NaN;
- a reward scale of 1e6 is normalized away: the same advantages as at scale 1.
In every case the group statistics and the checkpoint that stores them stay finite.
"""

from __future__ import annotations

import math

import pytest
import torch

from pgrpo.core.checkpoint import latest_checkpoint
from pgrpo.core.metric_log import read_metrics
from pgrpo.core.trainer import train_policy


def _finite_stats(result) -> None:
    stats = result.stats
    for values in (stats.mean(stats.ids), stats.std(stats.ids), stats.count(stats.ids)):
        assert torch.isfinite(values).all(), values
    saved = torch.load(latest_checkpoint(result.output_dir) / "group_stats.pt", weights_only=True)
    for key in ("count", "mean", "m2"):
        assert torch.isfinite(saved[key]).all(), (key, saved[key])


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_reward_stops_the_run_or_is_dropped(tmp_path, tiny_cfg, bad):
    def reward(prompts, completions, group_ids, metadata):
        r = torch.ones(len(completions))
        r[1] = bad
        return r

    with pytest.raises(ValueError, match=r"1 of 8 rewards are NaN or infinite, at positions \[1\]"):
        train_policy(tiny_cfg(steps=1), tmp_path / "error", reward_fn=reward)
    assert latest_checkpoint(tmp_path / "error") is None  # nothing half-written
    result = train_policy(tiny_cfg(steps=2, nan_rewards="drop"), tmp_path / "drop", reward_fn=reward)
    rows = read_metrics(result.output_dir / "metrics.jsonl")
    assert [r["train/nan_rewards"] for r in rows] == [1, 1]
    _finite_stats(result)


@pytest.mark.parametrize("advantage", ["pgrpo", "grpo", "pgrpo_scale"])
def test_rewards_that_never_vary_give_zero_advantage_not_nan(tmp_path, tiny_cfg, advantage):
    constant = lambda prompts, completions, group_ids, metadata: torch.full((len(completions),), 3.0)  # noqa: E731
    result = train_policy(tiny_cfg(steps=3, advantage=advantage), tmp_path, reward_fn=constant)
    for row in read_metrics(result.output_dir / "metrics.jsonl"):
        assert row["train/adv_mean"] == 0 and row["train/adv_std"] == 0, row
        assert math.isfinite(row["train/loss"])
    _finite_stats(result)


def test_a_reward_scale_of_1e6_is_normalized_away(tmp_path, tiny_cfg):
    def length(scale):
        def reward(prompts, completions, group_ids, metadata):
            return scale * torch.tensor([len(c) % 7 for c in completions], dtype=torch.float32)
        return reward

    runs = {s: train_policy(tiny_cfg(steps=2, advantage="pgrpo", adv_eps=0.0), tmp_path / str(s),
                            reward_fn=length(s)) for s in (1.0, 1e6)}
    a, b = (read_metrics(r.output_dir / "metrics.jsonl") for r in runs.values())
    for x, y in zip(a, b, strict=True):
        assert x["train/adv_std"] == pytest.approx(y["train/adv_std"], rel=1e-4)
        assert x["train/loss"] == pytest.approx(y["train/loss"], rel=1e-3, abs=1e-6)
    _finite_stats(runs[1e6])
