"""The mechanism experiment's config: its estimators, conditions and presets, and
MechanismConfig (configs/mechanism.yaml, section `mechanism`). A module of its own
because the world (pgrpo.experiments.mechanism_world) and the experiment
(pgrpo.experiments.mechanism) both read it.

    from pgrpo.experiments.mechanism_config import load_config
    cfg = load_config("ci", {"seeds": [0, 1]})
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from pgrpo.core.config import Section, read_params

# estimator name -> the PolicyConfig fields that make it (all else is shared)
ESTIMATORS: dict[str, dict] = {
    "grpo": {"advantage": "grpo", "scale": "group"},
    "grpo_batch": {"advantage": "grpo", "scale": "batch"},
    "grpo_none": {"advantage": "grpo", "scale": "none"},
    "pgrpo": {"advantage": "pgrpo"},
    "pgrpo_random": {"advantage": "pgrpo", "advantage_groups": "random"},
    "pgrpo_scale": {"advantage": "pgrpo_scale"},
}
CONDITIONS = ("clean", "offset", "trap")
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
PRESETS = {"full": ["mechanism.yaml"], "ci": ["mechanism.yaml", "mechanism_ci.yaml"],
           "power": ["mechanism.yaml", "mechanism_power.yaml"]}  # power: issue 25's rerun


class MechanismConfig(Section):
    """The mechanism experiment (configs/mechanism.yaml, section `mechanism`)."""

    # the world
    n_personas: int = Field(4, ge=2, le=7, description="personas (groups); [0] is the majority")
    majority_share: float = Field(0.5, gt=0, lt=1)
    minority_decay: float = Field(0.7, gt=0, description="each minority this times the previous")
    train_users: int = Field(64, ge=4, description="training users per seed")
    prompts_per_user: int = Field(2, ge=1)
    eval_prompts_per_group: int = Field(8, ge=1, description="held-out prompts per group (new users)")
    eval_generations: int = Field(4, ge=1, description="judge samples per held-out prompt")
    # the base policies
    tilts: list[float] = Field([0.5, 0.8, 0.95], min_length=1, description="share of SFT answers in the majority's style")
    sft_examples: int = Field(3000, ge=10)
    sft_epochs: int = Field(3, ge=1)
    sft_lr: float = Field(3e-3, gt=0)
    sft_batch_size: int = Field(32, ge=1)
    style_best_of: int = Field(8, ge=1, description="a style text is the best of this many candidates")
    hidden_size: int = Field(64, ge=8)
    num_layers: int = Field(2, ge=1)
    # the grid
    conditions: list[Literal["clean", "offset", "trap"]] = Field(list(CONDITIONS), min_length=1)
    offset_share: float = Field(0.5, ge=0, lt=1, description="between-prompt share of reward variance (offset)")
    trap_credit: float = Field(0.3, ge=0, description="minority reward per unit of the majority's utility (trap)")
    estimators: list[str] = Field(list(ESTIMATORS), min_length=1)
    reference: str = Field("grpo", description="the estimator every paired difference is taken against")
    seeds: list[int] = Field(list(range(8)), min_length=2, description="paired seeds (>= 2 for an interval)")
    optimizers: list[Literal["adamw", "sgd"]] = Field(["adamw", "sgd"], min_length=1)
    sgd_tilts: list[float] | None = Field(None, description="SGD only at these tilts; None = all")
    sgd_conditions: list[str] | None = Field(None, description="SGD only in these conditions; None = all")
    sgd_estimators: list[str] | None = Field(None, description="SGD only for these estimators; None = all")
    # training (shared by every cell)
    steps: int = Field(30, ge=1)
    prompts_per_step: int = Field(8, ge=1)
    num_generations: int = Field(4, ge=2)
    max_new_tokens: int = Field(40, ge=4)
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate")
    sgd_lr: float = Field(0.3, gt=0, description="plain SGD learning rate (learns about as fast "
                          "as AdamW at lr; measured on tilt 0.8)")
    sgd_max_grad_norm: float = Field(1e6, gt=0, description="SGD clipping; huge = off, so the "
                                     "advantage's scale reaches the update (the point of the control)")
    eval_every: int = Field(5, ge=1)
    # the verdict
    level: float = Field(0.95, gt=0, lt=1)
    margin: float = Field(0.1, ge=0, description="equivalence margin, judge-reward units: about a "
                          "tenth of the judge's SD over template answers, ~5 % of the gap between "
                          "a minority's own style and the majority's")
    # running
    workers: int = Field(2, ge=1, description="cells in parallel processes (1 thread each)")
    work_dir: str = Field("outputs/mechanism", description="policies, cell results (resumable)")
    report_dir: str = Field("reports/mechanism")
    tracking: bool = Field(False, description="one MLflow run per cell")
    experiment: str = Field("pgrpo-mechanism", description="MLflow experiment")


def load_config(preset: str = "full", overrides: dict | None = None) -> MechanismConfig:
    """A preset name (full, ci) or a YAML path; each file's `mechanism` section overlays."""
    files = [CONFIG_DIR / f for f in PRESETS[preset]] if preset in PRESETS else [Path(preset)]
    data: dict = {}
    for f in files:
        data.update(read_params(f).get("mechanism") or {})
    cfg = MechanismConfig(**{**data, **(overrides or {})})
    unknown = sorted((set(cfg.estimators) | set(cfg.sgd_estimators or [])) - set(ESTIMATORS))
    if unknown or cfg.reference not in cfg.estimators:
        raise ValueError(f"estimators {unknown} unknown / reference {cfg.reference!r} not in "
                         f"{cfg.estimators}; known: {sorted(ESTIMATORS)}")
    return cfg
