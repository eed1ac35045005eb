"""The pipeline's stages, said once: what each one reads, writes and is for.

    from pgrpo.stages.registry import STAGES, stage, plan, writer_of
    stage("train_reward").inputs        # ('data/processed/pairs.parquet', ...)
    plan(["pgrpo", "grpo"])             # [('prepare', None), ..., ('train_policy', 'pgrpo'), ...]
    before("train_policy")              # ['prepare', 'assign_groups', 'train_reward']
    writer_of("models/reward")          # 'train_reward'

Who reads it: dvc.yaml must say the same (tests/stages/test_stage_registry.py compares params,
data deps and outputs, stage by stage); pgrpo.orchestration.pipeline takes the stage names from it;
the Prefect tasks (tasks/stages.py) take the params and inputs of their cache key and
the outputs they check from it, and their artifact descriptions; both flows run `plan`;
the input checks name the stage that writes a missing input with `writer_of`. The code
a stage runs is computed from its imports (pgrpo.orchestration.stage_code), not listed.

Paths are relative to the repo root (pgrpo.core.paths); "{algorithm}" stands for a key of the
params file's `algorithms` section (DVC: ${key} of the foreach).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

P = "data/processed"


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    params: tuple[str, ...]   # params-file entries it reads: a section, or section.key
    inputs: tuple[str, ...]   # files and folders it reads, each written by an earlier stage
    outputs: tuple[str, ...]  # everything it writes, checkpoints aside
    sources: tuple[str, ...] = ()  # raw data it may read that no stage writes (data/raw:
    # immutable, brought by the user); a DVC dep, so new data reruns the stage
    resumable: str | None = None  # its checkpoint folder: kept across reruns, never a result,
    # and not a DVC output (a clone pulled from a remote has none; declared, DVC would retrain)
    per_algorithm: bool = False   # one run per key of `algorithms`

    def paths(self, kind: str, algorithm: str | None = None) -> list[Path]:
        """`inputs` or `outputs` as paths, {algorithm} filled in."""
        if self.per_algorithm and not algorithm:
            raise ValueError(f"stage {self.name} runs once per algorithm: name one")
        return [Path(p.format(algorithm=algorithm)) for p in getattr(self, kind)]

    def params_of(self, algorithm: str | None = None) -> list[str]:
        return [p.format(algorithm=algorithm) for p in self.params]


STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("prepare", "users, prompts, preference pairs and the judge's table, split by user",
          params=("prepare",), inputs=(), sources=("data/raw",),
          outputs=(f"{P}/users.parquet", f"{P}/prompts.parquet", f"{P}/pairs.parquet",
                   f"{P}/judge.parquet", f"{P}/prepare_metrics.json")),
    Stage("assign_groups", "each user's preference group (labels, clusters or random)",
          params=("assign_groups",), inputs=(f"{P}/users.parquet", f"{P}/pairs.parquet"),
          outputs=(f"{P}/groups.parquet", f"{P}/groups_metrics.json")),
    # reward.policy_pairs samples the base policy and labels with the personas' noise
    Stage("train_reward", "the group-conditioned reward model, Bradley-Terry on the pairs",
          params=("reward", "policy.model", "policy.max_new_tokens", "policy.temperature",
                  "policy.system_prompt", "prepare.bt_temperature"),
          inputs=(f"{P}/pairs.parquet", f"{P}/groups.parquet", f"{P}/prompts.parquet",
                  f"{P}/judge.parquet"),
          outputs=("models/reward",)),
    Stage("train_policy", "one policy trained with one advantage estimator",
          params=("policy", "algorithms.{algorithm}"),
          inputs=(f"{P}/prompts.parquet", f"{P}/groups.parquet", f"{P}/judge.parquet",
                  "models/reward"),
          outputs=("models/policy/{algorithm}/model", "models/policy/{algorithm}/metrics.jsonl"),
          resumable="models/policy/{algorithm}/checkpoints", per_algorithm=True),
    Stage("evaluate", "every policy and the base judged on held-out prompts: the report",
          params=("evaluate", "policy", "algorithms"),
          inputs=(f"{P}/prompts.parquet", f"{P}/groups.parquet", f"{P}/judge.parquet",
                  "models/reward", "models/policy"),
          outputs=("reports/report.md", "reports/samples.jsonl", "reports/curves.csv",
                   "reports/metrics.json", "reports/figures/group_rewards.png",
                   "reports/figures/final_rewards.png")),
]}
NAMES = tuple(STAGES)


def stage(name: str) -> Stage:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(NAMES)}")
    return STAGES[name]


def plan(algorithms: list[str]) -> list[tuple[str, str | None]]:
    """(stage, algorithm) in the order a run goes: per-algorithm stages once per algorithm."""
    return [(s.name, a) for s in STAGES.values() for a in (algorithms if s.per_algorithm else [None])]


def before(name: str) -> list[str]:
    """The stages that run before `name` (what a comparison shares with the pipeline)."""
    return list(NAMES[:NAMES.index(stage(name).name)])


def writer_of(path: str | Path) -> str:
    """The stage that writes `path` (or the folder it is in, or a file in it)."""
    path = Path(path).as_posix()
    for s in STAGES.values():
        for out in s.outputs:
            out = out.replace("{algorithm}", "*")
            if Path(path).match(out) or Path(path).match(out + "/*") or \
                    out.startswith(path.rstrip("/") + "/"):
                return s.name
    raise ValueError(f"no stage writes {path}")
