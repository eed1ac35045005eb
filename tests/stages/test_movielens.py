"""The MovieLens preset (configs/movielens.yaml) end to end on a slice of the real ML-100K:
a real `dvc repro` in a temp git repo with the smoke preset's tiny models and budgets, the
data in data/raw as a user puts it there. Skipped when ../shared/data/movielens/ml-100k
(beside the repo) is absent.

    python -m pytest -q tests/stages/test_movielens.py        # ~2.5 min on 2 CPU cores
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pgrpo.core.config import merge_params, read_params

REPO = Path(__file__).resolve().parents[2]
ML100K = REPO.parent / "shared" / "data" / "movielens" / "ml-100k"

pytestmark = pytest.mark.skipif(not (ML100K / "u.data").is_file(),
                                reason=f"MovieLens 100K not found at {ML100K}")


def slice_params() -> dict:
    """The preset, on 150 of its 943 users, with the smoke preset's models and budgets (its
    reward, policy, evaluate and tracking sections: said once, there)."""
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    tiny = {k: smoke[k] for k in ("reward", "policy", "evaluate", "tracking")}
    tiny["reward"] = {**tiny["reward"], "inputs": "response"}  # the preset's, kept
    return merge_params(read_params(REPO / "configs" / "movielens.yaml"),
                        {**tiny, "prepare": {"max_users": 150}})


@pytest.fixture(scope="module")
def movielens_repro(tmp_path_factory):
    from test_dvc_pipeline import _run, _smoke_repo

    root = tmp_path_factory.mktemp("movielens")
    repo, env = _smoke_repo(root, slice_params())
    shutil.copytree(ML100K, repo / "data" / "raw" / "ml-100k")  # git ignores it (data/raw/.gitignore)
    return repo, env, _run(["dvc", "repro"], repo, env)


def test_dvc_repro_of_the_preset_on_real_ratings(movielens_repro):
    from test_dvc_pipeline import _run

    repo, env, out = movielens_repro
    assert out.count("Running stage") == 6, out
    users = pd.read_parquet(repo / "data/processed/users.parquet")
    groups = pd.read_parquet(repo / "data/processed/groups.parquet")
    assert len(users) <= 150 and set(groups["group"]) <= {
        f"{g} {a}" for g in "FM" for a in ("<25", "25-44", "45+")}
    names = sorted(set(groups["group"]))
    assert len(names) == 6

    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["judge"] == "heldout_items"
    for alg in ("pgrpo", "grpo"):
        assert sorted(metrics["algorithms"][alg]["groups"]) == names
    # the checks before training: in the reward model's metrics and first in the report
    checks = json.loads((repo / "models/reward/metrics.json").read_text())["group_checks"]
    assert checks and set(checks) <= set(names)
    report = (repo / "reports/report.md").read_text()
    before, headline = report.index("## Before training"), report.index("## Headline")
    assert before < headline
    for g in checks:
        assert f"| {g} |" in report[before:headline]

    # new data in data/raw reruns prepare (it is a DVC dep), and only what follows from it
    (repo / "data/raw/ml-100k/u.data").write_text(
        (ML100K / "u.data").read_text().replace("\t5\t", "\t4\t", 1))
    again = _run(["dvc", "status"], repo, env)
    assert "data/raw" in again and "prepare" in again, again


def test_the_judge_by_hand_on_a_real_user(movielens_repro):
    """A prepared held-out user's own judge row: naming one of their held-out movies scores
    1; naming genres only scores 0.5 x the share of their held-out movies' genres named."""
    from pgrpo.stages.evaluation.judge import judge_scores

    repo, _, _ = movielens_repro
    judge = pd.read_parquet(repo / "data/processed/judge.parquet")
    users = pd.read_parquet(repo / "data/processed/users.parquet")
    user = min(users.loc[users["split"] == "eval", "user_id"])
    items = json.loads(judge.set_index("user_id").loc[user, "payload"])
    title = items[0]["title"]                       # e.g. "Heat (1995)"
    genres = sorted({g for i in items for g in i["genres"]})
    named = title.rsplit(" (", 1)[0]               # as people write it: no year
    genre = next(g for g in genres if g.lower() not in named.lower())
    completions = [f"You might enjoy {named}.", f"Try a {genre.lower()} film.", "Try this one."]
    got = judge_scores(judge, [user] * 3, completions)
    assert got.tolist() == pytest.approx([1.0, 0.5 / len(genres), 0.0])


def test_the_judge_trains_a_policy_on_training_users(movielens_repro):
    """configs/claim_movielens_judge.yaml trains on the judge: a training user's prompt is
    scored by that user's own held-out movies (1 for naming one), and a real training step of
    the pipeline runs on it."""
    import sys

    from test_dvc_pipeline import _run

    import pgrpo.stages.reward.training_rewards  # noqa: F401 - registers the judge
    from pgrpo.core.metric_log import read_metrics
    from pgrpo.core.prompts import load_prompts
    from pgrpo.core.rewards import resolve_reward

    repo, env, _ = movielens_repro
    prompts_path = repo / "data/processed/prompts.parquet"
    train = load_prompts(str(prompts_path), groups=repo / "data/processed/groups.parquet",
                         split="train")
    judge = pd.read_parquet(repo / "data/processed/judge.parquet").set_index("user_id")
    meta = train.metadata[0]
    title = json.loads(judge.loc[meta["user_id"], "payload"])[0]["title"]
    reward = resolve_reward("judge", str(prompts_path), train.group_names, "cpu")
    got = reward([train.prompts[0]] * 2, [f"You might enjoy {title}.", "Try this one."],
                 train.group_ids[:1].repeat(2), [meta, meta])
    assert got.tolist() == [1.0, 0.0]

    _run([sys.executable, "-m", "pgrpo.orchestration.pipeline", "train_policy", "--algorithm",
          "pgrpo", "--set", "policy.reward=judge", "--set", "policy.steps=1"], repo, env)
    [row] = [r for r in read_metrics(repo / "models/policy/pgrpo/metrics.jsonl") if r["step"] == 1]
    rewards = [v for k, v in row.items() if k.startswith("train/reward/")]
    assert rewards and all(0.0 <= v <= 1.0 for v in rewards)  # the judge's range, not a model's
