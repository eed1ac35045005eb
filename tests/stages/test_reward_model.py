"""Tests of the group-conditioned reward model (pgrpo.stages.reward.reward_model, pgrpo.stages.reward.train_reward).

    .venv/bin/python -m pytest -q tests/stages/test_reward_model.py

All but one test use the 2-layer random encoder ("tiny-random-bert"); the MiniLM
test learns two opposite preferences from a few dozen pairs (~20-40 s on 2 cores).
Inputs are built by hand as DataFrames that follow pgrpo.stages.data.schemas (Pairs, Groups).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from pgrpo.stages.data.schemas import DataValidationError
from pgrpo.stages.reward.reward_model import (
    GroupRewardFn,
    bradley_terry_loss,
    load_reward_model,
    pairwise_accuracy,
)
from pgrpo.stages.reward.train_reward import RewardConfig, main, train_reward

TOPICS = [
    "pizza", "rainy days", "jazz", "running", "the ocean", "coffee", "chess", "winter", "cats",
    "gardening", "museums", "camping", "tea", "cycling", "bread", "poetry", "the moon", "yoga",
    "football", "sushi", "painting", "trains", "mountains", "baking", "podcasts", "dogs", "rain",
    "autumn", "chocolate", "hiking", "photography", "theatre", "volcanoes", "libraries", "surfing",
    "birds", "tennis", "pasta", "deserts", "astronomy", "snow", "cooking", "violins", "rivers",
    "skating", "pottery", "forests", "opera", "ice cream", "bicycles",
]
PROMPTS = ["What do you think about {}?", "Tell me something about {}.", "Any advice on {}?",
           "Can you say a word on {}?", "Why do people like {}?"]
SHORT = ["{} rocks!! 😍🔥", "lol {} = pure joy 🎉", "yesss {} 💯😎", "{}? love it 😂👍", "omg {} ✨✨"]
LONG = [
    "Thank you for your question regarding {}. In my considered view, it merits careful attention, "
    "and I would be pleased to elaborate further should you require additional detail.",
    "Regarding {}, I would respectfully observe that the subject has been examined at length by many "
    "authors; accordingly, I recommend a measured and well-documented approach to it.",
    "With respect to {}, permit me to offer a thorough assessment: the matter involves several "
    "considerations, each of which deserves a deliberate and formal treatment.",
]


def preference_tables(n_train: int = 40, n_eval: int = 10, users_per_group: int = 4
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairs, groups): group 'casual' prefers short emoji replies, 'formal' long formal ones.

    Both groups see the very same (prompt, short, long) triples with chosen and rejected
    swapped, so a reward model blind to the group is right on exactly one of each mirror
    pair: 0.5 overall whatever it learns. The eval triples use topics never trained on.
    """
    rows = []
    for i, topic in enumerate(TOPICS[:n_train + n_eval]):
        prompt = PROMPTS[i % len(PROMPTS)].format(topic)
        short, long = SHORT[i % len(SHORT)].format(topic), LONG[i % len(LONG)].format(topic)
        split = "train" if i < n_train else "eval"
        for group, chosen, rejected in [("casual", short, long), ("formal", long, short)]:
            rows.append(dict(pair_id=f"{group}-{i}", user_id=f"{group}-u{i % users_per_group}",
                             prompt_id=f"q{i}", split=split, prompt=prompt, chosen=chosen,
                             rejected=rejected, group=group))
    df = pd.DataFrame(rows)
    groups = df[["user_id", "group"]].drop_duplicates().reset_index(drop=True)
    return df.drop(columns="group"), groups


def write_tables(tmp_path: Path, pairs: pd.DataFrame, groups: pd.DataFrame) -> tuple[Path, Path]:
    pairs_path, groups_path = tmp_path / "pairs.parquet", tmp_path / "groups.parquet"
    pairs.to_parquet(pairs_path)
    groups.to_parquet(groups_path)
    return pairs_path, groups_path


def tiny_cfg(**overrides) -> RewardConfig:
    base = dict(encoder="tiny-random-bert", epochs=1, batch_size=8, max_length=64, device="cpu")
    return RewardConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> tuple[Path, Path]:
    pairs, groups = preference_tables(n_train=12, n_eval=4, users_per_group=3)
    return write_tables(tmp_path_factory.mktemp("tables"), pairs, groups)


@pytest.fixture(scope="module")
def trained(tables, tmp_path_factory) -> tuple[Path, dict, torch.nn.Module]:
    """(folder, metrics, in-memory model) of one tiny run (seed 0) shared by several tests."""
    import pgrpo.stages.reward.reward_model as rm

    captured = {}

    def capture(model, folder):  # keep the model exactly as it was saved
        captured["model"] = model
        real_save(model, folder)

    real_save, out = rm.save_reward_model, tmp_path_factory.mktemp("trained") / "rm"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rm, "save_reward_model", capture)
        metrics = train_reward(tiny_cfg(seed=0), *tables, out)
    return out, metrics, captured["model"]


def eval_accuracy_by_true_group(model_dir: Path, pairs: pd.DataFrame, groups: pd.DataFrame,
                                score_as: str | None = None) -> dict[str, float]:
    """Held-out accuracy of a saved model per true group; `score_as` scores every pair as that group."""
    df = pairs[pairs["split"] == "eval"].merge(groups, on="user_id")
    names = sorted(df["group"].unique()) if score_as is None else [score_as]
    fn = GroupRewardFn(model_dir, names, device="cpu")
    ids = torch.tensor([names.index(score_as or g) for g in df["group"]])
    prompts = df["prompt"].tolist()
    acc = pairwise_accuracy(fn(prompts, df["chosen"].tolist(), ids, []),
                            fn(prompts, df["rejected"].tolist(), ids, []))
    return {g: acc[torch.tensor((df["group"] == g).to_numpy())].mean().item()
            for g in sorted(df["group"].unique())}


# --------------------------------------------------------------------------- learning


def test_minilm_learns_opposite_preferences_per_group(tmp_path):
    """The one real-encoder test: both groups above 0.8 held out, and only with conditioning."""
    pairs, groups = preference_tables(n_train=40, n_eval=10)
    pairs_path, groups_path = write_tables(tmp_path, pairs, groups)
    cfg = RewardConfig(encoder="minilm", epochs=2, batch_size=16, max_length=64, device="cpu")
    start = time.perf_counter()
    metrics = train_reward(cfg, pairs_path, groups_path, tmp_path / "rm")
    seconds = time.perf_counter() - start
    print(f"\nMiniLM reward model: {seconds:.1f} s, held-out accuracy {metrics['eval_accuracy_per_group']}")
    assert metrics["eval_pairs_per_group"] == {"casual": 10, "formal": 10}
    for group, acc in metrics["eval_accuracy_per_group"].items():
        assert acc >= 0.8, (group, metrics)
    # The saved model reproduces the same per-group accuracy through the reward-function path.
    assert eval_accuracy_by_true_group(tmp_path / "rm", pairs, groups) == pytest.approx(
        metrics["eval_accuracy_per_group"])
    # Without conditioning: score every pair as one group. The mirror construction caps the
    # overall accuracy at 0.5, and the groups cannot both be above chance.
    blind = eval_accuracy_by_true_group(tmp_path / "rm", pairs, groups, score_as="casual")
    assert sum(blind.values()) / 2 == pytest.approx(0.5, abs=0.05), blind
    assert min(blind.values()) < 0.5, blind
    # The pre-training checks (group_checks) say the same: each group is learned and differs,
    # and formal's pairs under casual's head score what the saved model's blind path scores.
    checks = metrics["group_checks"]
    for group, c in checks.items():
        assert c["own_accuracy"] == pytest.approx(metrics["eval_accuracy_per_group"][group])
        assert c["disagreement_ci"][0] > 0, checks
    assert checks["formal"]["other_heads_accuracy"] == pytest.approx(blind["formal"], abs=1e-6)


def test_one_group_model_is_at_chance_on_opposite_preferences(tmp_path):
    """Trained with every user in one group, the model cannot beat 0.5 on this data."""
    pairs, groups = preference_tables(n_train=12, n_eval=6, users_per_group=3)
    pairs_path, groups_path = write_tables(tmp_path, pairs, groups.assign(group="everyone"))
    metrics = train_reward(tiny_cfg(), pairs_path, groups_path, tmp_path / "rm")
    assert list(metrics["eval_accuracy_per_group"]) == ["everyone"]
    assert metrics["eval_accuracy"] == pytest.approx(0.5)
    by_true = eval_accuracy_by_true_group(tmp_path / "rm", pairs, groups, score_as="everyone")
    assert by_true["casual"] + by_true["formal"] == pytest.approx(1.0)
    check = metrics["group_checks"]["everyone"]  # one head: nothing to disagree with
    assert check["disagreement"] is None and check["own_accuracy"] == pytest.approx(0.5)


def test_bradley_terry_loss_by_hand():
    assert bradley_terry_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(math.log(2))
    r_c, r_r = torch.tensor([2.0, -1.0]), torch.tensor([0.0, 1.0])
    by_hand = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(2.0))) / 2
    assert bradley_terry_loss(r_c, r_r).item() == pytest.approx(by_hand)
    assert pairwise_accuracy(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])).tolist() == [1, 0.5, 0]


# --------------------------------------------------------------------------- save / load


def check_saved_folder(out: Path, metrics: dict, conditioning: str) -> None:
    files = sorted(p.name for p in out.iterdir())
    assert {"model.safetensors", "config.json", "metrics.json", "loss_curve.csv"} <= set(files)
    # No pickle anywhere: weights in safetensors, everything else json / csv.
    assert all(p.suffix in {".safetensors", ".json", ".csv"} for p in out.iterdir()), files
    config = json.loads((out / "config.json").read_text())
    assert config["group_map"] == {"casual": 0, "formal": 1}
    assert config["conditioning"] == conditioning and config["encoder_config"]["model_type"] == "bert"
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    curve = pd.read_csv(out / "loss_curve.csv")
    assert list(curve.columns) == ["epoch", "step", "split", "loss"]
    assert (curve["split"] == "train").sum() == metrics["steps"] and (curve["split"] == "eval").sum() == 1


def check_group_order(out: Path) -> None:
    """The policy's group list in another order than the model's: names, not positions, decide."""
    prompts, completions = ["Any advice on tea?"] * 3, ["tea 😍", "Regarding tea, I would observe.", "ok"]
    expected = load_reward_model(out, device="cpu").score(prompts, completions, torch.tensor([0, 1, 1]))
    fn = GroupRewardFn(out, ["formal", "casual"], device="cpu")
    got = fn(prompts, completions, torch.tensor([1, 0, 0]), [{}] * 3)  # casual, formal, formal
    assert got.shape == (3,) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected)
    # The groups score differently, so a map applied by position would have been caught.
    assert not torch.allclose(fn(prompts, completions, torch.tensor([0, 1, 1]), [{}] * 3), got)


def test_save_load_round_trip_heads(trained):
    out, metrics, in_memory = trained
    check_saved_folder(out, metrics, "heads")
    check_group_order(out)
    # The model as trained and as loaded from disk give the same rewards.
    prompts, completions = ["What do you think about jazz?"] * 2, ["jazz 😎", "Regarding jazz, formally."]
    ids = torch.tensor([0, 1])
    loaded = GroupRewardFn(out, ["casual", "formal"], device="cpu")(prompts, completions, ids, [])
    torch.testing.assert_close(loaded, in_memory.score(prompts, completions, ids))


def test_save_load_round_trip_embedding(tmp_path, tables):
    metrics = train_reward(tiny_cfg(conditioning="embedding"), *tables, tmp_path / "rm")
    check_saved_folder(tmp_path / "rm", metrics, "embedding")
    check_group_order(tmp_path / "rm")


def test_unknown_group_name_is_an_error(trained):
    with pytest.raises(ValueError, match="'pirates'.*not in the reward model"):
        GroupRewardFn(trained[0], ["casual", "pirates"], device="cpu")
    fn = GroupRewardFn(trained[0], ["casual"], device="cpu")
    with pytest.raises(ValueError, match="outside group_names"):
        fn(["q"], ["a"], torch.tensor([3]), [{}])


# --------------------------------------------------------------------------- bad input


def test_users_without_group_are_reported(tmp_path):
    pairs, groups = preference_tables(n_train=12, n_eval=4, users_per_group=3)
    groups = groups[~groups["user_id"].isin(["casual-u1", "formal-u2"])]
    paths = write_tables(tmp_path, pairs, groups)
    n_orphans = pairs["user_id"].isin(["casual-u1", "formal-u2"]).sum()
    with pytest.raises(DataValidationError, match=rf"{n_orphans} of {len(pairs)} pairs belong to 2 users") as e:
        train_reward(tiny_cfg(), *paths, tmp_path / "rm")
    assert "casual-u1" in str(e.value) and "formal-u2" in str(e.value)
    assert not (tmp_path / "rm").exists()


def test_pairs_failing_schema_write_nothing(tmp_path):
    pairs, groups = preference_tables(n_train=12, n_eval=4, users_per_group=3)
    pairs.loc[3, "rejected"] = pairs.loc[3, "chosen"]
    pairs.loc[5, "split"] = "test"
    paths = write_tables(tmp_path, pairs, groups)
    out = tmp_path / "models" / "rm"
    with pytest.raises(DataValidationError, match="chosen equals rejected") as e:
        train_reward(tiny_cfg(), *paths, out)
    assert "'split'" in str(e.value)
    assert not out.exists() and not out.parent.exists()


def test_cli_defaults_and_overrides(tmp_path, tables, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("reward:\n  encoder: tiny-random-bert\n  max_length: 32\n  device: cpu\n")
    rc = main(["--params", str(params), "--pairs", str(tables[0]), "--groups", str(tables[1]),
               "--out_dir", str(tmp_path / "rm"), "--epochs", "1", "--batch_size", "8"])
    assert rc == 0 and (tmp_path / "rm" / "model.safetensors").exists()
    assert json.loads((tmp_path / "rm" / "config.json").read_text())["max_length"] == 32
    assert '"eval_accuracy"' in capsys.readouterr().out
    assert main(["--params", str(params), "--epochs", "0"]) == 2  # invalid field value
    assert main(["--params", str(tmp_path / "none.yaml"), "--pairs", str(tmp_path / "no.parquet")]) == 1


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_model(tmp_path, tables, trained):
    m1 = train_reward(tiny_cfg(seed=3), *tables, tmp_path / "a")
    m2 = train_reward(tiny_cfg(seed=3), *tables, tmp_path / "b")
    assert m1 == m2
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    # ... and the seed matters (the shared fixture ran with seed 0).
    assert trained[1]["train_loss_per_epoch"] != m1["train_loss_per_epoch"]


def check_heldout_accuracy(model, metrics: dict, tables) -> pd.DataFrame:
    """The saved model's own scoring of the held-out pairs gives the reported accuracy
    (computed in training from cached features); returns the pairs joined with groups."""
    pairs = pd.read_parquet(tables[0]).merge(pd.read_parquet(tables[1]), on="user_id")
    held = pairs[pairs["split"] == "eval"]
    hg = torch.tensor([model.group_map[g] for g in held["group"]])
    acc = (model.score(held["prompt"].tolist(), held["chosen"].tolist(), hg)
           > model.score(held["prompt"].tolist(), held["rejected"].tolist(), hg)).float().mean()
    assert metrics["eval_accuracy"] == pytest.approx(acc.item())
    return pairs


def test_frozen_encoder_trains_the_head_on_cached_features(tables, tmp_path):
    """freeze_encoder: the encoder is untouched, the head learns the groups' opposite tastes.

    The cached features must be what the saved model computes at scoring time: training
    accuracy measured by re-scoring the training pairs through the full model (no cache)
    must be what the head was fit to, i.e. clearly above the 0.5 a group-blind model gets.
    """
    from pgrpo.stages.reward.encoder import load_encoder

    out = tmp_path / "frozen"
    metrics = train_reward(tiny_cfg(freeze_encoder=True, epochs=30, head_lr=5e-2), *tables, out)
    model = load_reward_model(out, "cpu")
    # Held-out accuracy from cached features equals the saved model's own scoring.
    pairs = check_heldout_accuracy(model, metrics, tables)
    fresh, _ = load_encoder("tiny-random-bert")
    for (name, w), (_, w0) in zip(model.encoder.state_dict().items(), fresh.state_dict().items()):
        torch.testing.assert_close(w, w0, msg=name)
    train = pairs[pairs["split"] == "train"]
    gids = torch.tensor([model.group_map[g] for g in train["group"]])
    r_c = model.score(train["prompt"].tolist(), train["chosen"].tolist(), gids)
    r_r = model.score(train["prompt"].tolist(), train["rejected"].tolist(), gids)
    assert (r_c > r_r).float().mean() >= 0.9


def test_response_only_inputs_ignore_the_prompt(tables, tmp_path):
    """inputs='response': the score of a response is the same under any prompt (no per-prompt
    level), survives save/load, and the frozen-feature cache matches full scoring."""
    out = tmp_path / "resp"
    metrics = train_reward(tiny_cfg(freeze_encoder=True, inputs="response", epochs=3), *tables, out)
    model = load_reward_model(out, "cpu")
    assert model.inputs == "response"
    gids = torch.tensor([0, 0, 1])
    responses = ["a short answer", "a much longer answer about jazz", "one more"]
    a = model.score(["prompt one"] * 3, responses, gids)
    b = model.score(["an entirely different, longer prompt text"] * 3, responses, gids)
    torch.testing.assert_close(a, b)
    check_heldout_accuracy(model, metrics, tables)
    # The default still reads the prompt: the same responses score differently per prompt.
    train_reward(tiny_cfg(freeze_encoder=True), *tables, tmp_path / "pair")
    default = load_reward_model(tmp_path / "pair", "cpu")
    assert default.inputs == "prompt_response"
    assert not torch.allclose(default.score(["prompt one"] * 3, responses, gids),
                              default.score(["an entirely different prompt"] * 3, responses, gids))


# --------------------------------------------------------------------------- surface features


def test_surface_features_by_hand():
    """Token counts (log1p) over the fitted vocabulary and one length bump per doubling."""
    from pgrpo.stages.reward.encoder import load_encoder
    from pgrpo.stages.reward.surface import LENGTH_CENTRES, SurfaceFeaturizer

    _, tok = load_encoder("tiny-random-bert")
    texts = ["jazz jazz rocks", "jazz 🎵 🎵", "rare words here"]
    f = SurfaceFeaturizer.fit(tok, texts, min_count=2)
    # Only 'jazz' is used by two distinct texts; emoji are the tokenizer's [UNK] (one text).
    assert f.vocab == tok.convert_tokens_to_ids(["jazz"])
    assert f.dim == 1 + len(LENGTH_CENTRES)
    x = f(["jazz jazz jazz", "no match", ""])
    assert x.shape == (3, f.dim)
    assert x[:, 0].tolist() == pytest.approx([math.log(4), 0.0, 0.0])
    # 3 tokens: the bumps at 2 and 4 tokens light up equally-ish, the one at 256 not at all.
    bumps = x[0, 1:]
    centre = [math.log(c) for c in LENGTH_CENTRES]
    expected = [math.exp(-0.5 * ((math.log(3) - c) / math.log(2)) ** 2) for c in centre]
    assert bumps.tolist() == pytest.approx(expected, rel=1e-5)
    assert bumps.argmax().item() in (1, 2) and bumps[-1] < 1e-6
    # An empty text counts as one token long (no log(0)), and no vocabulary token.
    assert torch.isfinite(x[2]).all() and x[2, 0] == 0
    with pytest.raises(ValueError, match="min_count"):
        SurfaceFeaturizer.fit(tok, texts, min_count=0)


def test_surface_features_survive_save_load_and_learn_length(tmp_path, tables):
    """With surface features a frozen random encoder still separates short from long replies:
    the head reads the length bumps and token counts, and the saved model scores the same."""
    out = tmp_path / "surface"
    metrics = train_reward(tiny_cfg(freeze_encoder=True, surface_features=True, epochs=20,
                                    head_lr=5e-2), *tables, out)
    model = load_reward_model(out, "cpu")
    assert model.surface is not None and len(model.surface.vocab) > 0
    check_heldout_accuracy(model, metrics, tables)
    # Held-out topics never trained on: the surface carries the groups' opposite tastes.
    assert metrics["eval_accuracy"] >= 0.9
    config = json.loads((out / "config.json").read_text())
    assert config["surface"]["vocab"] == model.surface.vocab
