"""The train_reward stage: a group-conditioned reward model, Bradley-Terry loss on pairs.

Reads pairs.parquet (schema Pairs) and groups.parquet (schema Groups), gives each
pair its user's preference group, trains on split == "train" and reports on
split == "eval" (the split column decided at prepare time is the held-out set;
there is no second random split here). Loss per pair:

    -log sigmoid( r(prompt, chosen, group) - r(prompt, rejected, group) )

Outputs, written all at once (nothing on failure), in `out_dir`:

    model.safetensors  config.json  tokenizer*.json    the model (see pgrpo.stages.reward.reward_model)
    metrics.json       held-out pairwise accuracy, overall and per group, and each group's pairs
                       under every group's head (group_checks.py); loss per epoch
    loss_curve.csv     epoch, step, split, loss   (train per step, eval per epoch)

Run recipe:

    python -m pgrpo.stages.reward.train_reward                               # params.yaml, section `reward`
    python -m pgrpo.stages.reward.train_reward --encoder tiny-random-bert --epochs 1 --out_dir /tmp/rm
    python -m pgrpo.stages.reward.train_reward --pairs my/pairs.parquet --groups my/groups.parquet

    from pgrpo.stages.reward.train_reward import RewardConfig, train_reward
    metrics = train_reward(RewardConfig(epochs=3), "data/processed/pairs.parquet",
                           "data/processed/groups.parquet", "models/reward")
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Literal

import pandas as pd
import torch
from pydantic import Field
from tqdm.auto import tqdm

from pgrpo.core import paths
from pgrpo.core.config import Section, add_config_args, run_stage_command, section_from_cli
from pgrpo.core.io import atomic_outputs, read_table, write_json
from pgrpo.core.models import resolve_device
from pgrpo.stages.data.schemas import DataValidationError, Groups, Pairs, validate


class RewardConfig(Section):
    """Reward-model training (params.yaml section `reward`)."""

    encoder: str = Field("minilm",
                         description="'minilm', 'tiny-random-bert' (tests) or a local encoder folder")
    conditioning: Literal["embedding", "heads"] = Field(
        "heads", description="heads: one linear head per group; embedding: group vector + shared MLP")
    epochs: int = Field(4, ge=1, description="passes over the train pairs")
    batch_size: int = Field(16, ge=1, description="pairs per optimizer step (2x sequences per forward)")
    lr: float = Field(5e-5, gt=0, description="AdamW learning rate of the encoder")
    # A new random head needs far larger steps than a pretrained encoder to learn in a few epochs.
    head_lr: float = Field(3e-3, gt=0, description="AdamW learning rate of the randomly initialized head")
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping")
    max_length: int = Field(128, ge=8, description="tokens of prompt + response, truncated longest-first")
    inputs: Literal["prompt_response", "response"] = Field(
        "prompt_response", description="what the encoder reads: the (prompt, response) pair, or the "
        "response alone (the group carries the preference; no per-prompt level to drift)")
    freeze_encoder: bool = Field(True, description="train only the head (fast, weaker)")
    surface_features: bool = Field(
        True, description="the head also reads the response's token counts and length "
        "(pgrpo.stages.reward.surface): what a pooled sentence embedding drops")
    surface_min_count: int = Field(2, ge=1, description="surface features: a token enters the "
                                   "vocabulary when this many distinct training responses use it")
    eval_batch_size: int = Field(64, ge=1, description="pairs per forward when scoring held-out pairs")
    policy_pairs: int = Field(
        0, ge=0, description="training prompts whose base-policy samples are compared and labelled "
        "by the judge's Bradley-Terry noise (pgrpo.stages.reward.policy_pairs), added to the template pairs; "
        "0 = template pairs only")
    policy_samples_per_prompt: int = Field(4, ge=2, description="policy pairs: samples per prompt")
    policy_pairs_per_prompt: int = Field(3, ge=1, description="policy pairs: pairs per prompt")
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    seed: int = Field(0, description="head init, dropout and batch order")


def group_map_of(groups: pd.DataFrame) -> dict[str, int]:
    """{group name -> index}, names sorted so the same groups always get the same indices."""
    return {name: i for i, name in enumerate(sorted(groups["group"].unique()))}


def join_groups(pairs: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """pairs plus a `group` column; every pair's user must have a group."""
    out = pairs.merge(groups[["user_id", "group"]], on="user_id", how="left", validate="many_to_one")
    orphans = out[out["group"].isna()]
    if len(orphans):
        users = orphans["user_id"].drop_duplicates().tolist()
        shown = ", ".join(map(repr, users[:5])) + (" ..." if len(users) > 5 else "")
        raise DataValidationError(
            f"{len(orphans)} of {len(out)} pairs belong to {len(users)} users with no group in the "
            f"groups table (e.g. {shown}); rerun assign_groups on the same users")
    return out


def evaluate(model, df: pd.DataFrame, batch_size: int, cached: tuple | None = None
             ) -> tuple[float | None, dict[str, float], pd.Series]:
    """(mean BT loss, {group: pairwise accuracy}, per-pair accuracy) of held-out pairs, no grad.

    `cached`: the pairs' pooled (chosen, rejected) states from a frozen encoder.
    """
    from pgrpo.stages.reward.reward_model import bradley_terry_loss, pairwise_accuracy

    if df.empty:
        return None, {}, pd.Series(dtype=float)
    gids = torch.tensor([model.group_map[g] for g in df["group"]])
    if cached is not None:
        with torch.no_grad():
            r_chosen, r_rejected = (model.reward_from_pooled(c, gids).float().cpu() for c in cached)
    else:
        prompts = df["prompt"].tolist()
        r_chosen = model.score(prompts, df["chosen"].tolist(), gids, batch_size)
        r_rejected = model.score(prompts, df["rejected"].tolist(), gids, batch_size)
    acc = pd.Series(pairwise_accuracy(r_chosen, r_rejected).numpy(), index=df.index)
    per_group = acc.groupby(df["group"]).mean()
    loss = bradley_terry_loss(r_chosen, r_rejected).item()
    return loss, {str(g): float(a) for g, a in per_group.items()}, acc


@torch.no_grad()
def _frozen_features(model, df: pd.DataFrame, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled encoder states of every (prompt, chosen) and (prompt, rejected), computed once.

    A frozen encoder gives the same states every epoch (eval mode: no dropout), so
    only the head trains, over cached features: one encoder pass instead of one per epoch.
    Each distinct (prompt, response) is encoded once (a candidate recurs across pairs:
    27 % of the default data's texts), in order of length so a batch pads little.
    """
    model.encoder.eval()
    prompts = [""] * len(df) if model.inputs == "response" else list(df["prompt"])
    texts = list(zip(prompts, df["chosen"])) + list(zip(prompts, df["rejected"]))
    unique = sorted(set(texts), key=lambda t: (len(t[0]) + len(t[1]), t))
    parts = [model.pool([p for p, _ in unique[i:i + batch_size]],
                        [r for _, r in unique[i:i + batch_size]])
             for i in tqdm(range(0, len(unique), batch_size), desc="encoding pairs", unit="batch")]
    pooled = torch.cat(parts)
    index = {t: k for k, t in enumerate(unique)}
    rows = torch.tensor([index[t] for t in texts])
    return pooled[rows[:len(df)]], pooled[rows[len(df):]]


def train_reward(cfg: RewardConfig, pairs_path: str | Path = paths.PROCESSED / "pairs.parquet",
                 groups_path: str | Path = paths.PROCESSED / "groups.parquet",
                 out_dir: str | Path = paths.MODELS / "reward",
                 extra_pairs: pd.DataFrame | None = None, extra_stats: dict | None = None) -> dict:
    """Train the reward model on the pairs, write it to `out_dir`; returns the metrics.

    `extra_pairs` (schema Pairs): more pairs, e.g. between the base policy's own samples
    (pgrpo.stages.reward.policy_pairs); saved beside the model as policy_pairs.parquet, and
    `extra_stats` joins the metrics.
    """
    # Check every input before any model loads or any file is touched.
    pairs = validate(read_table(pairs_path), Pairs, f"pairs ({pairs_path})")
    if extra_pairs is not None:
        extra_pairs = validate(extra_pairs, Pairs, "policy pairs")
        pairs = pd.concat([pairs, extra_pairs], ignore_index=True)
    groups = validate(read_table(groups_path), Groups, f"groups ({groups_path})")
    df = join_groups(pairs, groups)
    train_df = df[df["split"] == "train"].reset_index(drop=True)
    eval_df = df[df["split"] == "eval"].reset_index(drop=True)
    if train_df.empty:
        raise DataValidationError(f"pairs ({pairs_path}): no rows with split == 'train'")
    group_map = group_map_of(groups)

    from pgrpo.stages.reward.encoder import load_encoder  # heavy imports once the inputs are known good
    from pgrpo.stages.reward.reward_model import RewardModel, bradley_terry_loss, save_reward_model
    from pgrpo.stages.reward.surface import SurfaceFeaturizer

    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    encoder, tokenizer = load_encoder(cfg.encoder)
    # The surface vocabulary comes from the training responses only (held-out pairs unseen).
    surface = (SurfaceFeaturizer.fit(tokenizer, [*train_df["chosen"], *train_df["rejected"]],
                                     cfg.surface_min_count) if cfg.surface_features else None)
    model = RewardModel(encoder, tokenizer, group_map, cfg.conditioning, cfg.max_length,
                        cfg.encoder, cfg.inputs, surface).float().to(device)
    model.encoder.requires_grad_(not cfg.freeze_encoder)
    head_params = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    param_groups = [{"params": head_params, "lr": cfg.head_lr}]
    if not cfg.freeze_encoder:
        param_groups.append({"params": list(model.encoder.parameters()), "lr": cfg.lr})
    optimizer = torch.optim.AdamW(param_groups, weight_decay=cfg.weight_decay)

    # Batch order from its own generator: the same seed gives the same batches
    # however much randomness model construction consumed.
    order_gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = -(-len(train_df) // cfg.batch_size)
    curve: list[dict] = []
    train_losses: list[float] = []
    eval_losses: list[float | None] = []
    step = 0
    cached = _frozen_features(model, train_df, cfg.eval_batch_size) if cfg.freeze_encoder else None
    eval_cached = (_frozen_features(model, eval_df, cfg.eval_batch_size)
                   if cfg.freeze_encoder and not eval_df.empty else None)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="reward model", unit="step")
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        if cfg.freeze_encoder:
            model.encoder.eval()  # a frozen encoder should not add dropout noise either
        perm = torch.randperm(len(train_df), generator=order_gen).tolist()
        epoch_loss = 0.0
        for start in range(0, len(perm), cfg.batch_size):
            b = train_df.iloc[perm[start:start + cfg.batch_size]]
            n = len(b)
            gids = torch.tensor([group_map[g] for g in b["group"]])
            # Chosen and rejected in one forward pass: same prompts, twice the batch.
            if cached is not None:  # frozen encoder: its pooled states were computed once
                idx = torch.tensor(perm[start:start + cfg.batch_size])
                pooled = torch.cat([cached[0][idx], cached[1][idx]])
                r = model.reward_from_pooled(pooled, gids.repeat(2))
            else:
                prompts = b["prompt"].tolist()
                responses = b["chosen"].tolist() + b["rejected"].tolist()
                r = model(prompts + prompts, responses, gids.repeat(2))
            loss = bradley_terry_loss(r[:n], r[n:])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                           cfg.max_grad_norm)
            optimizer.step()
            step += 1
            epoch_loss += loss.item() * n
            curve.append({"epoch": epoch, "step": step, "split": "train", "loss": loss.item()})
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
        train_losses.append(epoch_loss / len(train_df))
        model.eval()  # heads have no dropout; the frozen path compares with the full model's scores
        eval_loss, per_group, acc = evaluate(model, eval_df, cfg.eval_batch_size, eval_cached)
        eval_losses.append(eval_loss)
        if eval_loss is not None:
            curve.append({"epoch": epoch, "step": step, "split": "eval", "loss": eval_loss})
            # stderr, next to the bar: stdout stays clean for the CLI's JSON line.
            bar.write(f"epoch {epoch}: train loss {train_losses[-1]:.4f}, eval loss {eval_loss:.4f}, "
                      f"eval accuracy {acc.mean():.3f}", file=sys.stderr)
    bar.close()
    checks = {}
    if not eval_df.empty:
        from pgrpo.stages.reward.group_checks import cross_head_scores, group_checks

        model.eval()
        pooled = eval_cached or _frozen_features(model, eval_df, cfg.eval_batch_size)
        names = sorted(group_map, key=group_map.get)
        checks = group_checks(*cross_head_scores(model, *pooled),
                              [group_map[g] for g in eval_df["group"]], eval_df["user_id"],
                              names, seed=cfg.seed)

    metrics = {
        "eval_accuracy": float(acc.mean()) if len(acc) else None,
        "eval_accuracy_per_group": per_group,
        "eval_pairs": len(eval_df),
        "group_checks": checks,  # per group: own-head accuracy, disagreement (group_checks.py)
        "eval_pairs_per_group": {str(g): int(c)
                                 for g, c in eval_df["group"].value_counts().sort_index().items()},
        "train_pairs": len(train_df),
        "train_loss_per_epoch": train_losses,
        "eval_loss_per_epoch": eval_losses,
        "groups": len(group_map),
        "steps": step,
        **(extra_stats or {}),
    }
    with atomic_outputs(out_dir) as (tmp,):
        tmp.mkdir(parents=True)
        save_reward_model(model, tmp)
        write_json(tmp / "metrics.json", metrics)
        curve_df = pd.DataFrame(curve, columns=["epoch", "step", "split", "loss"])
        curve_df.to_csv(tmp / "loss_curve.csv", index=False)
        if extra_pairs is not None:
            extra_pairs.to_parquet(tmp / "policy_pairs.parquet", index=False)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="train the group-conditioned reward model",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (missing: defaults)")
    parser.add_argument("--pairs", default=str(paths.PROCESSED / "pairs.parquet"))
    parser.add_argument("--groups", default=str(paths.PROCESSED / "groups.parquet"))
    parser.add_argument("--out_dir", default=str(paths.MODELS / "reward"))
    add_config_args(parser, RewardConfig)
    args = parser.parse_args(argv)

    def stage(cfg: RewardConfig) -> dict:
        metrics = train_reward(cfg, args.pairs, args.groups, args.out_dir)
        return {"out_dir": args.out_dir, "eval_accuracy": metrics["eval_accuracy"],
                "eval_accuracy_per_group": metrics["eval_accuracy_per_group"]}

    return run_stage_command(lambda: section_from_cli(args, "reward", RewardConfig), stage)


if __name__ == "__main__":
    sys.exit(main())
