"""The evaluate stage: every trained policy and the base policy on held-out prompts, per group.

    python -m pgrpo.stages.evaluation.evaluate              # params.yaml sections evaluate, policy, algorithms
    python -m pgrpo.stages.evaluation.evaluate --algorithms pgrpo,grpo --prompts_per_group 4 --reports_dir /tmp/r

    from pgrpo.stages.evaluation.evaluate import EvalConfig, evaluate
    results = evaluate(EvalConfig(), PolicyConfig(model="smollm2-135m-instruct"), ["pgrpo", "grpo"])

What it does, per policy (the base model `policy.model`, then models/policy/<alg>/model):
- samples `samples_per_prompt` completions for `prompts_per_group` held-out prompts
  (split == "eval") of every group; the same prompts and the same seeds for every
  policy, so sample j of prompt i is paired across policies (common random numbers);
  system prompt and default max_new_tokens come from the shared `policy` section (an
  algorithm's overrides are not applied: every policy is sampled the same way);
- scores them with the judge training never saw (pgrpo.stages.evaluation.judge) and the learned reward
  model (models/reward); without a judge (file source) the learned reward stands in;
- drift: KL(policy || base) on the policy's own completions, k3 estimator per token
  (exp(d) - d - 1 with d = log p_base - log p_policy, unbiased and >= 0 per sample),
  averaged over completion tokens, both at the sampling temperature;
- capability proxy: mean token log-likelihood of pgrpo/stages/evaluation/neutral.txt (fixed,
  non-personalized English) minus the base model's; negative = forgetting;
- learning efficiency from models/policy/<alg>/metrics.jsonl (train/reward/<group>).

Per group: judge reward with a prompt-clustered bootstrap CI, win rate against the base
(paired, ties 0.5), learned reward, and the learned-vs-judge gap: gain over the base
under the learned reward minus gain under the judge, each in units of that score's SD
over all evaluated samples of the group (pooled over the policies). Near 0: the reward
model's improvement is real; large and positive: the policy pleases the reward model
more than the user (reward hacking).

Outputs (reports_dir, all or nothing): metrics.json, report.md, curves.csv (step,
algorithm, group, reward), samples.jsonl (every scored completion),
figures/group_rewards.png, figures/final_rewards.png. Sampling, KL and the neutral-text
log-likelihood of one policy: pgrpo.stages.evaluation.policy_measures.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pgrpo.core import paths
from pgrpo.core.config import (
    PolicyConfig,
    add_config_args,
    load_section,
    read_params,
    run_stage_command,
    section_from_cli,
)
from pgrpo.stages.evaluation import eval_cache
from pgrpo.stages.evaluation.eval_config import EvalConfig
from pgrpo.core.io import atomic_outputs, read_table, write_json
from pgrpo.stages.evaluation.judge import judge_kind, judge_scores
from pgrpo.stages.evaluation.curves import (
    JUDGE_CURVE_KEY,
    curve_key,
    learning_efficiency,
    reward_curve,
    steps_key,
)
from pgrpo.stages.evaluation.metrics import helps_users, majority_group, policy_summaries
from pgrpo.core.models import load_policy, resolve_device
from pgrpo.core.prompts import PromptSet, load_prompts
from pgrpo.stages.evaluation.reward_check import reward_signal_check
from pgrpo.stages.evaluation.reward_check import warnings as reward_warnings
from pgrpo.stages.evaluation.policy_measures import neutral_loglik, read_neutral, run_policy

OUTPUTS = ["metrics.json", "report.md", "curves.csv", "samples.jsonl",
           "figures/group_rewards.png", "figures/final_rewards.png"]


# ------------------------------------------------------------------ inputs

def _need(path: Path, what: str, default: Path, algorithm: str | None = None) -> Path:
    """`path` exists, else an error naming the stage that writes it (pgrpo.stages.registry, by the
    default path it has in the pipeline)."""
    if not path.exists():
        from pgrpo.stages.registry import writer_of  # leaf module: only the stage table

        stage = writer_of(default) + (f" --algorithm {algorithm}" if algorithm else "")
        raise FileNotFoundError(f"{path} does not exist: {what}, written by the "
                                f"{stage.split()[0]} stage (python -m pgrpo.orchestration.pipeline {stage})")
    return path


def check_inputs(processed_dir: Path, reward_dir: Path, policy_root: Path,
                 algorithms: list[str]) -> None:
    """Every input exists, before anything is loaded or written."""
    if not algorithms:
        raise ValueError("no algorithms to evaluate (params.yaml section `algorithms` is empty)")
    for name in ("prompts.parquet", "judge.parquet", "groups.parquet"):
        _need(processed_dir / name, "an input table", paths.PROCESSED / name)
    _need(reward_dir / "config.json", "the learned reward model", paths.MODELS / "reward")
    for alg in algorithms:
        policy = paths.policy_dir(alg)
        _need(policy_root / alg / "model" / "config.json", f"the policy of {alg!r}",
              policy / "model", alg)
        _need(policy_root / alg / "metrics.jsonl", f"the training metrics of {alg!r}",
              policy / "metrics.jsonl", alg)


def eval_role(prompt_id: str) -> str:
    """'val' for about a third of the held-out prompts, else 'test': a fixed hash of the id, so
    evaluate and the judge curves during training (pgrpo.stages.evaluation.judge_curve) agree on it without
    sharing any setting, and a prompt never changes role when other settings change."""
    digest = hashlib.sha256(f"eval-role:{prompt_id}".encode()).digest()
    return "val" if digest[0] % 3 == 0 else "test"


def eval_prompts(prompts_path: Path, groups_path: Path, per_group: int, seed: int,
                 role: str = "test") -> PromptSet:
    """Up to `per_group` held-out prompts of every group whose eval_role is `role`: a seeded
    draw per group, fixed order."""
    ps = load_prompts(str(prompts_path), seed, groups_path, split="eval")
    order = np.argsort([m["prompt_id"] for m in ps.metadata], kind="stable")  # not file order
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for gid in range(len(ps.group_names)):
        rows = [int(i) for i in order if int(ps.group_ids[i]) == gid
                and eval_role(ps.metadata[i]["prompt_id"]) == role]
        if len(rows) > per_group:
            rows = sorted(rng.choice(rows, per_group, replace=False).tolist(), key=rows.index)
        chosen += rows
    return ps.subset(chosen)


# ------------------------------------------------------------------ the stage

def val_mean_reward(model, tokenizer, prompts: PromptSet, cfg: EvalConfig, policy: PolicyConfig,
                    judge, reward_fn) -> float:
    """Unweighted mean over groups of the judge's (else the learned) reward on validation prompts:
    what picks the champion, kept apart from every number of the report."""
    g = cfg.val_samples_per_prompt
    completions, _ = run_policy(model, tokenizer, None, prompts,
                                cfg.model_copy(update={"samples_per_prompt": g}), policy)
    group_ids = prompts.group_ids.repeat_interleave(g)
    if judge_kind(judge):
        scores = judge_scores(judge, [m["user_id"] for m in prompts.metadata for _ in range(g)],
                              completions)
    else:
        scores = reward_fn([p for p in prompts.prompts for _ in range(g)], completions, group_ids,
                           None).double().numpy()
    return float(np.mean([scores[group_ids.numpy() == k].mean()
                          for k in torch.unique(group_ids).tolist()]))


def measure_policy(model, tok, base_model, prompts: PromptSet, cfg: EvalConfig,
                   policy: PolicyConfig, judge, reward_fn, lines: list[str],
                   val_prompts: PromptSet | None) -> dict:
    """One policy's completions, judge and learned rewards, KL to `base_model` (None: this is
    the base), neutral-text likelihood and validation reward, as plain lists and numbers."""
    g = cfg.samples_per_prompt
    group_ids = prompts.group_ids.repeat_interleave(g)
    completions, kl = run_policy(model, tok, base_model, prompts, cfg, policy)
    learned = reward_fn([p for p in prompts.prompts for _ in range(g)], completions, group_ids,
                        None).double().numpy()
    judged = judge_scores(judge, [m["user_id"] for m in prompts.metadata for _ in range(g)],
                          completions) if judge_kind(judge) else None
    out = {"completions": completions, "learned": learned.tolist(),
           "judge": None if judged is None else np.asarray(judged, dtype=float).tolist(),
           "kl_to_base": 0.0 if base_model is None else kl,
           "neutral_loglik": neutral_loglik(model, tok, lines, cfg.batch_size)}
    if val_prompts is not None:
        out["val_mean_reward"] = val_mean_reward(model, tok, val_prompts, cfg, policy, judge,
                                                 reward_fn)
    return out


def score_policies(cfg: EvalConfig, policy: PolicyConfig, names: list[str], policy_root: Path,
                   prompts: PromptSet, judge, reward_fn, val_prompts: PromptSet | None = None,
                   base_key: str | None = None) -> tuple[dict, dict, list[dict]]:
    """Sample and score every policy ("base" = policy.model). With a `base_key`, each
    policy's measurement is read from the evaluation cache where it holds one and stored
    there when made (pgrpo.stages.evaluation.eval_cache): a rerun after a stop measures
    only the policies it had not reached. Returns
    (scores per policy for pgrpo.stages.evaluation.metrics.policy_summaries,
    {policy: kl_to_base, neutral_loglik[, val_mean_reward]}, sample rows)."""
    g, lines = cfg.samples_per_prompt, read_neutral(cfg.neutral_text)
    device = resolve_device(cfg.device)
    users = [m["user_id"] for m in prompts.metadata for _ in range(g)]
    group_ids = prompts.group_ids.repeat_interleave(g)
    base_model, base_tok = load_policy(policy.model)
    base_model.to(device).eval()
    scores, extra, samples = {}, {}, []
    for name in tqdm(names, desc="evaluate policies", dynamic_ncols=True):
        if name == "base":
            m = eval_cache.load(base_key) or eval_cache.save(base_key, measure_policy(
                base_model, base_tok, None, prompts, cfg, policy, judge, reward_fn, lines,
                val_prompts))
        else:
            key = eval_cache.policy_key(base_key, policy_root / name / "model")
            m = eval_cache.load(key)
            if m is None:
                model, tok = load_policy(str(policy_root / name / "model"))
                model.to(device).eval()
                m = eval_cache.save(key, measure_policy(model, tok, base_model, prompts, cfg,
                                                        policy, judge, reward_fn, lines,
                                                        val_prompts))
                del model
        learned = np.asarray(m["learned"], dtype=float)
        judged = None if m["judge"] is None else np.asarray(m["judge"], dtype=float)
        scores[name] = {"judge": judged, "learned": learned}
        extra[name] = {k: m[k] for k in ("kl_to_base", "neutral_loglik", "val_mean_reward") if k in m}
        samples += [{"policy": name, "prompt_id": prompts.metadata[i // g]["prompt_id"],
                     "user_id": users[i], "group": prompts.group_names[int(group_ids[i])],
                     "sample": i % g, "completion": c, "learned": float(learned[i]),
                     "judge": None if judged is None else float(judged[i])}
                    for i, c in enumerate(m["completions"])]
    return scores, extra, samples


def evaluate(cfg: EvalConfig, policy: PolicyConfig, algorithms: list[str],
             processed_dir: str | Path = paths.PROCESSED,
             reward_dir: str | Path = paths.MODELS / "reward",
             policy_root: str | Path = paths.MODELS / "policy",
             reports_dir: str | Path = paths.REPORTS, fingerprint: dict | None = None) -> dict:
    """Evaluate the base policy and every algorithm's; write OUTPUTS; return metrics.json's dict.
    `fingerprint` (the hashes of the code this runs): with it, each policy's evaluation (the
    base's too) is computed once and reused while its inputs, settings and code are
    unchanged (pgrpo.stages.evaluation.eval_cache); without it, computed every time."""
    from pgrpo.stages.reward.reward_model import GroupRewardFn
    from pgrpo.core.metric_log import read_metrics

    processed_dir, reward_dir = Path(processed_dir), Path(reward_dir)
    policy_root, reports_dir = Path(policy_root), Path(reports_dir)
    algorithms = list(dict.fromkeys(algorithms))
    if "base" in algorithms:
        raise ValueError("'base' names the untrained model in the report; rename that algorithm")
    check_inputs(processed_dir, reward_dir, policy_root, algorithms)
    groups_path = processed_dir / "groups.parquet"
    counts = read_table(groups_path)["group"].astype(str).value_counts()
    # Largest group first (the majority), as groups are named and reported everywhere.
    sizes = {g: int(counts[g]) for g in sorted(counts.index, key=lambda g: (-counts[g], g))}
    prompts = eval_prompts(processed_dir / "prompts.parquet", groups_path, cfg.prompts_per_group,
                           cfg.seed, role=cfg.report_prompts)
    judge = read_table(processed_dir / "judge.parquet")
    reward_fn = GroupRewardFn(reward_dir, prompts.group_names, resolve_device(cfg.device),
                              batch_size=cfg.batch_size)
    val_prompts = eval_prompts(processed_dir / "prompts.parquet", groups_path,
                               cfg.val_prompts_per_group, cfg.seed, role="val") \
        if cfg.val_prompts_per_group else None
    key = eval_cache.base_key(cfg, policy, processed_dir, reward_dir, fingerprint)
    scores, extra, samples = score_policies(cfg, policy, ["base", *algorithms], policy_root,
                                            prompts, judge, reward_fn, val_prompts, key)

    group_of = np.array([s["group"] for s in samples if s["policy"] == "base"])
    clusters = np.repeat(np.arange(len(prompts)), cfg.samples_per_prompt)
    summary = policy_summaries(scores, group_of, clusters, sizes, cfg.n_boot, cfg.ci_level,
                               cfg.seed)
    curves = {alg: read_metrics(policy_root / alg / "metrics.jsonl") for alg in algorithms}
    for name, s in summary.items():
        s.update(extra[name], neutral_loglik_delta=extra[name]["neutral_loglik"]
                 - extra["base"]["neutral_loglik"])
        if name != "base":
            eff = learning_efficiency(curves[name], list(sizes), cfg.convergence_fraction,
                                      cfg.smooth_window, curve_key(curves[name]))
            for grp, r in s["groups"].items():
                r.update(eff[grp])
    for name in algorithms:
        summary[name]["helps"] = helps_users(summary[name], summary["base"], cfg.kl_limit)
    kind = judge_kind(judge)
    check = signal_check(scores["base"], prompts, clusters, policy.reward, cfg.samples_per_prompt)
    for line in reward_warnings(check, policy.reward):
        print(f"WARNING: {line}", file=sys.stderr)
    by = "val_mean_reward" if val_prompts is not None else "mean_reward"
    results = {
        "judge": kind or "none",
        "training_reward": policy.reward,
        "reward_check": check,
        # written by train_reward (pgrpo.stages.reward.group_checks); absent from older models
        "group_checks": json.loads((reward_dir / "metrics.json").read_text()).get("group_checks")
        if (reward_dir / "metrics.json").is_file() else None,
        "champion": max(algorithms, key=lambda a: (summary[a][by], a)) if algorithms else None,
        "champion_by": by,
        "val_prompts": {} if val_prompts is None else {
            grp: int((val_prompts.group_ids == i).sum())
            for i, grp in enumerate(val_prompts.group_names)},
        "groups": sizes, "majority_group": majority_group(sizes),
        "eval_prompts": {grp: int((prompts.group_ids == i).sum())
                         for i, grp in enumerate(prompts.group_names)},
        "curve_source": {alg: "judge" if curve_key(rows) == JUDGE_CURVE_KEY else "training reward"
                         for alg, rows in curves.items()},
        "settings": {**cfg.model_dump(), "model": policy.model,
                     "max_new_tokens": cfg.max_new_tokens or policy.max_new_tokens,
                     "steps_key": steps_key(cfg.convergence_fraction)},
        "base": summary.pop("base"), "algorithms": summary,
    }
    write_outputs(reports_dir, results, curves, samples, cfg.smooth_window)
    return results


def signal_check(base_scores: dict, prompts: PromptSet, clusters: np.ndarray, training_reward: str,
                 g: int) -> dict | None:
    """The reward-signal check (pgrpo.stages.evaluation.reward_check) on the base policy's test samples: the
    training reward (the judge itself when policy.reward is 'judge', else the learned reward
    model) against the judge, for every registered estimator. None without a judge."""
    from pgrpo.core.advantages import ADVANTAGE_ESTIMATORS

    if base_scores["judge"] is None:
        return None
    train = base_scores["judge"] if training_reward == "judge" else base_scores["learned"]
    return reward_signal_check(train, base_scores["judge"], clusters,
                               prompts.group_ids.repeat_interleave(g).numpy(),
                               sorted(ADVANTAGE_ESTIMATORS), prompts.group_names)


def write_outputs(reports_dir: Path, results: dict, curves: dict[str, list[dict]],
                  samples: list[dict], smooth_window: int) -> None:
    """Every file of OUTPUTS, all or nothing."""
    from pgrpo.stages.evaluation.plots import plot_final_rewards, plot_group_rewards
    from pgrpo.stages.evaluation.report import render_report

    sizes = results["groups"]
    with atomic_outputs(*(reports_dir / name for name in OUTPUTS)) as (m, r, c, s, g_png, f_png):
        write_json(m, results)
        r.write_text(render_report(results), encoding="utf-8")
        write_curves(c, curves, list(sizes))
        with s.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in samples)
        plot_group_rewards(curves, sizes, g_png, smooth_window)
        bars = {"base": results["base"]["groups"],
                **{a: v["groups"] for a, v in results["algorithms"].items()}}
        score = "judge reward" if results["judge"] != "none" else "learned reward"
        level = round(results["settings"]["ci_level"] * 100)
        plot_final_rewards(bars, sizes, f_png, ylabel=score, title="Per-group reward of the final "
                           f"policies ({level}% bootstrap CI over prompts)")


def write_curves(path: Path, curves: dict[str, list[dict]], groups: list[str]) -> None:
    """Tidy per-step rewards for `dvc plots`: step, algorithm, group, reward, source. Per
    algorithm the curve the efficiency numbers read: the judge's on validation prompts when
    the run logged it (source "judge"), else the training batch reward ("train")."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["step", "algorithm", "group", "reward", "source"])
        for alg, rows in curves.items():
            key = curve_key(rows)
            source = "judge" if key == JUDGE_CURVE_KEY else "train"
            for grp in groups:
                for step, value in zip(*reward_curve(rows, grp, key)):
                    w.writerow([int(step), alg, grp, repr(value), source])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="evaluate trained policies against the base model",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--params", default="params.yaml",
                        help="params file (sections evaluate, policy, algorithms)")
    parser.add_argument("--algorithms", default=None,
                        help="comma-separated; default: the keys of the `algorithms` section")
    parser.add_argument("--processed_dir", default=str(paths.PROCESSED))
    parser.add_argument("--reward_dir", default=str(paths.MODELS / "reward"))
    parser.add_argument("--policy_root", default=str(paths.MODELS / "policy"))
    parser.add_argument("--reports_dir", default=str(paths.REPORTS))
    add_config_args(parser, EvalConfig)
    args = parser.parse_args(argv)

    def config() -> tuple[EvalConfig, PolicyConfig, list[str]]:
        cfg = section_from_cli(args, "evaluate", EvalConfig)
        have_params = Path(args.params).is_file()
        policy = load_section(args.params, "policy", PolicyConfig) if have_params else PolicyConfig()
        listed = list(read_params(args.params).get("algorithms") or {}) if have_params else []
        return cfg, policy, args.algorithms.split(",") if args.algorithms else listed

    def stage(config: tuple[EvalConfig, PolicyConfig, list[str]]) -> dict:
        results = evaluate(*config, args.processed_dir, args.reward_dir, args.policy_root,
                           args.reports_dir)
        return {a: {"mean_reward": r["mean_reward"], "worst_group": r["worst_group"]}
                for a, r in results["algorithms"].items()}

    return run_stage_command(config, stage)


if __name__ == "__main__":
    sys.exit(main())
