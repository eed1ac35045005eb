"""Issue 13's mechanism experiment: does P-GRPO learn faster and better than GRPO, and why?

    python -m flows.mechanism                     # the full grid (configs/mechanism.yaml)
    python -m flows.mechanism --preset ci         # the ~2-minute version
    python -m pgrpo.experiments.mechanism --preset ci         # the same without Prefect

A controlled world where the reward is the judge itself (persona utility, nothing learned,
nothing to hack), so only the advantage estimator, the base policy's lean and the optimizer
vary. Grid: tilt x condition x estimator x seed (x optimizer); a cell trains one policy with
the project's Trainer (`train_step()` in our loop) and evaluates it with the judge on
held-out prompts every `eval_every` steps. pgrpo.experiments.mechanism_report turns the cells into
paired intervals, verdicts, a markdown report and figures; pgrpo.experiments.mechanism_world builds the
world (users, prompts, word tokenizer) and the tilted base policies.

The policy. A 2-layer Llama built from a config with a *word-level* tokenizer over the
synthetic task's vocabulary (~600 words: templates, songs, profiles). Why not the byte-level
tiny model: a medium answer is ~30 words, ~40 word tokens but ~180 bytes, and a byte model
needs far more pre-training before its samples contain words the judge can read. With words
the judge's features (length, emoji, list lines, formal / casual keywords, genres) are
legible after seconds of SFT, and generation is ~5x shorter.

The base policies. SFT on (user prompt, answer) pairs whose answer ignores the user: with
probability `tilt` it is in the majority persona's style, else in a random minority's style.
"Style of persona p" = the best of `style_best_of` template candidates under p's utility
(pgrpo.stages.data.synthetic.candidate), among those that fit `max_new_tokens`. So RL has to learn
to read the profile, and at high tilt a minority user's own style is rare in a group of G.

Conditions (the training reward; the judge that evaluates is always the clean utility):
    clean    reward = utility of the user's persona
    offset   + a fixed per-prompt offset, N(0, sd_b): the level differences a Bradley-Terry
             reward model leaves between prompts. sd_b = sd_w * sqrt(s / (1 - s)) with sd_w the
             base policy's pooled within-prompt reward SD and s = `offset_share`, so s is the
             between-prompt share of reward variance within a group (0.5: sd_b = sd_w)
    trap     partial credit: a minority user's reward gets + trap_credit * max(0, majority's
             utility), so the majority's style pays a little and its small contrasts are what
             GRPO blows up to unit size (DESIGN.md section 1, "What the identity implies")
Estimators: ESTIMATORS (pgrpo.experiments.mechanism_config) (grpo with scale group / batch / none, pgrpo, pgrpo with random
group labels, pgrpo_scale). Pairing: a seed fixes the prompts (train and held-out), the
offsets, the training sampling seeds and the evaluation sampling seed for every estimator.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from pgrpo.experiments.mechanism_config import ESTIMATORS, MechanismConfig
from pgrpo.experiments.mechanism_world import _hash, make_prompts, personas
from pgrpo.stages.data.personas import Persona, utility

# --------------------------------------------------------------------------- reward and judge

class ConditionReward:
    """The training reward of a condition (a pgrpo.core.rewards.RewardFn); see module docstring."""

    def __init__(self, ps: list[Persona], condition: str, offset_sd: float, trap_credit: float):
        self.ps, self.condition = ps, condition
        self.offset_sd, self.trap_credit = offset_sd, trap_credit

    def __call__(self, prompts, completions, group_ids, metadata):
        import torch

        out = []
        for text, g, meta in zip(completions, group_ids.tolist(), metadata, strict=True):
            r = utility(self.ps[g], text)
            if self.condition == "offset":
                r += self.offset_sd * meta["offset_z"]
            elif self.condition == "trap" and g != 0:
                r += self.trap_credit * max(0.0, utility(self.ps[0], text))
            out.append(r)
        return torch.tensor(out, dtype=torch.float32)


def judge(model, tok, heldout, ps: list[Persona], cfg: MechanismConfig, seed: int):
    """Mean clean utility per group on the held-out prompts, and the completions.

    The sampling seed depends on the cell's seed only: every estimator (and every
    evaluation step) draws with the same random numbers, so differences are paired.
    """
    import torch

    from pgrpo.core.rollout import generate
    from pgrpo.core.rollout import derived_seed

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, 7))
        ro = generate(model, tok, heldout.prompts, cfg.eval_generations,
                      max_new_tokens=cfg.max_new_tokens)
    groups = heldout.group_ids.repeat_interleave(cfg.eval_generations).tolist()
    u = [utility(ps[g], t) for g, t in zip(groups, ro.completions)]
    means = {p.name: sum(x for x, g in zip(u, groups) if g == k) / max(groups.count(k), 1)
             for k, p in enumerate(ps)}
    return means, ro.completions


def calibrate(cfg: MechanismConfig, policy_dir: Path) -> dict:
    """The base policy's pooled within-prompt reward SD (sets the offset) and style shares."""
    import torch

    from pgrpo.core.models import load_policy
    from pgrpo.core.rollout import generate

    path = policy_dir / "calibration.json"
    if path.exists():
        return json.loads(path.read_text())
    model, tok = load_policy(str(policy_dir))
    ps = personas(cfg)
    train, _ = make_prompts(cfg, seed=10_000)  # a seed no cell uses
    torch.manual_seed(0)
    g = cfg.num_generations
    ro = generate(model, tok, train.prompts, g, max_new_tokens=cfg.max_new_tokens)
    groups = train.group_ids.repeat_interleave(g).tolist()
    u = [utility(ps[k], t) for k, t in zip(groups, ro.completions)]
    within = []
    for i in range(len(train)):
        chunk = u[i * g:(i + 1) * g]
        m = sum(chunk) / g
        within.append(sum((x - m) ** 2 for x in chunk) / (g - 1))
    sd_w = math.sqrt(sum(within) / len(within))
    best = [max(range(len(ps)), key=lambda k: utility(ps[k], t)) for t in ro.completions]
    out = {"within_prompt_sd": sd_w,
           "offset_sd": sd_w * math.sqrt(cfg.offset_share / (1 - cfg.offset_share)),
           "style_share": {p.name: best.count(k) / len(best) for k, p in enumerate(ps)},
           "mean_words": sum(len(t.split()) for t in ro.completions) / len(ro.completions),
           "example": ro.completions[:3]}
    path.write_text(json.dumps(out, indent=2))
    return out


# --------------------------------------------------------------------------- one cell

@dataclass(frozen=True)
class Cell:
    optimizer: str
    condition: str
    tilt: float
    estimator: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.optimizer}/{self.condition}/tilt{self.tilt}/{self.estimator}/seed{self.seed}"


def cells(cfg: MechanismConfig) -> list[Cell]:
    """The grid, seeds innermost-but-one so that early results already pair up."""
    out = []
    for opt in cfg.optimizers:
        for tilt in cfg.tilts:
            if opt == "sgd" and cfg.sgd_tilts is not None and tilt not in cfg.sgd_tilts:
                continue
            for cond in cfg.conditions:
                if opt == "sgd" and cfg.sgd_conditions is not None and cond not in cfg.sgd_conditions:
                    continue
                ests = [e for e in cfg.estimators if opt != "sgd" or cfg.sgd_estimators is None
                        or e in cfg.sgd_estimators]
                out += [Cell(opt, cond, tilt, est, seed) for seed in cfg.seeds for est in ests]
    return out


def cell_key(cfg: MechanismConfig, cell: Cell, policy_overrides: dict | None = None) -> str:
    """What a cell's result depends on: a finished cell with the same key is reused."""
    fields = ("n_personas", "majority_share", "minority_decay", "train_users", "prompts_per_user",
              "eval_prompts_per_group", "eval_generations", "sft_examples", "sft_epochs", "sft_lr",
              "sft_batch_size", "style_best_of", "hidden_size", "num_layers", "offset_share",
              "trap_credit", "steps", "prompts_per_step", "num_generations", "max_new_tokens",
              "lr", "sgd_lr", "sgd_max_grad_norm", "eval_every")
    return _hash({k: getattr(cfg, k) for k in fields} | asdict(cell)
                 | ({"policy_overrides": policy_overrides} if policy_overrides else {}))


def cell_path(cfg: MechanismConfig, cell: Cell) -> Path:
    return Path(cfg.work_dir) / "cells" / f"{cell.name}.json"


def policy_config(cfg: MechanismConfig, cell: Cell, policy_dir: Path, overrides: dict | None = None):
    from pgrpo.core.config import PolicyConfig

    sgd = cell.optimizer == "sgd"
    fields = dict(
        model=str(policy_dir), seed=cell.seed, steps=cfg.steps, prompts_per_step=cfg.prompts_per_step,
        num_generations=cfg.num_generations, max_new_tokens=cfg.max_new_tokens,
        micro_batch_size=cfg.prompts_per_step * cfg.num_generations, optimizer=cell.optimizer,
        lr=cfg.sgd_lr if sgd else cfg.lr, max_grad_norm=cfg.sgd_max_grad_norm if sgd else 1.0,
        precision="fp32", resume=False, checkpoint_every=cfg.steps,
        prompt_sampling="uniform",  # the paper's regime: the majority fills most of each batch
        **ESTIMATORS[cell.estimator])
    return PolicyConfig(**{**fields, **(overrides or {})})


def run_cell(cfg: MechanismConfig, cell: Cell, policy_dir: str | Path,
             policy_overrides: dict | None = None) -> dict:
    """Train one cell with the Trainer, judge every eval_every steps; writes and returns the
    result. `policy_overrides`: PolicyConfig fields over the cell's (e.g. LoRA), in its key."""
    import torch

    from pgrpo.core.trainer import Trainer

    torch.set_num_threads(1)  # cells run in parallel processes, one core each
    t0 = time.perf_counter()
    policy_dir = Path(policy_dir)
    ps = personas(cfg)
    train, heldout = make_prompts(cfg, cell.seed)
    calib = calibrate(cfg, policy_dir)
    reward = ConditionReward(ps, cell.condition, calib["offset_sd"], cfg.trap_credit)
    out_dir = Path(cfg.work_dir) / "runs" / cell.name
    trainer = Trainer(policy_config(cfg, cell, policy_dir, policy_overrides), out_dir, prompts=train,
                      reward_fn=reward)
    model = trainer.acc.unwrap_model(trainer.model)
    curve = {p.name: [] for p in ps}
    train_curve: dict[str, list] = {p.name: [] for p in ps}
    eval_steps = sorted({0, cfg.steps, *range(cfg.eval_every, cfg.steps, cfg.eval_every)})
    for step in range(cfg.steps + 1):
        if step in eval_steps:
            means, _ = judge(model, trainer.tokenizer, heldout, ps, cfg, cell.seed)
            for g, v in means.items():
                curve[g].append(v)
        if step == cfg.steps:
            break
        metrics = trainer.train_step()
        trainer.logger.log_metrics(metrics, trainer.step)
        for g, values in train_curve.items():  # a group absent from this step's batch: None
            values.append(metrics.get(f"train/reward/{g}"))
    trainer.logger.close()
    result = {"cell": asdict(cell), "key": cell_key(cfg, cell, policy_overrides), "eval_steps": eval_steps,
              "judge": curve, "train_reward": train_curve, "offset_sd": calib["offset_sd"],
              "seconds": time.perf_counter() - t0}
    path = cell_path(cfg, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)
    return result


def cached_result(cfg: MechanismConfig, cell: Cell) -> dict | None:
    path = cell_path(cfg, cell)
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result if result.get("key") == cell_key(cfg, cell) else None
