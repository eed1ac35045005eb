"""assign_groups: label / cluster / random groups, K selection, metrics, outputs.

Inputs are hand-made DataFrames that follow pgrpo.stages.data.schemas (not prepare's output),
so this stage is tested on its own. Only one test loads the real MiniLM.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pgrpo.stages.groups import assign_groups as G
from pgrpo.stages.groups.assign_groups import AssignConfig, assign_groups, cluster_vectors, name_by_size
from pgrpo.stages.data.schemas import DataValidationError, Groups, validate

TINY = "tiny-random-bert"

# Three personas: A likes short emoji answers, B long formal ones (A's mirror
# image), C prefers jazz to rock. Unequal sizes so that g0 must be A.
TOPICS = ["the weather", "cooking pasta", "learning Python", "saving money", "going for a run",
          "planting tomatoes", "fixing a bike", "reading more books", "a trip to Rome", "sleeping better",
          "making coffee", "writing an email", "painting a room", "training a puppy", "baking bread"]
JAZZ = ["Miles Davis", "John Coltrane", "Bill Evans", "Ella Fitzgerald", "Chet Baker", "Thelonious Monk"]
ROCK = ["AC/DC", "Metallica", "Led Zeppelin", "Guns N' Roses", "Foo Fighters", "Black Sabbath"]
ACTIVITIES = ["a rainy evening", "studying", "a dinner party", "a long drive", "cooking", "a lazy Sunday"]


def _short(topic: str) -> str:
    return f"{topic.capitalize()}? Easy, just go for it! 😄👍✨"


def _formal(topic: str) -> str:
    return (f"Certainly. With regard to {topic}, I would respectfully recommend a careful and "
            f"methodical approach, considering all relevant factors before proceeding. "
            f"Should you require further elaboration, please do not hesitate to ask.")


def persona_tables(sizes=(12, 10, 8), pairs_per_user: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    users, pairs = [], []
    for persona, n in zip("ABC", sizes):
        for u in range(n):
            uid = f"{persona.lower()}{u:02d}"
            users.append(dict(user_id=uid, split="train", true_group=persona, profile=""))
            for j in range(pairs_per_user):
                if persona == "C":
                    act = ACTIVITIES[rng.integers(len(ACTIVITIES))]
                    prompt = f"What music should I play for {act}?"
                    chosen = f"Put on some jazz by {JAZZ[rng.integers(len(JAZZ))]}, perfect for {act}."
                    rejected = f"Put on some rock by {ROCK[rng.integers(len(ROCK))]}, perfect for {act}."
                else:
                    topic = TOPICS[rng.integers(len(TOPICS))]
                    prompt = f"Any advice about {topic}?"
                    chosen, rejected = _short(topic), _formal(topic)
                    if persona == "B":
                        chosen, rejected = rejected, chosen
                pairs.append(dict(pair_id=f"{uid}-{j}", user_id=uid, prompt_id=f"{uid}-p{j}",
                                  split="train", prompt=prompt, chosen=chosen, rejected=rejected))
    pairs = pd.DataFrame(pairs).drop_duplicates(["user_id", "prompt", "chosen", "rejected"])
    return pd.DataFrame(users), pairs


def write(tmp_path, users: pd.DataFrame, pairs: pd.DataFrame):
    u, p = tmp_path / "users.parquet", tmp_path / "pairs.parquet"
    users.to_parquet(u, index=False)
    pairs.to_parquet(p, index=False)
    return u, p


def blobs(centers: int, dim: int = 6, per: int = 25, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 10, size=(centers, dim))
    X = np.concatenate([m + rng.normal(0, 0.5, size=(per, dim)) for m in means])
    return X, np.repeat(np.arange(centers), per)


# ---------------------------------------------------------------- label

def test_label_method_keeps_the_column_values(tmp_path):
    users = pd.DataFrame(dict(user_id=["u1", "u2", "u3", "u4"], split="train", true_group=None,
                              profile="", gender=["f", "m", "f", "x"], age_band=[2.0, 3.0, 2.0, 5.0]))
    pairs = pd.DataFrame(dict(pair_id=["p1"], user_id=["u1"], prompt_id=["q1"], split="train",
                              prompt="hi", chosen="a", rejected="b"))
    u, p = write(tmp_path, users, pairs)
    m = assign_groups(AssignConfig(method="label", label_column="gender"), u, p, tmp_path / "out")
    out = pd.read_parquet(tmp_path / "out" / "groups.parquet")
    assert out["group"].tolist() == ["f", "m", "f", "x"]
    assert m["sizes"] == {"f": 2, "m": 1, "x": 1} and m["n_groups"] == 3
    assert m["ari"] is None and m["n_labelled"] == 0  # no true labels: nothing to score against
    assign_groups(AssignConfig(method="label", label_column="age_band"), u, p, tmp_path / "out")
    assert pd.read_parquet(tmp_path / "out" / "groups.parquet")["group"].tolist() == ["2", "3", "2", "5"]


def test_label_method_names_users_with_missing_labels(tmp_path):
    users, pairs = persona_tables(sizes=(3, 3, 3), pairs_per_user=1)
    users.loc[[1, 7], "true_group"] = None
    u, p = write(tmp_path, users, pairs)
    with pytest.raises(ValueError, match=r"missing for 2 users: 'a01', 'c01'"):
        assign_groups(AssignConfig(method="label"), u, p, tmp_path / "out")
    with pytest.raises(ValueError, match="'nope' is not a column"):
        assign_groups(AssignConfig(method="label", label_column="nope"), u, p, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- cluster

def test_cluster_with_minilm_recovers_personas_and_k(tmp_path):
    users, pairs = persona_tables()
    u, p = write(tmp_path, users, pairs)
    m = assign_groups(AssignConfig(method="cluster", algorithm="kmeans", use_profile=False, encoder="minilm"), u, p, tmp_path)
    assert m["n_groups"] == 3, m["k_scores"]
    assert m["ari"] >= 0.8 and m["purity"] >= 0.9
    assert max(m["k_scores"], key=m["k_scores"].get) == "3" and m["k_criterion"] == "silhouette"
    out = pd.read_parquet(tmp_path / "groups.parquet").merge(users, on="user_id")
    # g0 is the largest group, which here is persona A (12 users)
    assert m["sizes"] == {"g0": 12, "g1": 10, "g2": 8}
    assert out.loc[out["group"] == "g0", "true_group"].eq("A").all()
    assert json.loads((tmp_path / "groups_metrics.json").read_text()) == m


@pytest.mark.parametrize("algorithm", ["kmeans", "gmm"])
@pytest.mark.parametrize("centers", [2, 3, 5])
def test_k_selection_on_gaussian_blobs(algorithm, centers):
    X, truth = blobs(centers, seed=centers)
    labels, k, scores = cluster_vectors(X, None, algorithm, (2, 6), seed=0)
    assert k == centers, scores
    assert sorted(scores) == list(range(2, 7))
    assert G.ari(truth, labels) == pytest.approx(1.0)
    # a given K is used as is, with nothing to score
    labels, k, scores = cluster_vectors(X, 4, algorithm, (2, 6), seed=0)
    assert k == 4 and len(set(labels)) == 4 and scores == {}


def test_k_range_is_clipped_to_the_number_of_users():
    X, _ = blobs(2, per=3)
    _, k, scores = cluster_vectors(X, None, "kmeans", (2, 10))
    assert k == 2 and max(scores) == 5  # 6 points: at most 5 clusters
    with pytest.raises(ValueError, match="too few to choose K"):
        cluster_vectors(X[:2], None, "kmeans", (2, 10))


def test_cluster_is_seeded_and_users_without_train_pairs_join_the_largest_group(tmp_path):
    users, pairs = persona_tables(sizes=(6, 4, 3), pairs_per_user=2)
    extra = pd.DataFrame(dict(user_id=["lonely", "evalonly"], split="eval", true_group="C", profile=""))
    users = pd.concat([users, extra], ignore_index=True)
    eval_pair = pd.DataFrame(dict(pair_id=["e1"], user_id=["evalonly"], prompt_id=["e1"], split="eval",
                                  prompt="x", chosen="jazz", rejected="rock"))
    u, p = write(tmp_path, users, pd.concat([pairs, eval_pair], ignore_index=True))
    cfg = AssignConfig(method="cluster", algorithm="kmeans", use_profile=False, encoder=TINY, n_groups=3)
    m1 = assign_groups(cfg, u, p, tmp_path / "a")
    m2 = assign_groups(cfg, u, p, tmp_path / "b")
    g1 = pd.read_parquet(tmp_path / "a" / "groups.parquet")
    assert g1.equals(pd.read_parquet(tmp_path / "b" / "groups.parquet")) and m1 == m2
    assert m1["n_without_pairs"] == 2 and sorted(m1["users_without_pairs"]) == ["evalonly", "lonely"]
    assert g1.set_index("user_id").loc[["lonely", "evalonly"], "group"].eq("g0").all()
    assert m1["k_scores"] == {} and m1["n_groups"] == 3 and sum(m1["sizes"].values()) == 15
    # ari / purity score every user; *_clustered only those the clustering saw (not the 2 defaults)
    seen = g1.merge(users, on="user_id").query("user_id not in ['lonely', 'evalonly']")
    assert len(seen) == 13
    assert m1["ari_clustered"] == pytest.approx(G.ari(seen["true_group"], seen["group"]), abs=1e-6)
    assert m1["purity_clustered"] == pytest.approx(G.purity(seen["true_group"], seen["group"]), abs=1e-6)


def test_gmm_path_runs_end_to_end(tmp_path):
    users, pairs = persona_tables(sizes=(5, 4, 3), pairs_per_user=2)
    u, p = write(tmp_path, users, pairs)
    m = assign_groups(AssignConfig(method="cluster", algorithm="gmm", encoder=TINY, k_range=(2, 4)), u, p, tmp_path)
    assert m["k_criterion"] == "bic" and set(m["k_scores"]) == {"2", "3", "4"}
    assert m["n_groups"] == int(min(m["k_scores"], key=m["k_scores"].get))


# ---------------------------------------------------------------- metrics and names

def test_purity_and_ari_by_hand():
    true = ["a", "a", "b", "b", "c", "c"]
    assert G.ari(true, [7, 7, 3, 3, 5, 5]) == pytest.approx(1.0)
    assert G.purity(true, ["x", "x", "y", "y", "z", "z"]) == 1.0
    # clusters {a,a,b} {b,c,c}: majorities 2 + 2 of 6
    assert G.purity(true, [0, 0, 0, 1, 1, 1]) == pytest.approx(4 / 6)
    # one cluster for all: purity = share of the largest class
    assert G.purity(["a", "a", "a", "b"], [0, 0, 0, 0]) == 0.75
    # ARI = (index - expected) / (max - expected), index = sum C(n_ij, 2) over the contingency.
    # contingency [[2,1],[0,1]]: index 1, rows C(3,2)+0=3, cols 1+1=2, expected 3*2/C(4,2)=1 -> 0
    assert G.ari(["a", "a", "a", "b"], [0, 0, 1, 1]) == pytest.approx(0.0)
    # contingency [[2,0],[1,2]]: index 2, rows 1+3=4, cols 3+1=4, expected 16/10, max 4 -> 0.4/2.4
    assert G.ari([0, 0, 1, 1, 1], [0, 0, 0, 1, 1]) == pytest.approx(1 / 6)


def test_names_follow_size_largest_first():
    assert name_by_size([5, 2, 2, 9, 2, 5]).tolist() == ["g1", "g0", "g0", "g2", "g0", "g1"]
    assert name_by_size(["b", "a"]).tolist() == ["g1", "g0"]  # tie: by original label


# ---------------------------------------------------------------- random

def test_random_groups_are_seeded_balanced_and_carry_no_signal(tmp_path):
    users = pd.DataFrame(dict(user_id=[f"u{i}" for i in range(600)], split="train",
                              true_group=np.repeat(["A", "B", "C"], [300, 200, 100]), profile=""))
    pairs = pd.DataFrame(dict(pair_id=["p1"], user_id=["u1"], prompt_id=["q1"], split="train",
                              prompt="hi", chosen="a", rejected="b"))
    u, p = write(tmp_path, users, pairs)
    m = assign_groups(AssignConfig(method="random", seed=1), u, p, tmp_path / "a")
    a = pd.read_parquet(tmp_path / "a" / "groups.parquet")
    assign_groups(AssignConfig(method="random", seed=1), u, p, tmp_path / "b")
    assert a.equals(pd.read_parquet(tmp_path / "b" / "groups.parquet"))
    assign_groups(AssignConfig(method="random", seed=2), u, p, tmp_path / "c")
    assert not a.equals(pd.read_parquet(tmp_path / "c" / "groups.parquet"))
    assert m["sizes"] == {"g0": 200, "g1": 200, "g2": 200}  # K = number of true groups
    assert abs(m["ari"]) < 0.02 and m["purity"] < 0.6
    m = assign_groups(AssignConfig(method="random", n_groups=7), u, p, tmp_path / "d")
    assert m["n_groups"] == 7 and set(m["sizes"].values()) <= {85, 86}


# ---------------------------------------------------------------- outputs and bad input

def test_outputs_pass_the_schema_and_bad_input_writes_nothing(tmp_path):
    users, pairs = persona_tables(sizes=(4, 3, 2), pairs_per_user=1)
    u, p = write(tmp_path, users, pairs)
    out = tmp_path / "out"
    assign_groups(AssignConfig(method="label"), u, p, out)
    validate(pd.read_parquet(out / "groups.parquet"), Groups, "groups")
    assert sorted(x.name for x in out.iterdir()) == ["groups.parquet", "groups_metrics.json"]

    fresh = tmp_path / "fresh"
    bad_users = users.assign(split=["train"] * 8 + ["test"])
    (tmp_path / "bad").mkdir()
    u2, _ = write(tmp_path / "bad", bad_users, pairs)
    with pytest.raises(DataValidationError, match="split"):
        assign_groups(AssignConfig(method="label"), u2, p, fresh)
    bad_pairs = pairs.assign(rejected=pairs["chosen"])
    _, p2 = write(tmp_path / "bad", users, bad_pairs)
    with pytest.raises(DataValidationError, match="chosen equals rejected"):
        assign_groups(AssignConfig(method="label"), u, p2, fresh)
    _, p3 = write(tmp_path / "bad", users, pairs.assign(user_id="ghost"))
    with pytest.raises(ValueError, match="not in users: 'ghost'"):
        assign_groups(AssignConfig(method="label"), u, p3, fresh)
    with pytest.raises(ValueError, match="n_groups=10 is more than the 9 users"):
        assign_groups(AssignConfig(method="random", n_groups=10), u, p, fresh)
    assert not fresh.exists()


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    users, pairs = persona_tables(sizes=(2, 2, 2), pairs_per_user=1)
    u, p = write(tmp_path, users, pairs)

    def broken(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(G, "write_json", broken)
    with pytest.raises(OSError, match="disk full"):
        assign_groups(AssignConfig(method="label"), u, p, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # groups.parquet was written to a temp, then removed


def test_config_and_cli(tmp_path, capsys):
    with pytest.raises(ValueError, match="k_range"):
        AssignConfig(k_range=(5, 3))
    with pytest.raises(ValueError, match="algoritm"):
        AssignConfig(algoritm="gmm")
    users, pairs = persona_tables(sizes=(3, 2, 2), pairs_per_user=1)
    u, p = write(tmp_path, users, pairs)
    params = tmp_path / "params.yaml"
    params.write_text("assign_groups:\n  method: random\n  n_groups: 2\n")
    argv = ["--users", str(u), "--pairs", str(p), "--out_dir", str(tmp_path / "o")]
    assert G.main(["--params", str(params), *argv, "--seed", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["sizes"] == {"g0": 4, "g1": 3}
    # no params file: defaults plus the command line
    assert G.main(["--params", str(tmp_path / "none.yaml"), *argv, "--method", "label"]) == 0
    assert json.loads(capsys.readouterr().out)["sizes"] == {"A": 3, "B": 2, "C": 2}
    assert G.main(["--params", str(params), *argv, "--n_groups", "0"]) == 2
    assert G.main(["--params", str(params), *argv, "--n_groups", "50"]) == 1
    assert "more than the 7 users" in capsys.readouterr().err


PROFILES = {"A": "Short cheerful answers with emoji, please!",
            "B": "I value thorough, formal and carefully argued replies.",
            "C": "Jazz on repeat; rock is not for me."}


def test_bt_mixture_with_profiles_places_users_without_pairs_by_profile(tmp_path):
    users, pairs = persona_tables(sizes=(6, 4, 3), pairs_per_user=2)
    newcomer = pd.DataFrame({"user_id": ["newcomer"], "split": "eval", "true_group": "C", "profile": ""})
    users = pd.concat([users, newcomer], ignore_index=True)
    users["profile"] = users["true_group"].map(PROFILES)
    u, p = write(tmp_path, users, pairs)
    cfg = AssignConfig(method="cluster", algorithm="bt_mixture", use_profile=True, encoder=TINY,
                       n_groups=3, pca_dims=4, profile_dims=4, n_init=3)
    m = assign_groups(cfg, u, p, tmp_path)
    groups = pd.read_parquet(tmp_path / "groups.parquet").merge(users, on="user_id")
    assert m["n_without_pairs"] == 1 and m["users_without_pairs"] == ["newcomer"]
    # placed by its profile (the same text as C's), not by the largest-group default
    c_group = groups.query("true_group == 'C' and user_id != 'newcomer'")["group"].mode()[0]
    assert groups.set_index("user_id").loc["newcomer", "group"] == c_group
    assert m["ari_clustered"] == m["ari"]  # every user was clustered: none got the default


def test_use_profile_needs_profiles_and_the_bt_mixture(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="use_profile needs algorithm bt_mixture, not 'kmeans'"):
        AssignConfig(method="cluster", algorithm="kmeans", use_profile=True)
    users, pairs = persona_tables(sizes=(3, 3, 3), pairs_per_user=2)  # profiles are ""
    u, p = write(tmp_path, users, pairs)
    cfg = AssignConfig(method="cluster", algorithm="bt_mixture", use_profile=True, encoder=TINY, n_groups=2)
    with pytest.raises(ValueError, match=r"profile column is empty for 9 users: 'a00', 'a01'"):
        assign_groups(cfg, u, p, tmp_path / "out")
    assert not (tmp_path / "out").exists()
