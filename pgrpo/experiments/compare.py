"""Algorithms x seeds on the same data, so that a difference can be told from noise.

    python -m pgrpo.experiments.compare                          # params.yaml: section `compare` (below)
    python -m pgrpo.experiments.compare --params configs/smoke.yaml --seeds 0,1 --algorithms grpo,pgrpo
    python -m pgrpo.experiments.compare --summarize-only         # re-read reports/compare/seed*/metrics.json
    python -m pgrpo.experiments.compare --params configs/claim_judge.yaml   # issue 25's pre-registered run
    python -m flows.compare                          # the same as a Prefect flow (flows/compare.py)
    python -m pgrpo.experiments.compare_record --params configs/claim.yaml   # seeds restored
                                                     # from files: their MLflow runs again

    # The DVC way: one queued experiment per seed, the extra algorithms added with -S
    dvc exp run --queue -n seed1 -S policy.seed=1 \
        -S '++algorithms.grpo_batch.advantage=grpo' -S '++algorithms.grpo_batch.scale=batch' \
        -S '++algorithms.pgrpo_random.advantage=pgrpo' \
        -S '++algorithms.pgrpo_random.advantage_groups=random'     # ... seed0, seed2 alike
    dvc queue start && dvc queue status                         # wait for them
    python -m pgrpo.experiments.compare --from-dvc-exps seed0,seed1,seed2    # the same summary

What runs: the shared stages (prepare, assign_groups, train_reward) must have run
(`dvc repro`, or the pgrpo-pipeline flow): their outputs are the comparison's data.
Then for every seed s: each algorithm of `compare.algorithms` is trained with
policy.seed = s into models/compare/<name>/seed<s>/<algorithm>/ (its effective params file
next to it), and evaluated with the evaluate section as it stands (same held-out
prompts and sampling seeds for every run) into reports/compare/<name>/seed<s>/. Last, the
summary over seeds (pgrpo.experiments.compare_summary): reports/compare/<name>/summary.json,
report.md and figures/. `compare.name` keeps comparisons apart (another reward, another
preset); empty, the folders are models/compare/ and reports/compare/ themselves. A finished training is not redone (train_policy resumes from its
final checkpoint), nor is an evaluation whose policies, params, data and code are
unchanged (reports/compare/seed<s>/evaluated.json), so an interrupted comparison
continues where it stopped.

Policies of a comparison are tracked in MLflow (metrics, figures) but not logged or
registered as models: the registry holds the pipeline's policies.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, model_validator

from pgrpo.core import paths
from pgrpo.core.config import PolicyConfig, Section, params_with_sets, read_params
from pgrpo.core.io import atomic_outputs, write_json

COMPARE_MODELS = paths.MODELS / "compare"
COMPARE_REPORTS = paths.REPORTS / "compare"
OUTPUTS = ["summary.json", "report.md", "figures/final_rewards.png", "figures/gains_over_base.png",
           "figures/differences.png", "figures/group_rewards.png"]
DEFAULT_ALGORITHMS = {
    "grpo": {"advantage": "grpo"},                                   # per-prompt baseline, group std
    "grpo_batch": {"advantage": "grpo", "scale": "batch"},           # ... batch std (Dr. GRPO-like)
    "pgrpo": {"advantage": "pgrpo"},                                 # the method
    "pgrpo_random": {"advantage": "pgrpo", "advantage_groups": "random"},  # the paper's ablation
}


class CompareConfig(Section):
    """The comparison (params.yaml section `compare`; not a DVC stage's param)."""

    seeds: list[int] = Field([0, 1, 2], min_length=1, description="policy seeds, one run each")
    algorithms: dict[str, dict] = Field(
        default_factory=lambda: dict(DEFAULT_ALGORITHMS),
        description="name -> policy overrides, as the `algorithms` section")
    reference: str = Field("grpo", description="the baseline every algorithm is compared to")
    method: str = Field("pgrpo", description="the algorithm whose claims are checked")
    ablation: str = Field("pgrpo_random", description="the method with random groups")
    level: float = Field(0.95, gt=0, lt=1, description="confidence level of the t-intervals")
    margin: float | None = Field(None, gt=0, description=(
        "equivalence margin in judge reward: a difference whose interval lies inside "
        "(-margin, margin) is 'equivalent'; null = no equivalence verdict"))
    name: str = Field("", pattern=r"^[A-Za-z0-9_.-]*$", description=(
        "subfolder of models/compare and reports/compare for this comparison; '' = none"))

    @model_validator(mode="after")
    def _check(self) -> CompareConfig:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        if not self.algorithms:
            raise ValueError("algorithms is empty: nothing to compare")
        for name, over in self.algorithms.items():
            unknown = sorted(set(over or {}) - set(PolicyConfig.model_fields))
            if unknown:
                raise ValueError(f"algorithms.{name}: unknown policy keys {unknown}")
        if self.reference not in self.algorithms:
            raise ValueError(f"reference {self.reference!r} is not among the algorithms "
                             f"{sorted(self.algorithms)}")
        return self


def load_compare(params_file: str | Path, seeds: list[int] | None = None,
                 algorithms: list[str] | None = None) -> CompareConfig:
    """Section `compare` of the params file (defaults if absent), narrowed to the given
    seeds / algorithms (the reference is always kept)."""
    section = dict(read_params(params_file).get("compare") or {})
    try:
        cfg = CompareConfig(**section)
    except ValidationError as e:
        raise ValueError(f"{params_file}, section 'compare':\n{e}") from None
    update = {}
    if seeds is not None:
        update["seeds"] = list(seeds)
    if algorithms is not None:
        unknown = [a for a in algorithms if a not in cfg.algorithms]
        if unknown:
            raise ValueError(f"algorithms {unknown} are not in section `compare.algorithms` of "
                             f"{params_file} (listed: {sorted(cfg.algorithms)})")
        keep = dict.fromkeys([cfg.reference, *algorithms])
        update["algorithms"] = {a: cfg.algorithms[a] for a in keep}
    return CompareConfig(**{**cfg.model_dump(), **update}) if update else cfg


def reports_root(name: str = "") -> Path:
    """reports/compare/<name>/: the comparison's summary, report and per-seed folders."""
    return COMPARE_REPORTS / name


def seed_dirs(seed: int, name: str = "") -> tuple[Path, Path]:
    """(policy root, reports folder) of one seed's run of comparison `name`."""
    return COMPARE_MODELS / name / f"seed{seed}", reports_root(name) / f"seed{seed}"


def write_seed_params(params_file: str | Path, cfg: CompareConfig, seed: int) -> Path:
    """models/compare/seed<s>/params.yaml: the params file with policy.seed = s, the
    comparison's algorithms and no model logging: what that run's stages read."""
    params = read_params(params_file)
    params["policy"] = {**(params.get("policy") or {}), "seed": seed}
    params["algorithms"] = cfg.algorithms
    params["tracking"] = {**(params.get("tracking") or {}), "log_models": False}
    out = seed_dirs(seed, cfg.name)[0] / "params.yaml"
    with atomic_outputs(out) as (tmp,):
        tmp.write_text(f"# {params_file} for seed {seed} of the comparison (pgrpo/experiments/compare.py)\n"
                       + yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return out


def check_shared_outputs() -> None:
    """What training reads (pgrpo.stages.registry) exists: the comparison trains on the pipeline's."""
    from pgrpo.stages import registry

    missing = [p for p in registry.stage("train_policy").paths("inputs", "any") if not p.exists()]
    if missing:
        last = max((registry.writer_of(p) for p in missing), key=registry.NAMES.index)
        raise FileNotFoundError(f"the comparison trains on the pipeline's data and reward model; "
                                f"missing {[str(p) for p in missing]}: run `dvc repro {last}` "
                                "(or the pgrpo-pipeline flow) first")


def train_seed(params_file: str | Path, cfg: CompareConfig, seed: int, algorithm: str,
               loggers: list | None = None) -> dict:
    from pgrpo.orchestration.pipeline import run_stage

    seed_file = write_seed_params(params_file, cfg, seed)
    return run_stage("train_policy", seed_file, algorithm, loggers=loggers,
                     policy_root=seed_dirs(seed, cfg.name)[0], tags=run_tags(cfg, seed))


def run_tags(cfg: CompareConfig, seed: int) -> dict[str, str]:
    """MLflow tags of a comparison's stage runs: which comparison and seed (the stage run
    tags its algorithm itself), so that the runs of one cell can be found and compared."""
    return {"pgrpo.compare": cfg.name or "compare", "pgrpo.seed": str(seed)}


EVALUATED = "evaluated.json"  # in reports/compare/seed<s>/: what its evaluation depended on


def evaluation_state(seed_file: Path, seed: int, name: str = "") -> dict:
    """What seed s's evaluation depends on (params, data, reward model, its policies, the
    evaluate code) and what it left in reports/compare/seed<s>/ (pgrpo.orchestration.stage_key)."""
    from pgrpo.orchestration.stage_key import result_state
    from pgrpo.stages import registry

    root, reports = seed_dirs(seed, name)
    outputs = [reports / p.relative_to(paths.REPORTS) for p in registry.stage("evaluate").paths("outputs")]
    return result_state("evaluate", seed_file, outputs, policy_root=root)


def evaluate_seed(params_file: str | Path, cfg: CompareConfig, seed: int) -> dict:
    """Evaluate seed s's policies, unless reports/compare/seed<s>/ already holds the
    evaluation of exactly these policies, params, data and code, untouched since (about
    13 minutes a seed on 2 cores saved when an interrupted comparison is rerun)."""
    from pgrpo.orchestration.pipeline import run_stage

    seed_file = write_seed_params(params_file, cfg, seed)
    root, reports = seed_dirs(seed, cfg.name)
    stamp = reports / EVALUATED
    if stamp.is_file() and json.loads(stamp.read_text()) == evaluation_state(seed_file, seed,
                                                                               cfg.name):
        print(f"seed {seed}: {reports} already evaluates these policies with these params "
              "and code; not evaluated again", file=sys.stderr)
        return json.loads((reports / "metrics.json").read_text())
    stamp.unlink(missing_ok=True)  # no stale stamp beside a half-rewritten evaluation
    results = run_stage("evaluate", seed_file, policy_root=root, reports_dir=reports,
                        tags=run_tags(cfg, seed))
    with atomic_outputs(stamp) as (tmp,):
        write_json(tmp, evaluation_state(seed_file, seed, cfg.name))
    return results


# ------------------------------------------------------------------ the summary

def read_seed_metrics(cfg: CompareConfig) -> dict[str, dict]:
    """{seed<s>: reports/compare/seed<s>/metrics.json} for every seed of cfg."""
    out = {}
    for seed in cfg.seeds:
        path = seed_dirs(seed, cfg.name)[1] / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: seed {seed} was not evaluated yet "
                                    "(python -m pgrpo.experiments.compare runs it)")
        out[f"seed{seed}"] = json.loads(path.read_text(encoding="utf-8"))
    return out


def read_dvc_experiments(names: list[str], metrics_file: str = "reports/metrics.json"
                         ) -> dict[str, dict]:
    """{experiment: its metrics.json} from `dvc exp show --json` (run in the repo root)."""
    done = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"dvc exp show failed: {done.stderr.strip()}")
    found: dict[str, dict] = {}
    for baseline in json.loads(done.stdout):
        for exp in [baseline, *(baseline.get("experiments") or [])]:
            for rev in exp.get("revs") or [exp]:
                name = rev.get("name")
                data = ((rev.get("data") or {}).get("metrics") or {}).get(metrics_file) or {}
                if name in names and data.get("data"):
                    found[name] = data["data"]
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"DVC experiments {missing} not found or without {metrics_file} "
                         "(dvc exp show lists the finished ones)")
    return {n: found[n] for n in names}


def write_summary(runs: dict[str, dict], cfg: CompareConfig,
                  reports_dir: Path | None = None, curves_from_seeds: bool = True) -> dict:
    """summary.json, report.md and the figures of OUTPUTS (in reports/compare/<name>/ unless
    reports_dir), all or nothing. The training curves are averaged from
    models/compare/<name>/seed*/ (curves_from_seeds), else left empty."""
    from pgrpo.experiments.compare_summary import gains_over_base, render_comparison, summarize_runs
    from pgrpo.stages.evaluation.plots import (
        plot_differences,
        plot_final_rewards,
        plot_group_rewards,
    )

    reports_dir = reports_root(cfg.name) if reports_dir is None else reports_dir
    summary = summarize_runs(runs, cfg.reference, cfg.method, cfg.ablation, cfg.level, cfg.margin)
    sizes, pct = summary["groups"], round(cfg.level * 100)
    bars = {p: {g: {"reward": e["reward"]["mean"], "ci_low": e["reward"]["ci_low"],
                    "ci_high": e["reward"]["ci_high"]} for g, e in v["groups"].items()}
            for p, v in summary["policies"].items()}
    diffs = {name: {g: d for g, d in v["groups"].items()}
             for name, v in summary["differences"].items()}
    curves = mean_curves(cfg) if curves_from_seeds else {}
    runs_n = summary["n_runs"]
    with atomic_outputs(*(reports_dir / f for f in OUTPUTS)) as (js, md, final, gains, diff,
                                                                 curve):
        write_json(js, summary)
        md.write_text(render_comparison(summary), encoding="utf-8")
        plot_final_rewards(bars, sizes, final, title=f"Per-group judge reward, mean over "
                           f"{runs_n} runs ({pct}% t-interval)")
        plot_differences(gains_over_base(summary), sizes, gains, xlabel="gain over the base "
                         "model in judge reward", title=f"Gain over the base per group (mean over "
                         f"{runs_n} runs, {pct}% t-interval)")
        plot_differences(diffs, sizes, diff, title=f"Paired per-group differences (mean over "
                         f"{runs_n} runs, {pct}% t-interval)")
        # the judge on validation prompts where the runs logged it (policy.judge_every), else
        # the training batch reward, which a policy can raise by hacking a learned reward; the
        # axis names which it drew
        plot_group_rewards(curves, sizes, curve, summary["settings"]["smooth_window"],
                           ylabel_note=", mean over runs")
    return summary


def mean_curves(cfg: CompareConfig) -> dict[str, list[dict]]:
    """Per algorithm, metrics.jsonl-like rows averaged over the seeds that have them: the
    per-group training batch reward and, where the runs logged it, the judge's curve on
    validation prompts (each key over the seeds that have it at that step)."""
    import numpy as np

    from pgrpo.core.metric_log import read_metrics

    out = {}
    for alg in cfg.algorithms:
        files = [seed_dirs(s, cfg.name)[0] / alg / "metrics.jsonl" for s in cfg.seeds]
        rows = [read_metrics(f) for f in files if f.is_file()]
        if not rows:
            continue
        by_step: dict[int, dict[str, list]] = {}
        for run in rows:
            for r in run:
                for k, v in r.items():
                    if k.startswith(("train/reward/", "judge/reward/")) and v is not None:
                        by_step.setdefault(int(r["step"]), {}).setdefault(k, []).append(v)
        out[alg] = [{"step": s, **{k: float(np.mean(v)) for k, v in ks.items()}}
                    for s, ks in sorted(by_step.items())]
    return out


# ------------------------------------------------------------------ the whole comparison

def run_comparison(params_file: str | Path, cfg: CompareConfig) -> dict:
    """Train and evaluate every (seed, algorithm), then summarize: what flows/compare.py
    does as Prefect tasks, here in one process, under one MLflow parent run."""
    from pgrpo.core.config import load_section
    from pgrpo.tracking.mlflow_tracking import TrackingConfig, pipeline_run

    check_shared_outputs()
    track = load_section(params_file, "tracking", TrackingConfig)
    with pipeline_run(track, params_file, "compare"):
        for seed in cfg.seeds:
            for alg in cfg.algorithms:
                train_seed(params_file, cfg, seed, alg)
            evaluate_seed(params_file, cfg, seed)
        return write_summary(read_seed_metrics(cfg), cfg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="compare algorithms over seeds on the same data")
    parser.add_argument("--params", default="params.yaml", help="params file (section compare)")
    parser.add_argument("--seeds", default=None, help="comma-separated; default compare.seeds")
    parser.add_argument("--algorithms", default=None,
                        help="comma-separated keys of compare.algorithms (the reference is kept)")
    parser.add_argument("--summarize-only", action="store_true",
                        help="only rebuild the summary from reports/compare/seed*/metrics.json")
    parser.add_argument("--from-dvc-exps", default=None,
                        help="comma-separated DVC experiment names: summarize their metrics")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override one param, e.g. --set policy.steps=40 (repeatable)")
    args = parser.parse_args(argv)
    try:
        with params_with_sets(args.params, args.sets) as params_file:
            cfg = load_compare(params_file,
                               [int(s) for s in args.seeds.split(",")] if args.seeds else None,
                               args.algorithms.split(",") if args.algorithms else None)
            if args.from_dvc_exps:
                summary = write_summary(read_dvc_experiments(args.from_dvc_exps.split(",")), cfg,
                                        curves_from_seeds=False)
            elif args.summarize_only:
                summary = write_summary(read_seed_metrics(cfg), cfg)
            else:
                summary = run_comparison(params_file, cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for c in summary["claims"]:
        print(f"{c['verdict']:>13}: {c['claim']}")
    print(f"report: {reports_root(cfg.name) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
