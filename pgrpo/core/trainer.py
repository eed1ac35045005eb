"""The GRPO-family training loop (P-GRPO by default) on accelerate.

One step: sample `prompts_per_step` prompts (split over the processes), G completions
each, score them, gather rewards / prompt ids / group ids from every process, compute
advantages on the global batch (so every process holds the same P-GRPO group
statistics), then `num_iterations` optimizer updates over the local batch in
micro-batches with exact loss normalization (see pgrpo.core.loss).

    python -m pgrpo.train                                   # params.yaml `policy`
    accelerate launch -m pgrpo.train --params params.yaml   # several GPUs, same code
    python -m pgrpo.orchestration.pipeline train_policy --algorithm grpo --set policy.num_processes=2
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from pgrpo.core.advantages import AdvantageConfig, GroupRewardStats, check_finite, get_advantage_fn
from pgrpo.core.checkpoint import (
    fingerprint_changes,
    latest_checkpoint,
    load_checkpoint,
    read_trainer_state,
    run_fingerprint,
    save_checkpoint,
)
from pgrpo.core.config import PolicyConfig
from pgrpo.core.logprobs import batched_logprobs, completion_logprobs, micro_batches
from pgrpo.core.loss import masked_mean, policy_loss
from pgrpo.core.metric_log import JsonlLogger, MetricLogger, MultiLogger
from pgrpo.core.models import load_policy, own_forward
from pgrpo.core.prompts import PromptSet, load_prompts, step_prompts
from pgrpo.core.rewards import RewardFn, resolve_reward
from pgrpo.core.rollout import Rollout, RowDraws, derived_seed, eos_token_ids, generate
from pgrpo.core.step_metrics import group_metrics, rollout_metrics

# A step hook sees the policy between steps and returns metrics to log at that step ({} when
# it has nothing to say then); e.g. pgrpo.stages.evaluation.judge_curve, the judge on held-out prompts every k
# steps. Hooks run on the main process with the model in eval mode, no gradients and its own
# (full-precision) forward.
StepHook = Callable[[int, torch.nn.Module, object], dict[str, float]]


@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path  # final policy, safetensors + tokenizer
    step: int
    stats: GroupRewardStats
    group_names: list[str]


def _precision(cfg: PolicyConfig) -> str:
    if cfg.precision == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return "no" if cfg.precision == "fp32" else "bf16"


def _accelerator(mixed_precision: str) -> Accelerator:
    """An Accelerator; a second run in the same process may use another precision.

    accelerate keeps one process-wide state and refuses a changed mixed_precision;
    we drop only that part of it (the process group, if any, is kept).
    """
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())


def _wrap_lora(model, cfg: PolicyConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


class Trainer:
    """Holds the run's state; `train()` runs the steps. See module docstring."""

    def __init__(self, cfg: PolicyConfig, output_dir: str | Path, prompts: PromptSet | None = None,
                 reward_fn: RewardFn | None = None, logger: MetricLogger | None = None,
                 hooks: list[StepHook] | None = None, fingerprint: dict | None = None):
        self.cfg, self.output_dir = cfg, Path(output_dir)
        self.hooks = list(hooks or [])
        self.acc = _accelerator(_precision(cfg))
        if cfg.prompts_per_step % self.acc.num_processes:
            raise ValueError(f"policy.prompts_per_step={cfg.prompts_per_step} (the global batch) "
                             f"does not split over {self.acc.num_processes} processes")
        torch.manual_seed(cfg.seed)
        if prompts is None:
            prompts = load_prompts(cfg.prompts, cfg.seed, cfg.groups, cfg.prompt_split)
        if cfg.advantage_groups == "random":
            prompts = prompts.with_random_groups(cfg.seed)
        self.prompts = prompts
        self.reward_fn = reward_fn if reward_fn is not None else self._reward_fn()
        with self.acc.main_process_first():  # one process converts a built-in model, once
            model, self.tokenizer = load_policy(cfg.model)
        if cfg.lora_r:
            model = _wrap_lora(model, cfg)
        # A reference model only when the KL term is on; with LoRA the base
        # weights (adapter disabled) are the reference, so nothing is copied.
        self.ref_model = None
        if cfg.beta > 0 and not cfg.lora_r:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False).to(self.acc.device)
        params = [p for p in model.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            # fused: one kernel over every parameter instead of a loop of elementwise ops,
            # 0.1 s a step instead of 0.5 for SmolLM2 on 2 CPU cores (benchmarks/step_profile.py)
            optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                          fused=all(p.is_floating_point() for p in params))
        from transformers import get_scheduler

        # Stepped by hand once per optimizer step (not accelerate-prepared, which
        # would step it once per process).
        self.scheduler = get_scheduler(cfg.lr_schedule, optimizer, cfg.warmup_steps,
                                       cfg.steps * cfg.num_iterations)
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        self.eos_ids = eos_token_ids(self.acc.unwrap_model(self.model), self.tokenizer)
        self.stats = GroupRewardStats(half_life=cfg.half_life)
        self.advantage_fn = get_advantage_fn(cfg.advantage)
        self.adv_cfg = AdvantageConfig(scale=cfg.scale, eps=cfg.adv_eps, min_count=cfg.min_count)
        self.step = 0
        self.fingerprint = run_fingerprint(cfg, fingerprint)
        ckpt = latest_checkpoint(self.output_dir)
        why = None if ckpt is None else "resume=false" if not cfg.resume else "; ".join(
            fingerprint_changes(read_trainer_state(ckpt).get("fingerprint", {}), self.fingerprint))
        if why:  # never resume what another config, other inputs or other code produced
            self.acc.print(f"starting over: discarding the checkpoints in {ckpt.parent} ({why})")
            if self.acc.is_main_process:
                shutil.rmtree(ckpt.parent)
            self.acc.wait_for_everyone()
            ckpt = None
        metrics_path = self.output_dir / "metrics.jsonl"
        if ckpt is not None:
            state = load_checkpoint(ckpt, self.acc.unwrap_model(self.model), self.optimizer,
                                    self.scheduler, self.stats)
            self.step = state["step"]
            if (ckpt / "metrics.jsonl").is_file() and self.acc.is_main_process:
                shutil.copy2(ckpt / "metrics.jsonl", metrics_path)  # the rows up to its step
            self.acc.print(f"resumed from {ckpt} (step {self.step})")
        jsonl = JsonlLogger(metrics_path, resume_from_step=self.step if ckpt else None) \
            if self.acc.is_main_process else None
        self.logger = MultiLogger(jsonl, logger if self.acc.is_main_process else None)

    def _reward_fn(self) -> RewardFn:
        # A rule reward by name, or one the stage layer registered (the judge, a reward-model
        # folder: pgrpo.stages.reward.training_rewards), built for this run's groups and device.
        return resolve_reward(self.cfg.reward, self.cfg.prompts, self.prompts.group_names,
                              self.acc.device)

    # ------------------------------------------------------------------ one step

    def _rollout(self, step: int) -> tuple[PromptSet, Rollout]:
        cfg, acc, g = self.cfg, self.acc, self.cfg.num_generations
        # prompts_per_step is the global batch: each process samples its share, with the
        # draws one process would give those rows (RowDraws), so N processes train on what
        # 1 would, up to float rounding
        per_process = cfg.prompts_per_step // acc.num_processes
        start = acc.process_index * per_process
        rows = step_prompts(step, self.prompts.group_ids, cfg.prompts_per_step, cfg.seed,
                            cfg.prompt_sampling)
        batch = self.prompts.subset(rows[start:start + per_process])
        torch.manual_seed(derived_seed(cfg.seed, step, acc.process_index))
        draws = RowDraws(derived_seed(cfg.seed, step, 0), start * g, cfg.prompts_per_step * g,
                         acc.device)
        with acc.autocast():
            rollout = generate(acc.unwrap_model(self.model), self.tokenizer, batch.prompts,
                               g, max_new_tokens=cfg.max_new_tokens,
                               temperature=cfg.temperature, top_p=cfg.top_p,
                               system_prompt=cfg.system_prompt, draws=draws)
        return batch, rollout

    def _score(self, batch: PromptSet, rollout: Rollout) -> torch.Tensor:
        g = self.cfg.num_generations
        rewards = self.reward_fn(
            [p for p in batch.prompts for _ in range(g)], rollout.completions,
            batch.group_ids.repeat_interleave(g), [m for m in batch.metadata for _ in range(g)],
        )
        rewards = torch.as_tensor(rewards, dtype=torch.float32).flatten()
        if rewards.numel() != len(rollout.completions):
            raise ValueError(f"reward function returned {rewards.numel()} rewards for "
                             f"{len(rollout.completions)} completions")
        return rewards

    def _advantages(self, rewards: torch.Tensor, batch: PromptSet) -> tuple[torch.Tensor, dict]:
        """Gather the global batch, compute advantages there, keep this process's rows."""
        acc, g = self.acc, self.cfg.num_generations
        n_local = rewards.numel()
        prompt_ids = (acc.process_index * len(batch) + torch.arange(len(batch))).repeat_interleave(g)
        norm_groups = batch.advantage_groups.repeat_interleave(g)
        true_groups = batch.group_ids.repeat_interleave(g)
        t0 = time.perf_counter()  # the advantage step, gather included
        all_r, all_q, all_p = (acc.gather(t.to(acc.device)).cpu()
                               for t in (rewards, prompt_ids, norm_groups))
        finite = torch.isfinite(all_r)
        if self.cfg.nan_rewards == "error":
            check_finite(all_r, ("prompt_ids", all_q), ("group_ids", all_p))
        adv = torch.zeros_like(all_r)
        adv[finite] = self.advantage_fn(all_r[finite], all_q[finite], all_p[finite], self.stats, self.adv_cfg)
        seconds = time.perf_counter() - t0
        # Rewards are reported by true group, also when the advantage used random labels.
        all_true = all_p if batch.norm_group_ids is None else acc.gather(true_groups.to(acc.device)).cpu()
        metrics = group_metrics(all_r, all_q, all_true, adv, finite, self.stats, self.prompts.group_names)
        metrics["perf/advantage_time_s"] = seconds
        start = acc.process_index * n_local
        return adv[start:start + n_local], metrics

    def _optimize(self, rollout: Rollout, adv: torch.Tensor, keep: torch.Tensor) -> dict[str, float]:
        cfg, acc, model = self.cfg, self.acc, self.model
        g = cfg.num_generations
        mask = rollout.completion_mask * keep.to(rollout.completion_mask.device)[:, None]
        n_seq = mask.shape[0]
        # dapo normalizes by the global token count; DDP averages gradients over
        # processes, so each process divides by (global tokens / processes).
        global_tokens = acc.gather(mask.sum().reshape(1).float()).sum().item()
        num_tokens = max(global_tokens, 1.0) / acc.num_processes
        old_logp = ref_logp = None
        t0 = time.perf_counter()
        with acc.autocast():
            # num_iterations = 1: the sampling policy is the one being updated, ratio 1
            # (old_logp = logp.detach() below); no forward is spent on it.
            if cfg.num_iterations > 1:
                old_logp = batched_logprobs(model, rollout, cfg.temperature, cfg.micro_batch_size, g)
            if cfg.beta > 0:
                ref = self.ref_model
                ctx = acc.unwrap_model(model).disable_adapter() if ref is None else contextlib.nullcontext()
                with ctx:
                    ref_logp = batched_logprobs(ref or model, rollout, cfg.temperature,
                                                cfg.micro_batch_size, g)
        timing = {"logprob": time.perf_counter() - t0, "backward": 0.0, "optimizer": 0.0}
        adv = adv.to(acc.device)
        sums: dict[str, float] = {}
        for _ in range(cfg.num_iterations):
            chunks = micro_batches(n_seq, cfg.micro_batch_size, g)
            totals = dict.fromkeys(["loss", "kl", "clip_frac/low", "clip_frac/high", "clip_frac/region",
                                    "entropy"], 0.0)
            t0 = time.perf_counter()
            for k, rows in enumerate(chunks):
                ids, att = rollout.select(rows)
                sync = contextlib.nullcontext() if k == len(chunks) - 1 else acc.no_sync(model)
                with sync, acc.autocast():
                    logp, entropy = completion_logprobs(model, ids, att, rollout.prompt_len, g,
                                                        cfg.temperature, with_entropy=True)
                    loss, st = policy_loss(
                        logp, old_logp[rows] if old_logp is not None else logp.detach(), adv[rows],
                        mask[rows], ref_logp=ref_logp[rows] if ref_logp is not None else None,
                        beta=cfg.beta, eps_low=cfg.eps_low, eps_high=cfg.eps_high, agg=cfg.loss_agg,
                        num_sequences=n_seq, num_tokens=num_tokens,
                        max_completion_length=cfg.max_new_tokens)
                    acc.backward(loss)
                share = (ids.shape[0] / n_seq)
                totals["loss"] += loss.item()
                totals["entropy"] += masked_mean(entropy, mask[rows]).item() * share
                for key in ("kl", "clip_frac/low", "clip_frac/high", "clip_frac/region"):
                    totals[key] += st[key].item() * share
            t1 = time.perf_counter()
            grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            timing["backward"] += t1 - t0
            timing["optimizer"] += time.perf_counter() - t1
            sums = {**totals, "grad_norm": float(grad_norm)}
        # Metrics of the last pass, averaged over processes.
        reduced = acc.reduce(torch.tensor(list(sums.values()), device=acc.device), "mean").tolist()
        metrics = {f"train/{k}": v for k, v in zip(sums, reduced)}
        metrics["train/lr"] = self.scheduler.get_last_lr()[0]
        metrics.update({f"perf/{k}_time_s": v for k, v in timing.items()})
        return metrics

    def train_step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        batch, rollout = self._rollout(self.step)
        gen_time = time.perf_counter() - t0
        rewards = self._score(batch, rollout)
        reward_time = time.perf_counter() - t0 - gen_time
        adv, metrics = self._advantages(rewards, batch)
        metrics.update(self._optimize(rollout, adv, torch.isfinite(rewards)))
        metrics.update(rollout_metrics(rollout, self.eos_ids, self.acc))
        step_time = time.perf_counter() - t0
        tokens = metrics["train/completion_tokens"]
        metrics.update({"perf/step_time_s": step_time, "perf/generation_time_s": gen_time,
                        "perf/reward_time_s": reward_time,
                        "perf/tokens_per_s": tokens / step_time, "perf/generation_tokens_per_s": tokens / gen_time})
        self.step += 1
        return metrics

    # ------------------------------------------------------------------ the run

    @torch.no_grad()
    def run_hooks(self) -> dict[str, float]:
        """Every hook's metrics at the current step (main process only)."""
        out: dict[str, float] = {}
        if self.acc.is_main_process and self.hooks:
            model = self.acc.unwrap_model(self.model)
            was_training = model.training
            model.eval()
            with own_forward(model):  # fp32 under bf16 training too, as evaluation reads policies
                for hook in self.hooks:
                    out.update(hook(self.step, model, self.tokenizer))
            model.train(was_training)
        return out

    def save(self) -> None:
        if self.acc.is_main_process:
            save_checkpoint(self.output_dir, self.step, self.acc.unwrap_model(self.model), self.optimizer,
                            self.scheduler, self.stats,
                            {"config": self.cfg.model_dump(), "fingerprint": self.fingerprint},
                            keep=self.cfg.keep_checkpoints,
                            files=(self.output_dir / "metrics.jsonl",))
        self.acc.wait_for_everyone()

    def train(self, stop_after_steps: int | None = None) -> TrainResult:
        """Run to cfg.steps (or stop after `stop_after_steps` more, checkpointed, to resume later)."""
        cfg = self.cfg
        end = cfg.steps if stop_after_steps is None else min(cfg.steps, self.step + stop_after_steps)
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"{cfg.advantage} training",
                   disable=not self.acc.is_main_process, dynamic_ncols=True)
        if self.step == 0 and self.hooks:  # where the hooks' curves start: the untrained policy
            self.logger.log_metrics(self.run_hooks(), 0)
        while self.step < end:
            metrics = self.train_step()
            metrics.update(self.run_hooks())
            self.logger.log_metrics(metrics, self.step)
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['train/reward']:.3f}", loss=f"{metrics['train/loss']:.3f}",
                            s_per_step=f"{metrics['perf/step_time_s']:.1f}")
            if self.step % cfg.checkpoint_every == 0 or self.step == end:
                self.save()
        bar.close()
        self.logger.close()
        model_dir = self.output_dir / "model"
        if self.step >= cfg.steps:
            self.export(model_dir)
        return TrainResult(self.output_dir, model_dir, self.step, self.stats, self.prompts.group_names)

    def export(self, model_dir: Path) -> None:
        """Save the final policy (LoRA merged) as safetensors, plus group statistics."""
        if not self.acc.is_main_process:
            return
        model = self.acc.unwrap_model(self.model)
        if self.cfg.lora_r:
            model = copy.deepcopy(model).merge_and_unload()
        tmp = model_dir.with_name(model_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:  # a fast tokenizer saves the padding its last call set (by
            backend.no_padding()  # generation, not by a resumed run), and the same weights
            backend.no_truncation()  # must export byte-identical (DVC, pgrpo.experiments.compare's key)
        self.tokenizer.save_pretrained(tmp)
        stats = self.stats
        ids = stats.ids
        summary = {self.prompts.group_names[i]: {"count": c, "mean": m, "std": s} for i, c, m, s in zip(
            ids.tolist(), stats.count(ids).tolist(), stats.mean(ids).tolist(), stats.std(ids).tolist())}
        (tmp / "group_stats.json").write_text(json.dumps(summary, indent=2))
        if model_dir.exists():
            shutil.rmtree(model_dir)
        tmp.replace(model_dir)


def train_policy(cfg: PolicyConfig, output_dir: str | Path, *, prompts: PromptSet | None = None,
                 reward_fn: RewardFn | None = None, logger: MetricLogger | None = None,
                 stop_after_steps: int | None = None,
                 hooks: list[StepHook] | None = None, fingerprint: dict | None = None) -> TrainResult:
    """The train_policy stage: train (or resume) and export the policy to output_dir/model.
    `fingerprint`: more that a checkpoint must match to be resumed (see run_fingerprint)."""
    return Trainer(cfg, output_dir, prompts, reward_fn, logger, hooks,
                   fingerprint).train(stop_after_steps)

