"""Typed configuration: one pydantic model per params.yaml section.

Every field has its default and a comment-like description where it stands;
unknown keys are an error that names the key, so a typo never passes silently.
`cli_overrides` turns `--key value` pairs into a validated config (cleanrl style).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PROMPT_CENTRED = ("grpo", "pgrpo_scale")  # registered estimators that subtract the prompt's mean


class PolicyConfig(Section):
    """P-GRPO / GRPO policy training (params.yaml section `policy`)."""

    # what to train, on what
    model: str = Field("smollm2-135m-instruct", description="built-in name, local folder or hub id")
    prompts: str = Field("builtin", description="'builtin' or a .jsonl/.csv/.parquet prompt table")
    groups: str | None = Field(None, description="user_id -> group table (assign_groups) for a prepared prompt table")
    prompt_split: str | None = Field("train", description="keep prompt rows with this `split`; None keeps all")
    reward: str = Field("length", description="rule reward name (pgrpo.core.rewards), a reward-model "
                        "folder, or 'judge' (the judge table beside `prompts`: controlled experiments)")
    system_prompt: str | None = Field(None, description="system message; None keeps the chat template's")
    # the advantage estimator
    advantage: str = Field("pgrpo", description="estimator name registered in pgrpo.core.advantages "
                           "(pgrpo, grpo, ...)")
    scale: Literal["group", "batch", "none"] = Field("group", description="GRPO std scaling")
    min_count: int = Field(2, ge=2, description="P-GRPO: GRPO fallback until a group has this many rewards")
    half_life: float | None = Field(None, gt=0, description="P-GRPO history decay, in steps; None = all history")
    adv_eps: float = Field(1e-4, ge=0, description="added to the std (as TRL)")
    advantage_groups: Literal["assigned", "random"] = Field(
        "assigned", description="random: shuffled group labels for the advantage (the paper's ablation)")
    # rollouts
    steps: int = Field(8, ge=1, description="optimizer rounds; each samples a fresh batch")
    prompts_per_step: int = Field(8, ge=1, description="prompts per step, over all processes")
    prompt_sampling: Literal["uniform", "balanced"] = Field(
        "balanced", description="uniform: each group in proportion to its prompts; balanced: "
        "the groups take turns (pgrpo.core.prompts.balanced_prompt_indices)")
    num_generations: int = Field(6, ge=1, description="G: completions sampled per prompt")
    max_new_tokens: int = Field(40, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    nan_rewards: Literal["error", "drop"] = Field("error", description="drop: discard NaN-reward samples")
    # the loss
    loss_agg: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field("grpo")
    eps_low: float = Field(0.2, ge=0, lt=1, description="lower clip range of the ratio")
    eps_high: float = Field(0.2, ge=0, description="upper clip range (DAPO suggests 0.28)")
    beta: float = Field(0.0, ge=0, description="k3 KL weight; 0 loads no reference model")
    num_iterations: int = Field(1, ge=1, description="optimizer passes over each rollout batch")
    # optimization
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="adamw; sgd (plain, no momentum) is the control where Adam's "
        "per-parameter scaling could hide an advantage's scale (DESIGN.md section 1)")
    lr: float = Field(2e-5, gt=0, description="learning rate")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("constant")
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(8, ge=1, description="sequences per forward/backward (grad accumulation), "
                                  "in whole prompts: each prompt's G completions go together, the prompt computed once")
    lora_r: int = Field(0, ge=0, description="LoRA rank; 0 trains all weights")
    lora_alpha: int = Field(16, ge=1)
    num_processes: int = Field(1, ge=1, description="processes the train_policy stage trains on "
                               "(accelerate launch; data-parallel: each samples and back-propagates "
                               "prompts_per_step / num_processes prompts; one per GPU, or CPU with gloo)")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    # learning curves from the judge (pgrpo.stages.evaluation.judge_curve): held-out validation prompts
    judge_every: int = Field(0, ge=0, description="judge the policy on validation prompts every k "
                             "steps (and at step 0); 0 = off. Steps-to-90% and AUC then read it")
    judge_prompts_per_group: int = Field(4, ge=1, description="validation prompts per group per point")
    judge_samples_per_prompt: int = Field(2, ge=1, description="completions per prompt per point")
    # bookkeeping
    seed: int = Field(0)
    checkpoint_every: int = Field(5, ge=1, description="steps between checkpoints (and at the end)")
    keep_checkpoints: int = Field(1, ge=1)
    resume: bool = Field(True, description="continue from the last checkpoint in the output folder")

    @field_validator("advantage")
    @classmethod
    def _registered(cls, name: str) -> str:
        from pgrpo.core.advantages import ADVANTAGE_ESTIMATORS  # torch only; no cycle

        if name not in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"unknown advantage estimator {name!r}; registered: "
                             f"{sorted(ADVANTAGE_ESTIMATORS)}")
        return name

    @model_validator(mode="after")
    def _check(self) -> PolicyConfig:
        if self.prompts_per_step % self.num_processes:
            raise ValueError(f"prompts_per_step={self.prompts_per_step} (the global batch) does not "
                             f"split over num_processes={self.num_processes}")
        if self.warmup_steps >= self.steps * self.num_iterations:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be < total optimizer steps")
        # estimators that centre on the prompt's own completions learn nothing from one of them
        if self.num_generations < 2 and self.advantage in PROMPT_CENTRED:
            raise ValueError(f"num_generations=1 with advantage {self.advantage!r}: its per-prompt "
                             "baseline needs at least 2 completions per prompt (every advantage "
                             "would be 0); use num_generations >= 2, or advantage pgrpo")
        return self


def _read_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def merge_params(base: dict[str, Any], overlay: dict[str, Any], where: str = "overlay",
                 _path: str = "") -> dict[str, Any]:
    """`overlay` over `base`: mappings merge key by key, any other value replaces.

    A top-level section that `base` lacks is an error naming it (a misspelt `polcy:`
    would otherwise be ignored); keys inside sections are checked by the config classes.
    """
    out = dict(base)
    for key, value in overlay.items():
        if not _path and key not in base:
            raise ValueError(f"{where}: unknown section {key!r} (sections: {sorted(base)})")
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_params(out[key], value, where, f"{_path}{key}.")
        else:
            out[key] = value
    return out


def read_params(path: str | Path) -> dict[str, Any]:
    """A params file as one mapping of sections.

    A preset names the file it differs from with `extends: <path>` (relative to the
    preset) and lists only its differences: configs/smoke.yaml extends ../params.yaml.
    """
    path = Path(path)
    data = _read_yaml(path)
    base = data.pop("extends", None)
    if base is None:
        return data
    base_path = path.parent / str(base)
    if base_path.resolve() == path.resolve():
        raise ValueError(f"{path}: `extends` names the file itself")
    return merge_params(read_params(base_path), data, where=str(path))


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_sets(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """["policy.lr=1e-5", "algorithms.pgrpo.half_life=10"] -> a nested overlay.

    Values are YAML scalars or flow lists (1e-5, true, null, [0, 1]); each item must be
    `section.key=value` (deeper keys for the `algorithms` entries)."""
    overlay: dict[str, Any] = {}
    for item in items:
        dotted, sep, raw = item.partition("=")
        keys = dotted.strip().split(".")
        if not sep or len(keys) < 2 or not all(keys):
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. policy.lr=1e-5")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({e})") from None
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
        node = overlay
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {dotted} sets a key inside a value")
        node[keys[-1]] = value
    return overlay


def load_params(path: str | Path, sets: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The one loader: a params file, its `extends` chain, then `--set` overrides.

    An unknown section is an error here; unknown keys and bad values are the config
    classes' (pgrpo.orchestration.pipeline.check_params lists them all before any stage runs)."""
    return merge_params(read_params(path), parse_sets(sets), where="--set")


@contextmanager
def params_with_sets(path: str | Path, sets: list[str] | tuple[str, ...] = ()) -> Iterator[Path]:
    """The params file to run on: `path` itself without overrides, else a temporary
    complete copy with them applied (removed afterwards; `path` is never touched)."""
    if not sets:
        yield Path(path)
        return
    tmp = write_temp_params(load_params(path, sets), f"# {path} with --set {' '.join(sets)}\n")
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def write_temp_params(params: dict[str, Any], header: str, prefix: str = "pgrpo-params-") -> Path:
    """A complete params file in the temp folder (the caller removes it): what a run with
    overrides reads, so that params.yaml is never touched."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".yaml")
    os.close(fd)
    return write_params(params, tmp, header)


def write_params(params: dict[str, Any], path: str | Path, header: str = "") -> Path:
    """Write a complete params file atomically (DVC reads only complete ones)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(header)
        yaml.safe_dump(params, f, sort_keys=False)
    tmp.replace(path)
    return path


def load_section(path: str | Path, name: str, schema: type[Section],
                 overrides: dict[str, Any] | None = None, where: str | None = None) -> Section:
    """Validate section `name` of a params file (plus overrides) as `schema`; errors name
    `where` (default: the section)."""
    data = read_params(path).get(name) or {}
    try:
        return schema(**{**data, **(overrides or {})})
    except ValidationError as e:
        raise ValueError(f"{path}, section '{where or name}':\n{e}") from None


def policy_config(path: str | Path, algorithm: str | None = None,
                  overrides: dict[str, Any] | None = None) -> PolicyConfig:
    """Section `policy`, then `algorithms.<algorithm>` over it, then `overrides`.

    Every algorithm trains from the same policy section, so a comparison differs
    only in what its `algorithms` entry says.
    """
    extra: dict[str, Any] = {}
    if algorithm is not None:
        algorithms = read_params(path).get("algorithms") or {}
        if algorithm not in algorithms:
            raise ValueError(f"{path}: algorithm {algorithm!r} is not under `algorithms` "
                             f"(listed: {sorted(algorithms)})")
        extra = algorithms[algorithm] or {}
        unknown = sorted(set(extra) - set(PolicyConfig.model_fields))
        if unknown:
            raise ValueError(f"{path}, algorithms.{algorithm}: unknown keys {unknown}")
    return load_section(path, "policy", PolicyConfig, {**extra, **(overrides or {})},
                        where=f"policy + algorithms.{algorithm}" if algorithm else None)


def add_config_args(parser: argparse.ArgumentParser, model: type[Section],
                    current: Section | None = None, source: str = "") -> None:
    """Add one `--<field> VALUE` option per config field (help from its description).

    Values are read as YAML scalars (1e-5, true, null) and validated by pydantic. The help
    shows `current`'s values (what a run without the flag uses, e.g. from params.yaml)
    where given, else the class defaults.
    """
    for name, field in model.model_fields.items():
        value = getattr(current, name) if current is not None else field.default
        where = f", {source}" if current is not None and source else ""
        parser.add_argument(
            f"--{name}", type=yaml.safe_load, default=argparse.SUPPRESS,
            help=f"{field.description or ''} (default: {value!r}{where})",
        )


def config_overrides(args: argparse.Namespace, model: type[Section]) -> dict[str, Any]:
    """The config fields given on the command line."""
    return {k: v for k, v in vars(args).items() if k in model.model_fields}


def section_from_cli(args: argparse.Namespace, name: str, schema: type[Section]) -> Section:
    """A stage command's config: section `name` of the file `args.params` with the flags of
    add_config_args over it, or the class defaults with those flags where the file does not
    exist. Invalid values raise ValueError naming the file and section (or the flags)."""
    overrides = config_overrides(args, schema)
    if Path(args.params).is_file():
        return load_section(args.params, name, schema, overrides)
    try:
        return schema(**overrides)
    except ValidationError as e:
        raise ValueError(f"command-line flags of section '{name}':\n{e}") from None


def run_stage_command(config, stage) -> int:
    """A stage command's exit code. `config()` reads its config (a ValueError naming what is
    wrong: exit 2, before any work), `stage(cfg)` runs it (bad input or a missing file: exit 1,
    one line naming it, no traceback), and what the stage returns is printed as one JSON line."""
    try:
        cfg = config()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        result = stage(cfg)
    except (ValueError, FileNotFoundError) as e:  # pandera's and our DataValidationError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pgrpo.core.config configs/smoke.yaml --write params.yaml`: a preset, resolved."""
    parser = argparse.ArgumentParser(
        prog="python -m pgrpo.core.config",
        description="Print a params file with its `extends` chain resolved, or write it "
                    "where DVC reads it (dvc.yaml's stages read params.yaml).")
    parser.add_argument("preset", help="params file or preset, e.g. configs/smoke.yaml")
    parser.add_argument("--write", metavar="PATH", help="write the complete file here "
                        "(e.g. params.yaml; `git checkout params.yaml` restores the default)")
    args = parser.parse_args(argv)
    try:
        params = read_params(args.preset)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    header = (f"# Generated by `python -m pgrpo.core.config {args.preset}`: edit the preset, not this "
              "file.\n# `git checkout params.yaml` restores the default.\n")
    if args.write:
        write_params(params, args.write, header)
        print(f"wrote {args.write} from {args.preset}")
    else:
        sys.stdout.write(header + yaml.safe_dump(params, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
