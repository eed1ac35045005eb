"""The assign_groups stage: map every user to a preference group.

    python -m pgrpo.stages.groups.assign_groups                                  # params.yaml, section `assign_groups`
    python -m pgrpo.stages.groups.assign_groups --method label --label_column gender
    python -m pgrpo.stages.groups.assign_groups --method cluster --algorithm gmm --k_range [2,6]
    python -m pgrpo.stages.groups.assign_groups --method cluster --algorithm bt_mixture --use_profile true
    python -m pgrpo.stages.groups.assign_groups --method random --seed 3         # the paper's ablation
    python -m pgrpo.stages.groups.assign_groups --users u.parquet --pairs p.parquet --out_dir /tmp/g

Reads users.parquet and pairs.parquet (pandera-validated), writes groups.parquet
(schema Groups) and groups_metrics.json (sizes; ARI and purity against
users.true_group when it is known; for cluster the chosen K and the score per K).

Methods
- label: the group is a column of users.parquet (true_group, gender, an age band).
- cluster: a user's preference direction is the mean over their *train* pairs of
  embed(chosen) - embed(rejected); directions are clustered with k-means (K by
  silhouette) or a Gaussian mixture (K by BIC). Or, algorithm bt_mixture: a mixture
  of Bradley-Terry models fitted by EM on every pair (pgrpo.stages.groups.bt_mixture; K by BIC),
  which pools a class's pairs instead of trusting each user's own few; with
  use_profile the users' embedded profiles are a second view of the same classes
  (docs/groups.md has the measured ARIs). Users without train
  pairs have no direction: they join the largest group (the best guess with no
  evidence), or with use_profile are placed by their profile; either way they are
  counted in the metrics. Eval pairs are never read, so groups leak nothing of the
  evaluation data.
- random: a seeded permutation of the users dealt round-robin into K groups (equal
  sizes, +-1; K = n_groups or the number of true groups). Equal sizes keep every
  group non-empty and make membership the only thing the ablation changes.

Group names are "g0", "g1", ... by size, largest first (label keeps its values).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from pgrpo.core import paths
from pgrpo.core.config import Section, add_config_args, run_stage_command, section_from_cli
from pgrpo.core.io import atomic_outputs, read_table, write_json
from pgrpo.stages.data.schemas import Groups, Pairs, Users, validate

SECTION = "assign_groups"


class AssignConfig(Section):
    """Preference groups of users (params.yaml section `assign_groups`)."""

    method: Literal["label", "cluster", "random"] = Field(
        "label", description="label: a users column; cluster: users' preference directions; random: ablation")
    label_column: str = Field("true_group", description="label: users.parquet column (true_group, gender, age band)")
    n_groups: int | None = Field(
        None, ge=1, description="cluster/random: K; None = cluster: best K over k_range, random: number of true groups")
    algorithm: Literal["kmeans", "gmm", "bt_mixture"] = Field(
        "bt_mixture", description="cluster: kmeans (K by silhouette), gmm (K by BIC) or bt_mixture (EM over pairs, K by BIC)")
    k_range: tuple[int, int] = Field((2, 10), description="cluster: smallest and largest K tried (inclusive)")
    covariance_type: Literal["full", "tied", "diag", "spherical"] = Field(
        "spherical", description="gmm covariance; spherical suits few users in a 384-d space")
    normalize: bool = Field(True, description="cluster: L2-normalize each user's direction (what, not how strongly)")
    pca_dims: int = Field(16, ge=1, description="bt_mixture: pair features reduced to this many principal components")
    l2: float = Field(1.0, gt=0, description="bt_mixture: L2 penalty of each class's utility direction")
    n_init: int = Field(20, ge=1, description="bt_mixture: EM restarts per K (best log-likelihood kept)")
    use_profile: bool = Field(
        True, description="bt_mixture: the users' embedded profile text as a second view (places users without pairs too)")
    profile_dims: int = Field(16, ge=1, description="bt_mixture + use_profile: principal components of the profile embeddings")
    encoder: str = Field("minilm", description="sentence encoder: minilm, tiny-random-bert or a local folder")
    batch_size: int = Field(64, ge=1, description="texts per encoder forward pass")
    seed: int = Field(0, description="seed of k-means / gmm initialisation and of random groups")

    @model_validator(mode="after")
    def _check(self) -> AssignConfig:
        lo, hi = self.k_range
        if not 2 <= lo <= hi:
            raise ValueError(f"k_range={self.k_range}: need 2 <= smallest <= largest")
        # a default use_profile is bt_mixture's; set with another algorithm, it is a mistake
        if self.use_profile and self.algorithm != "bt_mixture" and "use_profile" in self.model_fields_set:
            raise ValueError(f"use_profile needs algorithm bt_mixture, not {self.algorithm!r}")
        return self


# ---------------------------------------------------------------- pure helpers

def purity(true: Any, pred: Any) -> float:
    """Share of users whose cluster's majority true label is their own label."""
    table = pd.crosstab(pd.Series(pred, name="pred").to_numpy(), pd.Series(true, name="true").to_numpy())
    return float(table.max(axis=1).sum() / table.to_numpy().sum())


def ari(true: Any, pred: Any) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(true), np.asarray(pred)))


def name_by_size(labels: Any) -> np.ndarray:
    """Relabel to "g0", "g1", ... by group size, largest first (ties: by original label)."""
    counts = pd.Series(np.asarray(labels)).value_counts()
    order = sorted(counts.index, key=lambda g: (-counts[g], str(g)))
    names = {g: f"g{i}" for i, g in enumerate(order)}
    return np.array([names[g] for g in np.asarray(labels)], dtype=object)


def cluster_vectors(X: np.ndarray, n_groups: int | None, algorithm: str = "kmeans",
                    k_range: tuple[int, int] = (2, 10), seed: int = 0,
                    covariance_type: str = "spherical") -> tuple[np.ndarray, int, dict[int, float]]:
    """Cluster rows of X; returns (labels, K, score per K tried).

    K is n_groups when given (scores then empty), else the best over k_range:
    highest silhouette for kmeans, lowest BIC for gmm. K never exceeds n - 1,
    since silhouette is undefined when every point is its own cluster.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.mixture import GaussianMixture

    n = len(X)

    def fit(k: int) -> tuple[np.ndarray, float]:
        if algorithm == "kmeans":
            km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(X)
            score = silhouette_score(X, km.labels_) if 1 < k < n else float("nan")
            return km.labels_, float(score)
        if algorithm == "gmm":
            gm = GaussianMixture(n_components=k, covariance_type=covariance_type, n_init=3,
                                 reg_covar=1e-4, random_state=seed).fit(X)
            return gm.predict(X), float(gm.bic(X))
        raise ValueError(f"unknown clustering algorithm {algorithm!r} (kmeans or gmm)")

    if n_groups is not None:
        if n_groups > n:
            raise ValueError(f"n_groups={n_groups} is more than the {n} users to cluster")
        labels, _ = fit(n_groups)
        return labels, n_groups, {}
    lo, hi = k_range[0], min(k_range[1], n - 1)
    if lo > hi:
        raise ValueError(f"only {n} users to cluster: too few to choose K in {tuple(k_range)}; set n_groups")
    fits = {k: fit(k) for k in range(lo, hi + 1)}
    scores = {k: s for k, (_, s) in fits.items()}
    pick = max if algorithm == "kmeans" else min
    k = pick(scores, key=lambda kk: scores[kk])
    return fits[k][0], k, scores


def pair_differences(pairs: pd.DataFrame, encoder: str = "minilm",
                     batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """embed(chosen) - embed(rejected) of every *train* pair [pairs, dim], and its user ids."""
    from pgrpo.stages.reward.encoder import embed, load_encoder

    train = pairs[pairs["split"] == "train"]
    # Each text is embedded once even when many pairs share it (shared candidates are common).
    texts = pd.unique(pd.concat([train["chosen"], train["rejected"]])).tolist()
    model, tok = load_encoder(encoder)
    E = embed(model, tok, texts, batch_size=batch_size, progress=True).numpy().astype(np.float64)
    row = {t: i for i, t in enumerate(texts)}
    diff = E[train["chosen"].map(row).to_numpy()] - E[train["rejected"].map(row).to_numpy()]
    return diff, train["user_id"].to_numpy()


def preference_vectors(pairs: pd.DataFrame, encoder: str = "minilm", batch_size: int = 64,
                       normalize: bool = True) -> pd.DataFrame:
    """One row per user with train pairs: mean of embed(chosen) - embed(rejected)."""
    diff, user_ids = pair_differences(pairs, encoder, batch_size)
    vecs = pd.DataFrame(diff, index=user_ids).groupby(level=0, sort=False).mean()
    if normalize:
        norms = np.linalg.norm(vecs.to_numpy(), axis=1, keepdims=True)
        vecs = vecs / np.maximum(norms, 1e-12)  # chosen == rejected in meaning: leave ~0, no NaN
    return vecs


def profile_features(users: pd.DataFrame, dims: int, encoder: str = "minilm", batch_size: int = 64,
                     seed: int = 0) -> pd.DataFrame:
    """One row per user: the first `dims` principal components of their embedded profile."""
    from sklearn.decomposition import PCA

    from pgrpo.stages.reward.encoder import embed, load_encoder

    empty = users["profile"].str.strip() == ""
    if empty.any():
        raise ValueError(f"use_profile: the profile column is empty for {int(empty.sum())} users: "
                         f"{_missing(empty, users)}; set use_profile false")
    model, tok = load_encoder(encoder)
    E = embed(model, tok, users["profile"].tolist(), batch_size=batch_size, progress=True).numpy()
    E = E.astype(np.float64) / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    dims = min(dims, *E.shape)
    Z = PCA(dims, random_state=seed).fit_transform(E) if dims < E.shape[1] else E
    return pd.DataFrame(Z, index=users["user_id"].to_numpy())


def bt_mixture_groups(diff: np.ndarray, user_ids: np.ndarray, n_groups: int | None,
                      k_range: tuple[int, int], pca_dims: int, l2: float, n_init: int,
                      seed: int, context: pd.DataFrame | None = None) -> tuple[pd.Series, int, dict[int, float]]:
    """Class of every user with pairs, or of every row of `context` (user_id index) when
    given (pgrpo.stages.groups.bt_mixture); K = n_groups or the lowest BIC."""
    from sklearn.decomposition import PCA
    from tqdm.auto import tqdm

    from pgrpo.stages.groups.bt_mixture import fit_bt_mixture

    dims = min(pca_dims, *diff.shape)
    X = PCA(dims, random_state=seed).fit_transform(diff) if dims < diff.shape[1] else diff
    X = X / max(float(X.std()), 1e-12)  # one scale, so l2 means the same on any encoder
    if context is None:
        ids, index = np.unique(user_ids, return_inverse=True)
        Z = None
    else:
        ids, Z = context.index.to_numpy(), context.to_numpy()
        index = pd.Index(ids).get_indexer(user_ids)
        if (index < 0).any():
            raise ValueError(f"pairs of users without a context row: {sorted(set(user_ids[index < 0]))[:10]}")
    ks = [n_groups] if n_groups is not None else range(k_range[0], min(k_range[1], len(ids)) + 1)
    # ~1 s an EM run on 2 CPU cores (2.6k pairs, 16 dims): minutes over a K range
    fits = {k: fit_bt_mixture(X, index, k, context=Z, l2=l2, n_init=n_init, seed=seed)
            for k in tqdm(ks, desc=f"bt_mixture ({n_init} EM starts per K)", unit="K")}
    k = min(fits, key=lambda kk: fits[kk].bic)
    scores = {kk: f.bic for kk, f in fits.items()} if n_groups is None else {}
    return pd.Series(fits[k].labels, index=ids), k, scores


# ---------------------------------------------------------------- the methods

def _missing(mask: pd.Series, users: pd.DataFrame) -> str:
    ids = users.loc[mask, "user_id"].tolist()
    return ", ".join(map(repr, ids[:10])) + (f" ... ({len(ids)} users)" if len(ids) > 10 else "")


def _label_groups(cfg: AssignConfig, users: pd.DataFrame) -> np.ndarray:
    col = cfg.label_column
    if col not in users.columns:
        raise ValueError(f"label_column {col!r} is not a column of users.parquet "
                         f"(columns: {', '.join(users.columns)})")
    values = users[col]
    if pd.api.types.is_float_dtype(values) and values.dropna().mod(1).eq(0).all():
        values = values.astype("Int64")  # age band 3.0 -> "3", not "3.0"
    text = values.astype("string").str.strip()
    missing = text.isna() | (text == "")
    if missing.any():
        raise ValueError(f"label_column {col!r} is missing for {int(missing.sum())} users: "
                         f"{_missing(missing, users)}")
    return text.to_numpy(dtype=object)


def _random_groups(cfg: AssignConfig, users: pd.DataFrame) -> np.ndarray:
    k = cfg.n_groups or users["true_group"].dropna().nunique()
    if k == 0:
        raise ValueError("method random: users have no true_group to count groups from; set n_groups")
    rng = np.random.default_rng(cfg.seed)
    labels = np.empty(len(users), dtype=np.int64)
    labels[rng.permutation(len(users))] = np.arange(len(users)) % k
    return name_by_size(labels)


def _cluster_groups(cfg: AssignConfig, users: pd.DataFrame,
                    pairs: pd.DataFrame) -> tuple[np.ndarray, dict, np.ndarray]:
    """(group per user, metrics, which users the clustering placed: those with train
    pairs, or every user with use_profile)."""
    if cfg.algorithm == "bt_mixture":
        diff, user_ids = pair_differences(pairs, cfg.encoder, cfg.batch_size)
        if len(diff) == 0:
            raise ValueError("cluster: no train pairs to cluster users by")
        context = (profile_features(users, cfg.profile_dims, cfg.encoder, cfg.batch_size, cfg.seed)
                   if cfg.use_profile else None)
        by_user, k, scores = bt_mixture_groups(diff, user_ids, cfg.n_groups, cfg.k_range,
                                               cfg.pca_dims, cfg.l2, cfg.n_init, cfg.seed, context)
    else:
        vecs = preference_vectors(pairs, cfg.encoder, cfg.batch_size, cfg.normalize)
        labels, k, scores = cluster_vectors(vecs.to_numpy(), cfg.n_groups, cfg.algorithm,
                                            cfg.k_range, cfg.seed, cfg.covariance_type)
        by_user = pd.Series(labels, index=vecs.index)
    largest = by_user.value_counts().idxmax()
    assigned = users["user_id"].map(by_user)
    without = ~users["user_id"].isin(pairs.loc[pairs["split"] == "train", "user_id"])
    placed = assigned.notna()  # with use_profile, users without pairs are placed by profile
    assigned = assigned.fillna(largest).astype(np.int64)
    info = {"k_criterion": "silhouette" if cfg.algorithm == "kmeans" else "bic", "k": int(k),
            "k_scores": {str(kk): round(s, 6) for kk, s in scores.items()},
            "n_without_pairs": int(without.sum()),
            "users_without_pairs": users.loc[without, "user_id"].head(20).tolist()}
    return name_by_size(assigned.to_numpy()), info, placed.to_numpy()


# ---------------------------------------------------------------- the stage

def assign_groups(cfg: AssignConfig, users_path: str | Path = paths.PROCESSED / "users.parquet",
                  pairs_path: str | Path = paths.PROCESSED / "pairs.parquet",
                  out_dir: str | Path = paths.PROCESSED) -> dict[str, Any]:
    """Write out_dir/groups.parquet and out_dir/groups_metrics.json; return the metrics."""
    users = validate(read_table(users_path), Users, f"users ({users_path})").reset_index(drop=True)
    pairs = validate(read_table(pairs_path), Pairs, f"pairs ({pairs_path})")
    unknown = sorted(set(pairs["user_id"]) - set(users["user_id"]))
    if unknown:
        shown = ", ".join(map(repr, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        raise ValueError(f"pairs ({pairs_path}) name {len(unknown)} users not in users: {shown}")
    if cfg.n_groups is not None and cfg.n_groups > len(users):
        raise ValueError(f"n_groups={cfg.n_groups} is more than the {len(users)} users")

    extra: dict[str, Any] = {}
    if cfg.method == "label":
        group = _label_groups(cfg, users)
    elif cfg.method == "random":
        group = _random_groups(cfg, users)
    else:
        group, extra, clustered = _cluster_groups(cfg, users, pairs)

    groups = validate(pd.DataFrame({"user_id": users["user_id"], "group": group}), Groups, "groups (output)")
    sizes = groups["group"].value_counts()
    metrics: dict[str, Any] = {
        "method": cfg.method, "n_users": len(groups), "n_groups": int(len(sizes)),
        "sizes": {str(g): int(n) for g, n in sizes.items()}, "ari": None, "purity": None,
        "k_scores": {}, **extra,
    }
    if cfg.method == "cluster":
        metrics["algorithm"] = cfg.algorithm
    # Score against known labels only when most users have one; a handful of
    # labelled users would give a number that looks meaningful and is not.
    known = users["true_group"].notna().to_numpy()
    metrics["n_labelled"] = int(known.sum())
    if known.mean() >= 0.5:
        metrics["ari"] = round(ari(users["true_group"][known], group[known]), 6)
        metrics["purity"] = round(purity(users["true_group"][known], group[known]), 6)
        if cfg.method == "cluster":  # the clustering alone: users without pairs only had a default
            both = known & clustered
            metrics["ari_clustered"] = round(ari(users["true_group"][both], group[both]), 6)
            metrics["purity_clustered"] = round(purity(users["true_group"][both], group[both]), 6)

    out_dir = Path(out_dir)
    with atomic_outputs(out_dir / "groups.parquet", out_dir / "groups_metrics.json") as (g_tmp, m_tmp):
        groups.to_parquet(g_tmp, index=False)
        write_json(m_tmp, metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="assign users to preference groups",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (missing: defaults)")
    parser.add_argument("--users", default=str(paths.PROCESSED / "users.parquet"), help="users table")
    parser.add_argument("--pairs", default=str(paths.PROCESSED / "pairs.parquet"), help="pairs table")
    parser.add_argument("--out_dir", default=str(paths.PROCESSED), help="where groups.parquet goes")
    add_config_args(parser, AssignConfig)
    args = parser.parse_args(argv)
    return run_stage_command(lambda: section_from_cli(args, SECTION, AssignConfig),
                             lambda cfg: assign_groups(cfg, args.users, args.pairs, args.out_dir))


if __name__ == "__main__":
    sys.exit(main())
