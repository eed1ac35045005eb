"""Next-movie recommendation from MovieLens 100K or 1M (as the paper's MovieLens task).

The format is picked by the files under `path`: `u.data`, `u.item`, `u.user` (100K;
TAB / '|' separated) or `ratings.dat`, `movies.dat`, `users.dat` (1M; '::' separated).
Both are Latin-1, not UTF-8 (e.g. "Misérables, Les (1995)").

Per user, ratings in time order are cut in three, so nothing leaks forward:
    history   the first half before the held-out part; the prompt lists its most recent
              liked movies ("I enjoyed: Title (year) [genres], ...")
    later     the second half; chosen = "You might enjoy <a later movie rated high>",
              rejected = a movie rated low (any time before the held-out part)
    held out  the last `heldout_items` liked movies: the judge (kind "heldout_items")
Users.true_group is gender + age band ("F 25-34", ML-1M's seven bands); age, age_band,
gender, occupation, age_group (three broad bands: <25, 25-44, 45+) and gender_age_group
("F 25-44") are kept as columns so assign_groups can group by any of them.

    from pgrpo.stages.data.movielens import build
    tables = build("../shared/data/movielens/ml-100k", max_users=50)
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from pgrpo.stages.data import Tables, stable_id
from pgrpo.stages.data.schemas import DataValidationError, validate

GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western"]
OCCUPATIONS_1M = ["other", "academic/educator", "artist", "clerical/admin",
                  "college/grad student", "customer service", "doctor/health care",
                  "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
                  "programmer", "retired", "sales/marketing", "scientist", "self-employed",
                  "technician/engineer", "tradesman/craftsman", "unemployed", "writer"]
# The 1M age codes are the lower bounds of these bands; 100K ages fall into them too.
AGE_EDGES = [0, 18, 25, 35, 45, 50, 56, 200]
AGE_BANDS = ["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]
# Three broad bands on the same boundaries: 2 x 7 groups leave ML-100K with groups of 7 and
# 12 users (F 56+, F <18), too few to hold out test prompts from; 2 x 3 keep >= 56 users each.
BROAD_AGE_EDGES = [0, 25, 45, 200]
BROAD_AGE_BANDS = ["<25", "25-44", "45+"]


def _band(age: int, edges: list[int], names: list[str]) -> str:
    return names[next(i for i in range(len(names)) if age < edges[i + 1])]

RATINGS = pa.DataFrameSchema({
    "user_id": pa.Column(int), "item_id": pa.Column(int),
    "rating": pa.Column(int, pa.Check.in_range(1, 5)), "timestamp": pa.Column(int),
}, coerce=True)
USERS = pa.DataFrameSchema({
    "user_id": pa.Column(int, unique=True), "age": pa.Column(int, pa.Check.in_range(0, 120)),
    "gender": pa.Column(str, pa.Check.isin(["M", "F"])), "occupation": pa.Column(str),
}, coerce=True)


def _table(path: Path, sep: str, names: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"MovieLens file {path} does not exist")
    text = path.read_bytes().decode("latin-1")  # Latin-1 decodes any byte: never fails
    if sep == "::":
        text = text.replace("::", "\t")  # the C parser takes one-char separators only
    # QUOTE_NONE: titles contain quote characters that are not CSV quoting.
    df = pd.read_csv(io.StringIO(text), sep="\t" if sep == "::" else sep, header=None,
                     quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    if df.shape[1] < len(names):
        raise ValueError(f"{path}: expected {len(names)} {sep!r}-separated fields "
                         f"({', '.join(names)}), found {df.shape[1]}")
    return df.iloc[:, : len(names)].set_axis(names, axis=1)


def load(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, str]:
    """(ratings, movies[item_id, title, genres], users[user_id, age, gender, occupation],
    format name), validated."""
    path = Path(path)
    expected = {"ml-100k": ["u.data", "u.item", "u.user"],
                "ml-1m": ["ratings.dat", "movies.dat", "users.dat"]}
    found = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    for fmt_name, files in expected.items():
        missing = [f for f in files if f not in found]
        if files[0] in found and missing:
            raise FileNotFoundError(f"{path}: MovieLens {fmt_name[3:].upper()} needs "
                                    f"{', '.join(files)}; missing {', '.join(missing)}")
    fmt = next((name for name, files in expected.items() if files[0] in found), None)
    if fmt is None:
        seen = ("the folder does not exist" if not path.is_dir() else
                f"found {', '.join(found[:8])}" if found else "the folder is empty")
        raise FileNotFoundError(
            f"{path}: no MovieLens data (expected u.data, u.item, u.user for 100K or ratings.dat, "
            f"movies.dat, users.dat for 1M; {seen}). Where to get them: data/raw/README.md")
    if fmt == "ml-100k":
        ratings = _table(path / "u.data", "\t", ["user_id", "item_id", "rating", "timestamp"])
        items = _table(path / "u.item", "|",
                       ["item_id", "title", "date", "video", "url", *GENRES_100K])
        flags = items[GENRES_100K].to_numpy() == "1"
        genres = ["|".join(g for g, f in zip(GENRES_100K, row) if f) for row in flags]
        movies = pd.DataFrame({"item_id": items["item_id"], "title": items["title"],
                               "genres": genres})
        users = _table(path / "u.user", "|", ["user_id", "age", "gender", "occupation", "zip"])
    else:
        ratings = _table(path / "ratings.dat", "::", ["user_id", "item_id", "rating", "timestamp"])
        movies = _table(path / "movies.dat", "::", ["item_id", "title", "genres"])
        users = _table(path / "users.dat", "::", ["user_id", "gender", "age", "occupation", "zip"])
        codes = pd.to_numeric(users["occupation"], errors="coerce")
        users["occupation"] = [OCCUPATIONS_1M[int(c)] if 0 <= c < len(OCCUPATIONS_1M) else str(o)
                               for c, o in zip(codes.fillna(-1), users["occupation"])]
    ratings = validate(ratings, RATINGS, f"{path} ratings ({fmt})")
    users = validate(users[["user_id", "age", "gender", "occupation"]], USERS,
                     f"{path} users ({fmt})")
    movies["item_id"] = pd.to_numeric(movies["item_id"], errors="raise").astype(int)
    unknown = ratings[~ratings["item_id"].isin(movies["item_id"])]
    if len(unknown):
        raise DataValidationError(f"{path} ratings ({fmt}): column 'item_id', check 'movie exists' "
                                  f"at rows {list(unknown.index[:10])}; values: "
                                  f"{unknown['item_id'].head(5).tolist()}")
    return ratings, movies, users, fmt


def _label(title: str, genres: str) -> str:
    return f"{title} [{genres.replace('|', ', ')}]" if genres else title


def response(title: str, genres: str) -> str:
    return f"You might enjoy {title} ({genres.replace('|', ', ')})." if genres \
        else f"You might enjoy {title}."


def _user_tables(user_id: str, rows: list[tuple[str, str, int]], demo: dict, cfg: dict,
                 rng: random.Random) -> tuple[dict, dict, dict, list[dict]] | None:
    """One user's (users row, prompt, judge row, pairs) from time-ordered (title, genres,
    rating); None when the user has too few liked movies."""
    like, n_held = cfg["like_threshold"], cfg["heldout_items"]
    liked = [i for i, (_, _, r) in enumerate(rows) if r >= like]
    if len(liked) <= n_held:
        return None
    before, held = rows[: liked[-n_held]], [rows[i] for i in liked[-n_held:]]
    history, later = before[: len(before) // 2], before[len(before) // 2:]
    shown = [m for m in history if m[2] >= like][-cfg["history_length"]:]
    if not shown:
        return None
    seen = {t for t, _, _ in shown}
    goods = [response(t, g) for t, g, r in later if r >= like and t not in seen]
    bads = [response(t, g) for t, g, r in before if r <= cfg["dislike_threshold"] and t not in seen]
    band = _band(demo["age"], AGE_EDGES, AGE_BANDS)
    broad = _band(demo["age"], BROAD_AGE_EDGES, BROAD_AGE_BANDS)
    profile = "I enjoyed: " + ", ".join(_label(t, g) for t, g, _ in shown) + "."
    user = {"user_id": user_id, "true_group": f"{demo['gender']} {band}", "profile": profile,
            "age": int(demo["age"]), "age_band": band, "gender": demo["gender"],
            "occupation": demo["occupation"], "age_group": broad,
            "gender_age_group": f"{demo['gender']} {broad}"}
    prompt = {"prompt_id": stable_id("p", user_id, 0), "user_id": user_id,
              "prompt": f"{profile} Recommend one movie I have not seen."}
    items = [{"title": t, "genres": g.split("|") if g else [], "rating": r} for t, g, r in held]
    judge = {"user_id": user_id, "kind": "heldout_items",
             "payload": json.dumps(items, ensure_ascii=False)}
    # Sample cells of the goods x bads product (heavy raters have 10^4 of them); keep
    # distinct texts only: 18 titles exist twice under different ids in 100K.
    n = len(goods) * len(bads)
    cells = rng.sample(range(n), min(cfg["pairs_per_user"], n))
    texts = dict.fromkeys((goods[i // len(bads)], bads[i % len(bads)]) for i in cells)
    pairs = [{"pair_id": stable_id("pair", user_id, c, r), "user_id": user_id,
              "prompt_id": prompt["prompt_id"], "prompt": prompt["prompt"], "chosen": c,
              "rejected": r} for c, r in texts if c != r]
    return user, prompt, judge, pairs


def build(path: str | Path, like_threshold: int = 4, dislike_threshold: int = 2,
          history_length: int = 10, heldout_items: int = 5, min_ratings: int = 20,
          pairs_per_user: int = 8, max_users: int | None = None, seed: int = 0) -> Tables:
    if dislike_threshold >= like_threshold:
        raise ValueError(f"dislike_threshold={dislike_threshold} must be < "
                         f"like_threshold={like_threshold}")
    cfg = dict(like_threshold=like_threshold, dislike_threshold=dislike_threshold,
               history_length=history_length, heldout_items=heldout_items,
               pairs_per_user=pairs_per_user)
    ratings, movies, users, fmt = load(path)
    movies = movies[movies["title"].str.strip().str.lower() != "unknown"]  # 100K movie 267
    ratings = ratings.merge(movies, on="item_id").sort_values(["user_id", "timestamp", "item_id"])
    counts = ratings["user_id"].value_counts()
    eligible = sorted(int(u) for u in counts[counts >= min_ratings].index)
    rng = random.Random(seed)
    if max_users is not None and max_users < len(eligible):
        eligible = sorted(rng.sample(eligible, max_users))
    ratings = ratings[ratings["user_id"].isin(eligible)]
    # Plain tuples: per-user pandas slicing costs ~20 ms a user, this costs microseconds.
    by_user: dict[int, list[tuple[str, str, int]]] = {}
    for u, t, g, r in zip(ratings["user_id"].tolist(), ratings["title"].tolist(),
                          ratings["genres"].tolist(), ratings["rating"].tolist()):
        by_user.setdefault(u, []).append((t, g, r))
    demo = users.set_index("user_id").to_dict("index")
    out_users, prompts, pairs, judge = [], [], [], []
    skipped = no_pairs = 0
    for uid in eligible:
        made = _user_tables(str(uid), by_user[uid], demo[uid], cfg, rng) if uid in demo else None
        if made is None:
            skipped += 1
            continue
        out_users.append(made[0])
        prompts.append(made[1])
        judge.append(made[2])
        pairs.extend(made[3])
        no_pairs += not made[3]
    stats = {"format": fmt, "users_eligible": len(eligible), "users_skipped": skipped,
             "users_without_pairs": no_pairs}
    return Tables(pd.DataFrame(out_users), pd.DataFrame(prompts), pd.DataFrame(pairs),
                  pd.DataFrame(judge), stats)
