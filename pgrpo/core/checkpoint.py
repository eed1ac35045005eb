"""Training checkpoints: everything needed to continue as if never stopped.

    <output_dir>/checkpoints/step_000010/
        model.safetensors     weights (shared tensors deduplicated)
        optimizer.pt          optimizer state   (torch.load weights_only=True)
        scheduler.pt          LR scheduler state
        rng.pt                python and torch RNG states (sampling is also reseeded
                              from (seed, step, rank) every step, so every process
                              resumes on the same random stream either way)
        group_stats.pt        P-GRPO running moments per preference group
        trainer_state.json    step, the config and the fingerprint that produced it
        metrics.jsonl         the run's metrics up to this step (DVC deletes the run's own
                              copy before it reruns a stage; a resume restores it from here)

A checkpoint is written to a temporary folder and renamed, so a run killed
mid-write leaves the previous checkpoint as the latest complete one. It is resumed only
under the fingerprint it was saved with (run_fingerprint: the config but how long the run
goes and how it checkpoints, the bytes of the files it read, the code); fingerprint_changes
names what differs when it is not.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import safetensors.torch
import torch

from pgrpo.core.advantages import GroupRewardStats
from pgrpo.core.hashing import path_sha256

if TYPE_CHECKING:
    from pgrpo.core.config import PolicyConfig

PREFIX = "step_"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Finished checkpoints, oldest first (a `.tmp` folder is a write that died)."""
    root = checkpoint_root(output_dir)
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and p.name.startswith(PREFIX) and not p.name.endswith(".tmp"))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    done = complete_checkpoints(output_dir)
    return done[-1] if done else None


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    model,
    optimizer,
    scheduler,
    stats: GroupRewardStats,
    trainer_state: dict,
    keep: int = 2,
    files: tuple[Path, ...] = (),
) -> Path:
    """Write checkpoint `step` atomically and keep only the newest `keep`; `files` (e.g. the
    metrics so far) are copied in, so they survive whatever deletes the run's own copies."""
    root = checkpoint_root(output_dir)
    final = root / f"{PREFIX}{step:06d}"
    tmp = root / f"{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    torch.save(stats.state_dict(), tmp / "group_stats.pt")
    for f in files:
        if Path(f).is_file():
            shutil.copy2(f, tmp / Path(f).name)
    (tmp / "trainer_state.json").write_text(json.dumps({**trainer_state, "step": step}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in complete_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old)
    return final


def read_trainer_state(path: Path) -> dict:
    """A checkpoint's step, config and fingerprint, without loading any tensor."""
    return json.loads((path / "trainer_state.json").read_text())


def load_checkpoint(path: Path, model, optimizer, scheduler, stats: GroupRewardStats) -> dict:
    """Restore states in place from `path`; returns trainer_state (with 'step')."""
    device = next(model.parameters()).device
    missing, unexpected = safetensors.torch.load_model(model, str(path / "model.safetensors"),
                                                       device=str(device))
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {path} does not fit the model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    stats.load_state_dict(torch.load(path / "group_stats.pt", weights_only=True))
    set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return json.loads((path / "trainer_state.json").read_text())


# Fields a resumed run may change: how long it runs and how it checkpoints.
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "keep_checkpoints", "resume", "judge_every",
                     "judge_prompts_per_group", "judge_samples_per_prompt"}


def run_fingerprint(cfg: PolicyConfig, extra: dict | None = None) -> dict:
    """What a checkpoint may be resumed under: the config (but the RESUMABLE_CHANGES), the
    content of the files it names (model, prompts, groups, reward model) and `extra` (the
    pipeline adds the hashes of the code the stage runs)."""
    config = {k: v for k, v in cfg.model_dump().items() if k not in RESUMABLE_CHANGES}
    files = {name: path_sha256(p) for name in ("model", "prompts", "groups", "reward")
             if (p := getattr(cfg, name)) and Path(p).exists()}
    return {"config": config, "files": files, **(extra or {})}


def fingerprint_changes(saved: dict, current: dict) -> list[str]:
    """What differs between two fingerprints, named (config fields with their values)."""
    if "config" not in saved:
        return ["no fingerprint (a checkpoint from before fingerprints)"]
    out = [f"{k}: {saved['config'].get(k)!r} -> {v!r}" for k, v in current["config"].items()
           if saved["config"].get(k) != v]
    for part in sorted((set(saved) | set(current)) - {"config"}):  # files, code: hash maps
        old, new = saved.get(part) or {}, current.get(part) or {}
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if keys:
            out.append(f"{part} changed: {', '.join(keys)}")
    return out
