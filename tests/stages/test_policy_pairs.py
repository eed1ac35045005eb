"""Pairs between the base policy's own samples, labelled by the judge (pgrpo.stages.reward.policy_pairs)."""

from __future__ import annotations

import pandas as pd
import pytest

from pgrpo.stages.groups.assign_groups import AssignConfig, assign_groups
from pgrpo.stages.evaluation.judge import judge_scores
from pgrpo.stages.reward.policy_pairs import policy_pairs
from pgrpo.stages.data.prepare import PrepareConfig, prepare
from pgrpo.stages.data.schemas import Pairs, validate


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("policy_pairs")
    prepare(PrepareConfig(n_users=24, n_personas=3, prompts_per_user=2, candidates_per_prompt=3,
                          pairs_per_prompt=1, seed=0), out)
    assign_groups(AssignConfig(method="label"), out / "users.parquet", out / "pairs.parquet", out)
    return out


def test_noiseless_labels_follow_the_judge(data):
    pairs, stats = policy_pairs("tiny-random-llama", data, n_prompts=6, samples_per_prompt=4,
                                pairs_per_prompt=3, max_new_tokens=8, bt_temperature=0.0)
    validate(pairs, Pairs, "policy pairs")
    assert set(pairs["split"]) == {"train"} and len(pairs) == stats["policy_pairs"] > 0
    prompts = pd.read_parquet(data / "prompts.parquet").set_index("prompt_id")
    assert (prompts.loc[pairs["prompt_id"], "split"] == "train").all()
    assert (prompts.loc[pairs["prompt_id"], "user_id"].to_numpy() == pairs["user_id"]).all()
    assert (pairs["chosen"] != pairs["rejected"]).all() and pairs["pair_id"].is_unique
    judge = pd.read_parquet(data / "judge.parquet")
    u_c = judge_scores(judge, pairs["user_id"], pairs["chosen"])
    u_r = judge_scores(judge, pairs["user_id"], pairs["rejected"])
    assert (u_c >= u_r).all()  # T = 0: the better one is always chosen (ties: a coin)
    assert stats["policy_pair_label_agreement"] == pytest.approx((u_c > u_r).mean())
    assert stats["policy_pair_prompts"] == 6 and len(pairs) <= 18


def test_same_seed_same_pairs_and_noise_flips_some(data):
    kw = dict(n_prompts=6, samples_per_prompt=4, pairs_per_prompt=3, max_new_tokens=8)
    a, _ = policy_pairs("tiny-random-llama", data, bt_temperature=0.5, **kw)
    b, _ = policy_pairs("tiny-random-llama", data, bt_temperature=0.5, **kw)
    pd.testing.assert_frame_equal(a, b)
    c, _ = policy_pairs("tiny-random-llama", data, bt_temperature=0.5, seed=1, **kw)
    assert not a["prompt_id"].equals(c["prompt_id"]) or not a["chosen"].equals(c["chosen"])


def test_train_reward_keeps_the_policy_pairs(data, tmp_path):
    from pgrpo.stages.reward.train_reward import RewardConfig, train_reward

    pairs, stats = policy_pairs("tiny-random-llama", data, n_prompts=4, max_new_tokens=6)
    cfg = RewardConfig(encoder="tiny-random-bert", epochs=1, batch_size=8, max_length=64,
                       freeze_encoder=True)
    metrics = train_reward(cfg, data / "pairs.parquet", data / "groups.parquet", tmp_path / "rm",
                           pairs, stats)
    template = pd.read_parquet(data / "pairs.parquet")
    assert metrics["train_pairs"] == int((template["split"] == "train").sum()) + len(pairs)
    assert metrics["policy_pairs"] == len(pairs)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "rm" / "policy_pairs.parquet"), pairs)


def test_no_judge_is_a_clear_error(data, tmp_path):
    import shutil

    for name in ("prompts.parquet", "groups.parquet", "judge.parquet"):
        shutil.copy(data / name, tmp_path / name)
    judge = pd.read_parquet(tmp_path / "judge.parquet")
    judge.iloc[:0].to_parquet(tmp_path / "judge.parquet")
    with pytest.raises(ValueError, match="policy_pairs: 0"):
        policy_pairs("tiny-random-llama", tmp_path, n_prompts=2)
