"""The prepare stage: synthetic personas, preference files (good and bad), MovieLens.

    .venv/bin/python -m pytest -q tests/stages/test_prepare.py
"""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from pgrpo.stages.data import prepare as prepare_mod
from pgrpo.stages.data import movielens, synthetic
from pgrpo.stages.data.personas import (make_personas, persona_from_json, persona_to_json,
                                 style_features, utility)
from pgrpo.stages.data.prepare import OUTPUTS, PrepareConfig, main, prepare
from pgrpo.stages.data.schemas import DataValidationError, Judge, Pairs, Prompts, Users, validate

REPO = Path(__file__).resolve().parents[2]
ML100K = Path(__file__).resolve().parents[3] / "shared/data/movielens/ml-100k"
EXAMPLE = REPO / "examples/preferences.jsonl"


def read(out: Path) -> dict[str, pd.DataFrame]:
    return {n: pd.read_parquet(out / f"{n}.parquet")
            for n in ("users", "prompts", "pairs", "judge")}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return prepare(PrepareConfig(), out), read(out)


# ---------------------------------------------------------------- synthetic


def test_synthetic_default_writes_valid_tables(default_run):
    metrics, t = default_run
    for df, schema in [(t["users"], Users), (t["prompts"], Prompts), (t["pairs"], Pairs),
                       (t["judge"], Judge)]:
        validate(df, schema, "readback")
    assert metrics["rows"]["users"]["total"] == len(t["users"]) == 300
    assert metrics["rows"]["pairs"]["total"] == len(t["pairs"]) > 0
    assert sum(g["total"] for g in metrics["users_per_group"].values()) == 300
    sizes = t["users"]["true_group"].value_counts()
    assert len(sizes) == 7 and sizes.index[0] == "mainstream"
    assert sizes.iloc[0] >= 2 * sizes.iloc[1], "no clear majority"
    assert sizes.iloc[-1] < sizes.iloc[1], "group sizes should be unequal"
    # the prompt carries the user's profile, so a policy can personalize
    merged = t["prompts"].merge(t["users"], on="user_id")
    assert all(p.startswith(prof) for p, prof in zip(merged["prompt"], merged["profile"]))


def test_synthetic_splits_by_user_and_by_prompt(default_run):
    _, t = default_run
    users, prompts, pairs = t["users"], t["prompts"], t["pairs"]
    eval_users = set(users.loc[users["split"] == "eval", "user_id"])
    train_users = set(users.loc[users["split"] == "train", "user_id"])
    assert eval_users and train_users and not eval_users & train_users
    assert (prompts.loc[prompts["user_id"].isin(eval_users), "split"] == "eval").all()
    held = prompts[prompts["user_id"].isin(train_users) & (prompts["split"] == "eval")]
    assert len(held) > 0, "no prompt of a training user is held out"
    # every training user keeps at least one training prompt; pairs follow their prompt
    assert set(prompts.loc[prompts["split"] == "train", "user_id"]) == train_users
    assert (pairs["split"] == pairs["prompt_id"].map(prompts.set_index("prompt_id")["split"])).all()
    # every persona with at least 5 users is evaluated
    per_group = users.groupby("true_group")["split"].apply(lambda s: (s == "eval").sum())
    sizes = users["true_group"].value_counts()
    assert (per_group[sizes[sizes >= 5].index] > 0).all()


def test_synthetic_is_deterministic_by_seed():
    a = synthetic.build(n_users=40, seed=3)
    b = synthetic.build(n_users=40, seed=3)
    c = synthetic.build(n_users=40, seed=4)
    pd.testing.assert_frame_equal(a.pairs, b.pairs)
    pd.testing.assert_frame_equal(a.users, b.users)
    assert not a.pairs["chosen"].equals(c.pairs["chosen"])


def _agreement(t) -> tuple[float, float]:
    """Observed share of pairs whose chosen has the higher true utility, and the share
    Bradley-Terry predicts, recomputed here from the judge payloads."""
    personas = {u: persona_from_json(p) for u, p in zip(t.judge["user_id"], t.judge["payload"])}
    agree, expected = [], []
    for u, c, r in zip(t.pairs["user_id"], t.pairs["chosen"], t.pairs["rejected"]):
        uc, ur = utility(personas[u], c), utility(personas[u], r)
        agree.append(uc > ur)
        expected.append(1 / (1 + math.exp(-abs(uc - ur) / 0.5)))
    return sum(agree) / len(agree), sum(expected) / len(expected)


def test_pair_labels_follow_bradley_terry():
    t = synthetic.build(n_users=150, bt_temperature=0.5, seed=1)
    observed, expected = _agreement(t)
    assert 0.6 < observed < 0.97, observed  # mostly right, but noisy
    assert abs(observed - expected) < 0.03, (observed, expected)
    noiseless = synthetic.build(n_users=40, bt_temperature=0.0, seed=1)
    assert _agreement(noiseless)[0] > 0.97  # only exact ties can disagree


# ---------------------------------------------------------------- personas

FORMAL = ("I would recommend Clair de Lune by Claude Debussy. It is a distinguished composition, "
          "particularly suited to a quiet evening; its arrangement rewards attentive listening. "
          "Furthermore, Debussy is widely regarded as a masterful figure whose harmonies shaped "
          "generations of composers. One might consider the complete suite thereafter.")
PLAIN = ("I'd suggest Bohemian Rhapsody by Queen. It's a classic rock song that moves from a "
         "ballad to opera to hard rock, so it keeps you engaged on a long drive, and most people "
         "know the words.")
EMOJI = "🎵 Try jazz! 🎷"
LIST = "- Master of Puppets by Metallica\n- Paranoid by Black Sabbath\n- The Trooper by Iron Maiden"
TITLE = "So What by Miles Davis."


def test_utility_orders_texts_as_each_persona_would():
    p = {x.name: x for x in make_personas()}
    u = {name: {k: utility(x, t) for k, t in dict(formal=FORMAL, plain=PLAIN, emoji=EMOJI,
                                                   list=LIST, title=TITLE, empty="").items()}
         for name, x in p.items()}
    assert u["emoji_fan"]["emoji"] > u["emoji_fan"]["formal"]
    assert u["mainstream"]["formal"] > u["mainstream"]["emoji"]
    assert max(u["mainstream"], key=u["mainstream"].get) == "plain"
    assert max(u["formal_critic"], key=u["formal_critic"].get) == "formal"
    assert max(u["terse_lister"], key=u["terse_lister"].get) == "list"
    assert max(u["minimalist"], key=u["minimalist"].get) == "title"
    assert all(min(s, key=s.get) == "empty" for s in u.values())


def test_style_features_read_free_text():
    model_output = ("Here are some songs you might like:\n\n1. **Take Five** by Dave Brubeck\n"
                    "2. **So What** by Miles Davis\n3. Naima by John Coltrane\n\nEnjoy!")
    f = style_features(model_output)
    assert f["list"] == 1.0 and f["exclaim"] > 0 and f["genre:jazz"] == 1.0 and f["emoji"] == 0
    assert style_features("Around the World by Daft Punk")["genre:punk"] == 0  # artist, not genre
    assert style_features("pop, rock and jazz")["genre:pop"] == pytest.approx(1 / 3)
    assert abs(sum(style_features(FORMAL)[k] for k in f if k.startswith("len_")) - 1) < 1e-9


def test_persona_json_round_trip_and_separation():
    for x in make_personas(separation=1.5):
        y = persona_from_json(persona_to_json(x))
        assert y.name == x.name and utility(y, FORMAL) == pytest.approx(utility(x, FORMAL))
    same = make_personas(separation=0.0)
    assert all(utility(x, EMOJI) == pytest.approx(utility(same[0], EMOJI)) for x in same)
    with pytest.raises(ValueError, match="unknown features"):
        persona_from_json('{"name": "x", "weights": {"loudness": 1}}')


# ---------------------------------------------------------------- file source


def test_file_source_example(tmp_path):
    metrics = prepare(PrepareConfig(source="file", path=str(EXAMPLE)), tmp_path)
    t = read(tmp_path)
    src = pd.read_json(EXAMPLE, lines=True)
    assert len(t["pairs"]) == len(src) and metrics["rows"]["judge"] == 0 and t["judge"].empty
    assert list(t["judge"].columns) == ["user_id", "kind", "payload"]
    assert dict(zip(t["users"]["user_id"], t["users"]["true_group"])) == \
        src.groupby("user_id")["group"].first().to_dict()
    assert (t["pairs"]["source"] == "hand-written").all()  # metadata is kept
    assert t["prompts"]["prompt_id"].nunique() == len(src[["user_id", "prompt"]].drop_duplicates())
    assert set(metrics["users_per_group"]) == {"calm", "energetic"}


def test_file_without_groups_and_with_numeric_ids(tmp_path):
    rows = [{"user_id": i % 3, "prompt": f"q{i}", "chosen": "a", "rejected": "b",
             "meta": {"k": i} if i % 2 else [i]} for i in range(9)]
    src = tmp_path / "p.parquet"
    pd.DataFrame(rows).assign(meta=lambda d: d["meta"].map(str)).to_parquet(src)
    metrics = prepare(PrepareConfig(source="file", path=str(src)), tmp_path / "out")
    users = read(tmp_path / "out")["users"]
    assert sorted(users["user_id"]) == ["0", "1", "2"] and users["true_group"].isna().all()
    assert metrics["users_per_group"]["(none)"]["total"] == 3


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


ROW = {"user_id": "u1", "prompt": "A song for a walk?", "chosen": "Jolene by Dolly Parton.",
       "rejected": "Paranoid by Black Sabbath."}
CSV_OK = "user_id,prompt,chosen,rejected\nu1,A song?,Jolene,Paranoid\n"
BAD_INPUTS = {
    "missing column": ("p.jsonl", _jsonl([{k: v for k, v in ROW.items() if k != "rejected"}]),
                       ["missing required column", "'rejected'"]),
    "empty string": ("p.jsonl", _jsonl([ROW, {**ROW, "chosen": "", "prompt": "x"}]),
                     ["'chosen'", "str_length", "rows 2"]),
    "chosen equals rejected": ("p.jsonl", _jsonl([ROW, {**ROW, "chosen": ROW["rejected"]}]),
                               ["chosen equals rejected", "rows 2"]),
    "duplicate rows": ("p.jsonl", _jsonl([ROW, {**ROW, "prompt": "x"}, ROW]),
                       ["duplicate (user_id, prompt, chosen, rejected) row", "rows 3"]),
    "null value": ("p.jsonl", _jsonl([ROW, {**ROW, "prompt": None}]),
                   ["'prompt'", "not_nullable", "rows 2"]),
    "empty csv cell": ("p.csv", (CSV_OK + "u2,,Jolene,Paranoid\n").encode(),
                       ["'prompt'", "not_nullable", "rows 3", "line numbers"]),
    "latin-1 bytes": ("p.csv", (CSV_OK + "u2,Un café?,Jolene,Paranoid\n").encode("latin-1"),
                      ["not valid UTF-8", "line 3", "Latin-1", "café"]),
    "utf-16": ("p.csv", CSV_OK.encode("utf-16"), ["UTF-16"]),
    "csv bytes in parquet": ("p.parquet", CSV_OK.encode(),
                             ["not a parquet file", "user_id,prompt"]),
    "garbage jsonl line": ("p.jsonl", _jsonl([ROW]) + b"{user_id: oops\n" + _jsonl([ROW]),
                           ["line 2", "not valid JSON", "oops"]),
    "json array line": ("p.jsonl", b"[1, 2]\n", ["line 1", "expected a JSON object"]),
    "empty file": ("p.jsonl", b"", ["empty"]),
    "blank lines only": ("p.csv", b"\n\n", ["empty"]),
    "parquet bytes in csv": ("p.csv", b"PAR1\x15\x04PAR1", ["a parquet file", "rename it"]),
    "unsupported extension": ("p.txt", CSV_OK.encode(), ["unsupported extension '.txt'"]),
    "conflicting groups": ("p.jsonl",
                           _jsonl([{**ROW, "group": "a"}, {**ROW, "prompt": "x", "group": "b"}]),
                           ["'group'", "one group per user", "'u1'"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_file_fails_with_one_readable_error_and_writes_nothing(tmp_path, case):
    name, data, fragments = BAD_INPUTS[case]
    src = tmp_path / name
    src.write_bytes(data)
    out = tmp_path / "out"
    with pytest.raises(ValueError) as err:
        prepare(PrepareConfig(source="file", path=str(src)), out)
    message = str(err.value)
    assert str(src) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert not out.exists() or not any(out.iterdir())


def test_bad_parquet_names_rows(tmp_path):
    src = tmp_path / "p.parquet"
    pd.DataFrame([ROW, {**ROW, "chosen": ROW["rejected"]}]).to_parquet(src)
    with pytest.raises(DataValidationError, match=r"(?s)rows\).*chosen equals rejected.*rows 2"):
        prepare(PrepareConfig(source="file", path=str(src)), tmp_path / "out")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(prepare_mod, "write_json", boom)
    with pytest.raises(OSError):
        prepare(PrepareConfig(source="file", path=str(EXAMPLE)), tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())


# ---------------------------------------------------------------- movielens


def test_movielens_100k(tmp_path):
    if not (ML100K / "u.data").exists():
        pytest.skip(f"MovieLens 100K not found at {ML100K}")
    _, movies, _, fmt = movielens.load(ML100K)
    assert fmt == "ml-100k" and "Misérables, Les (1995)" in set(movies["title"])
    metrics = prepare(PrepareConfig(source="movielens", path=str(ML100K), max_users=50), tmp_path)
    t = read(tmp_path)
    assert metrics["source_stats"]["format"] == "ml-100k" and 40 <= len(t["users"]) <= 50
    assert {"age", "age_band", "gender", "occupation", "age_group", "gender_age_group"} <= set(
        t["users"].columns)
    assert t["users"]["gender_age_group"].str.fullmatch(r"[MF] (<25|25-44|45\+)").all()
    assert t["users"]["true_group"].str.fullmatch(r"[MF] (<18|\d\d-\d\d|56\+)").all()
    assert (t["judge"]["kind"] == "heldout_items").all()
    prompts = t["prompts"].set_index("user_id")["prompt"]
    for user, payload in zip(t["judge"]["user_id"], t["judge"]["payload"]):
        items = json.loads(payload)
        assert len(items) == 5 and all(i["rating"] >= 4 for i in items)
    for user, chosen in zip(t["pairs"]["user_id"], t["pairs"]["chosen"]):
        title = chosen.removeprefix("You might enjoy ").rsplit(" (", 1)[0]
        assert title not in prompts[user], "recommends a movie the prompt lists as seen"


def test_movielens_1m_format(tmp_path):
    data = tmp_path / "ml-1m"
    data.mkdir()
    titles = ["Misérables, Les (1995)", "Toy Story (1995)", 'Bob "Fish" (1990)', "Heat (1995)"]
    titles += [f"Film {i} (1990)" for i in range(5, 13)]
    movies = "".join(f"{i}::{t}::Drama|War\n" for i, t in enumerate(titles, start=1))
    (data / "movies.dat").write_bytes(movies.encode("latin-1"))
    (data / "users.dat").write_text("1::F::25::12::55455\n2::M::1::20::01234\n3::M::56::0::T8H1N\n")
    pattern = [5, 1, 4, 2, 5, 3, 4, 1, 5, 2, 4, 5]
    lines = [f"{u}::{(i + u - 1) % 12 + 1}::{r}::{978300000 + 10 * i}"
             for u in (1, 2, 3) for i, r in enumerate(pattern)]
    (data / "ratings.dat").write_text("\n".join(lines) + "\n")
    cfg = PrepareConfig(source="movielens", path=str(data), min_ratings=10, heldout_items=2,
                        history_length=3)
    metrics = prepare(cfg, tmp_path / "out")
    t = read(tmp_path / "out")
    assert metrics["source_stats"]["format"] == "ml-1m" and len(t["users"]) == 3
    users = t["users"].set_index("user_id")
    assert users.loc["1", "occupation"] == "programmer"
    assert users.loc["1", "true_group"] == "F 25-34"
    assert users.loc["2", "age_band"] == "<18" and users.loc["3", "age_band"] == "56+"
    assert "I enjoyed: Misérables, Les (1995) [Drama, War]" in t["prompts"]["prompt"].iloc[0]
    assert len(t["pairs"]) == 3 * 8  # 2 later likes x 4 dislikes per user
    assert users.loc["2", "gender_age_group"] == "M <25" and users.loc["3", "age_group"] == "45+"


def test_movielens_missing_files_are_named_and_nothing_is_written(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"folder does not exist.*data/raw/README.md"):
        prepare(PrepareConfig(source="movielens", path=str(tmp_path / "nowhere")), out)
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "u.data").write_text("1\t1\t5\t1\n")
    with pytest.raises(FileNotFoundError, match="100K needs u.data, u.item, u.user; missing u.item, u.user"):
        prepare(PrepareConfig(source="movielens", path=str(tmp_path / "ml")), out)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("")
    with pytest.raises(FileNotFoundError, match="found notes.txt"):
        prepare(PrepareConfig(source="movielens", path=str(tmp_path / "other")), out)
    assert not out.exists()


# ---------------------------------------------------------------- config and CLI


def test_config_checks():
    with pytest.raises(ValueError, match="needs `path`"):
        PrepareConfig(source="file")
    with pytest.raises(ValueError, match="n_userz"):
        PrepareConfig(n_userz=3)


def test_cli_without_params_file(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--params", str(tmp_path / "none.yaml"), "--out_dir", str(out),
                 "--n_users", "30", "--n_personas", "3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    metrics = json.loads((out / "prepare_metrics.json").read_text())
    assert metrics["rows"]["users"]["total"] == 30 and len(metrics["users_per_group"]) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert main(["--params", str(tmp_path / "none.yaml"), "--out_dir", str(tmp_path / "o2"),
                 "--source", "file", "--path", str(bad)]) == 1
    assert "line 1" in capsys.readouterr().err and not (tmp_path / "o2").exists()
