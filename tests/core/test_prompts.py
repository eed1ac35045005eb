"""Prompt tables: prepared prompts joined with assigned groups, splits, the random-label ablation."""

import pandas as pd
import pytest
import torch

from pgrpo.core.prompts import balanced_prompt_indices, load_prompts, prompt_indices


@pytest.fixture
def tables(tmp_path):
    prompts = pd.DataFrame({
        "prompt_id": ["p1", "p2", "p3", "p4", "p5"],
        "user_id": ["a", "a", "b", "c", "d"],
        "split": ["train", "train", "train", "eval", "train"],
        "prompt": ["q1", "q2", "q3", "q4", "q5"],
    })
    groups = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "group": ["g1", "g0", "g2", "g1"]})
    prompts.to_parquet(tmp_path / "prompts.parquet")
    groups.to_parquet(tmp_path / "groups.parquet")
    return tmp_path / "prompts.parquet", tmp_path / "groups.parquet"


def test_prepared_prompts_take_their_users_group_and_split(tables):
    prompts, groups = tables
    ps = load_prompts(str(prompts), groups=groups, split="train")
    assert ps.prompts == ["q1", "q2", "q3", "q5"]
    # Every group of the groups table is known, even g2 whose only user is in eval.
    assert ps.group_names == ["g0", "g1", "g2"]
    assert [ps.group_names[i] for i in ps.group_ids] == ["g1", "g1", "g0", "g1"]
    assert [m["user_id"] for m in ps.metadata] == ["a", "a", "b", "d"]
    assert load_prompts(str(prompts), groups=groups, split=None).prompts[-2] == "q4"


def test_missing_group_and_empty_split_are_clear_errors(tables, tmp_path):
    prompts, groups = tables
    pd.DataFrame({"user_id": ["a"], "group": ["g0"]}).to_parquet(tmp_path / "few.parquet")
    with pytest.raises(ValueError, match="3 users .* have no group"):
        load_prompts(str(prompts), groups=tmp_path / "few.parquet")
    with pytest.raises(ValueError, match="no rows with split == 'test'"):
        load_prompts(str(prompts), groups=groups, split="test")
    with pytest.raises(FileNotFoundError, match="nowhere.parquet"):
        load_prompts(str(tmp_path / "nowhere.parquet"))


def test_random_groups_shuffle_users_not_prompts_and_keep_sizes(tables):
    prompts, groups = tables
    ps = load_prompts(str(prompts), groups=groups, split="train")
    shuffled = [ps.with_random_groups(seed).norm_group_ids for seed in range(20)]
    for norm in shuffled:
        assert norm[0] == norm[1]  # user a's two prompts share one label
        # A permutation of the users' labels: the per-user label multiset is kept.
        assert sorted([norm[0].item(), norm[2].item(), norm[3].item()]) == sorted([1, 0, 1])
    assert any(not torch.equal(n, ps.group_ids) for n in shuffled)
    r = ps.with_random_groups(3)
    assert torch.equal(r.group_ids, ps.group_ids)  # rewards still use the true groups
    assert torch.equal(r.subset([3, 0]).advantage_groups, r.norm_group_ids[[3, 0]])
    assert torch.equal(ps.advantage_groups, ps.group_ids)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_table_columns_match_the_full_read_in_every_format(tmp_path, suffix):
    from pgrpo.core.io import read_table, table_columns

    df = pd.DataFrame({"prompt_id": ["a", "b"], "user_id": ["u1", "u2"], "prompt": ["x", "y"]})
    path = tmp_path / f"prompts{suffix}"
    {".parquet": lambda: df.to_parquet(path, index=False),
     ".csv": lambda: df.to_csv(path, index=False),
     ".jsonl": lambda: df.to_json(path, orient="records", lines=True)}[suffix]()
    assert table_columns(path) == list(read_table(path).columns) == list(df.columns)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        table_columns(tmp_path / f"absent{suffix}")


def test_prompt_indices_cover_an_epoch_without_repeats_and_are_pure():
    n, per_step = 10, 5
    first_epoch = prompt_indices(0, n, per_step, seed=3) + prompt_indices(1, n, per_step, seed=3)
    assert sorted(first_epoch) == list(range(n))
    assert prompt_indices(1, n, per_step, seed=3) == prompt_indices(1, n, per_step, seed=3)
    assert prompt_indices(0, n, per_step, seed=3) != prompt_indices(0, n, per_step, seed=4)


def test_balanced_sampling_gives_every_group_a_turn_per_round_and_is_pure():
    group_ids = torch.tensor([0] * 40 + [1] * 6 + [2] * 2)  # a majority and two small groups
    per_step, k = 4, 3
    stream = [i for step in range(9) for i in balanced_prompt_indices(step, group_ids, per_step, seed=5)]
    for r in range(len(stream) // k):  # every round of K positions visits each group once
        assert sorted(group_ids[stream[r * k:(r + 1) * k]].tolist()) == [0, 1, 2]
    for g, n in [(0, 40), (1, 6), (2, 2)]:  # a group's visits walk a permutation of its prompts
        visits = [i for i in stream if group_ids[i] == g][:n]
        assert len(set(visits)) == len(visits) and all(group_ids[i] == g for i in visits)
    assert balanced_prompt_indices(3, group_ids, per_step, 5) == stream[12:16]  # pure: resumable
    assert balanced_prompt_indices(0, group_ids, per_step, 6) != stream[:4]
