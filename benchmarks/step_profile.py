"""Where a training step and a policy's evaluation spend their time, each phase held
against its floor: the FLOPs the phase cannot do without, divided by a matmul rate
measured in this same run (for the optimizer, which moves memory rather than multiplying:
the bytes AdamW must read and write, over a copy bandwidth measured here too).

    python benchmarks/step_profile.py                       # params.yaml's policy and evaluate
    python benchmarks/step_profile.py --steps 3 --eval_prompts_per_group 16
    python benchmarks/step_profile.py --model tiny-random-llama --steps 1   # a seconds-long check

Run `make run` (or `dvc repro train_reward`) first: the step uses params.yaml's prompt table,
groups and reward model, as the pipeline does; without them it falls back to the built-in
prompts and the length reward and says so.

The floor of each phase is what the work needs at least, not what the code does:
- sampling: every prompt once (its G completions share it), every completion token once
  through the body and the output layer, with its attention over the context;
- forward + backward: 3x the forward of every prompt once and every completion token, the
  output layer at completion positions only;
- reference / old log-probs: 1x that forward (only when beta > 0 or num_iterations > 1);
- reward: the FLOPs the reward function executes (counted by torch's FlopCounterMode);
- optimizer: AdamW reads parameter, gradient and two moments and writes three (28 bytes a
  parameter), over the copy bandwidth.
- evaluation: sampling as above; KL: the base's forward over each policy sample (prompt once
  per group of samples); learned reward: counted; neutral text: its forward; judge and the
  reward-signal check: no matrix work (their floor is 0: the time shown is what they cost).
`x floor` = seconds / floor seconds. The last lines are `train_step_x_floor=<x>` and
`eval_policy_x_floor=<x>`: the whole step's and the whole evaluation's multiple. With the
evaluation profiled, `train_and_eval_floor_min` and `comparison_seed_floor_min` add the phase
floors up to the default run's train_policy + evaluate stages and to one comparison seed
(the base's evaluation cached): the least any code could take for that work at this rate.

`--baseline` also profiles the step as it ran before the shared-prompt forward and the
decode loop (transformers' generate() with torch.multinomial, one forward per completion;
both kept in benchmarks/baseline_paths.py, nowhere else), same config and seed, and prints the ratios:
`step_time_ratio_vs_baseline=<now / before>`.

`--bf16` also profiles the step under bf16 autocast (`policy.precision: bf16`), same config and
seed, and prints `bf16_step_time_ratio_vs_fp32` and `bf16_tokens_per_s_ratio_vs_fp32` (bf16
samples other completions, of other lengths: the token rate is the fairer of the two). On CPUs
with AMX, bf16 matrix products run on the tile unit (`python benchmarks/gemm_shapes.py --bf16`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from pgrpo.core.config import load_section, policy_config, read_params  # noqa: E402
import pgrpo.stages.reward.training_rewards  # noqa: E402,F401 - the reward-model and judge rewards


# --------------------------------------------------------------------------- rates

def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """fp32 n x n matmul rate, GFLOP/s (median of `repeats` after a warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def copy_gbytes(mib: int = 256, repeats: int = 10) -> float:
    """Memory copy bandwidth, GB/s counted as bytes read + written."""
    a = torch.empty(mib * 2 ** 18)  # float32
    b = torch.empty_like(a)
    b.copy_(a)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        b.copy_(a)
        times.append(time.perf_counter() - t0)
    return 2 * a.numel() * 4 / statistics.median(times) / 1e9


# --------------------------------------------------------------------------- FLOPs

class Flops:
    """Forward FLOPs of a Llama-style decoder by token: the body's matmuls, the output layer,
    attention over a context (2 matmuls: scores and the weighted sum)."""

    def __init__(self, model):
        c = model.config
        d, layers, ff, heads = c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.num_attention_heads
        kv = getattr(c, "num_key_value_heads", heads) or heads
        hd = getattr(c, "head_dim", None) or d // heads
        self.body = 2 * layers * (d * heads * hd + 2 * d * kv * hd + heads * hd * d + 3 * d * ff)
        self.head = 2 * d * c.vocab_size
        self.attn_per_key = 4 * layers * heads * hd

    def prompts_once(self, prompt_lens: list[int], head_positions: int = 0) -> float:
        """Every prompt through the body once (causal attention), and `head_positions` logits."""
        return sum(p * self.body + self.attn_per_key * p * (p + 1) / 2 for p in prompt_lens) \
            + head_positions * self.head

    def completions(self, prompt_lens: list[int], completion_lens: list[list[int]]) -> float:
        """Every completion token through the body and the output layer, attending to its
        prompt and its own earlier tokens."""
        total = 0.0
        for p, lens in zip(prompt_lens, completion_lens):
            for c in lens:
                total += c * (self.body + self.head) + self.attn_per_key * (c * p + c * (c + 1) / 2)
        return total


def shapes(rollout, g: int) -> tuple[list[int], list[list[int]]]:
    """(real prompt length of each prompt, completion lengths of its G samples)."""
    p = rollout.prompt_len
    prompt_lens = rollout.attention_mask[::g, :p].sum(-1).tolist()
    lens = rollout.completion_mask.sum(-1).tolist()
    return prompt_lens, [lens[i:i + g] for i in range(0, len(lens), g)]


def counted_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def print_table(title: str, rows: list[tuple[str, float, float, float]]) -> float:
    """rows: (phase, seconds, GFLOP or GB, floor seconds); returns the total's multiple."""
    print(f"\n{title}\n")
    print("| phase | seconds | work | floor s | x floor |")
    print("|---|---:|---:|---:|---:|")
    for name, sec, work, floor in rows:
        unit = "GB" if name == "optimizer" else "GFLOP"
        mult = f"{sec / floor:.1f}" if floor > 0 else "-"
        print(f"| {name} | {sec:.2f} | {work:.1f} {unit} | {floor:.2f} | {mult} |")
    sec, floor = sum(r[1] for r in rows), sum(r[3] for r in rows)
    print(f"| **total** | **{sec:.2f}** | | **{floor:.2f}** | **{sec / floor:.1f}** |")
    return sec / floor


# --------------------------------------------------------------------------- the training step

def profile_step(cfg, steps: int, gflops: float, gbytes: float,
                 label: str = "") -> tuple[float, float, float, float]:
    """Prints the step's table; returns (step seconds, multiple of the floor, floor seconds,
    completion tokens a second)."""
    from pgrpo.core.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, out)
        captured = []
        rollout_fn = trainer._rollout

        def capture(step):
            batch, rollout = rollout_fn(step)
            captured.append((batch, rollout))
            return batch, rollout

        trainer._rollout = capture
        trainer.train_step()  # warm-up: allocator, optimizer state
        rows = [trainer.train_step() for _ in range(steps)]
        batch, rollout = captured[-1]
        reward_flops = counted_flops(lambda: trainer._score(batch, rollout))
        n_params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        flops = Flops(trainer.acc.unwrap_model(trainer.model))
        trainer.logger.close()
    g = cfg.num_generations
    per_step = []
    for (batch, rollout), m in zip(captured[1:], rows):
        prompt_lens, comp = shapes(rollout, g)
        sample = flops.prompts_once(prompt_lens, len(prompt_lens)) + flops.completions(prompt_lens, comp)
        forward = flops.prompts_once(prompt_lens) + flops.completions(prompt_lens, comp)
        logprob_passes = int(cfg.beta > 0) + int(cfg.num_iterations > 1)
        per_step.append({"sampling": (m["perf/generation_time_s"], sample),
                         "reward": (m["perf/reward_time_s"], reward_flops),
                         "advantages": (m["perf/advantage_time_s"], 0.0),
                         "ref / old log-probs": (m["perf/logprob_time_s"], logprob_passes * forward),
                         "forward + backward": (m["perf/backward_time_s"], 3 * forward * cfg.num_iterations),
                         "optimizer": (m["perf/optimizer_time_s"], 28 * n_params * cfg.num_iterations)})
    table = []
    for phase in per_step[0]:
        sec = statistics.median(s[phase][0] for s in per_step)
        work = statistics.median(s[phase][1] for s in per_step)
        floor = work / 1e9 / gbytes if phase == "optimizer" else work / 1e9 / gflops
        table.append((phase, sec, work / 1e9, floor))
    step_time = statistics.median(m["perf/step_time_s"] for m in rows)
    tokens = statistics.median(m["train/completion_tokens"] for m in rows)
    other = step_time - sum(t[1] for t in table)
    table.append(("other (metrics, logging)", max(other, 0.0), 0.0, 0.0))
    prompt_tokens = sum(shapes(captured[-1][1], g)[0])
    mult = print_table(f"One training step{label} (median of {steps}; {cfg.prompts_per_step} prompts x G={g}, "
                       f"{prompt_tokens} prompt tokens, {tokens:.0f} completion tokens, "
                       f"micro-batch {cfg.micro_batch_size}, beta {cfg.beta}, loss {cfg.loss_agg})", table)
    print(f"\nstep_time_s={step_time:.2f} completion_tokens_per_s={tokens / step_time:.1f} "
          f"steps_per_hour={3600 / step_time:.0f}")
    return step_time, mult, sum(t[3] for t in table), tokens / step_time


# --------------------------------------------------------------------------- one policy's evaluation

def profile_eval(eval_cfg, policy, per_group: int,
                 gflops: float) -> tuple[float, dict[str, float]] | None:
    """Prints one policy's evaluation table; returns (its multiple of the floor, each phase's
    floor seconds)."""
    from pgrpo.core import paths
    from pgrpo.core.io import read_table
    from pgrpo.core.models import load_policy
    from pgrpo.stages.evaluation.evaluate import eval_prompts, signal_check
    from pgrpo.stages.evaluation.judge import judge_kind, judge_scores
    from pgrpo.stages.evaluation.policy_measures import kl_to_base, neutral_loglik, read_neutral, sample_policy
    from pgrpo.stages.reward.reward_model import GroupRewardFn

    processed, reward_dir = paths.PROCESSED, paths.MODELS / "reward"
    if not (processed / "prompts.parquet").exists() or not (reward_dir / "config.json").exists():
        print("\n(no data/processed or models/reward: run `make run` first; evaluation not profiled)")
        return None
    prompts = eval_prompts(processed / "prompts.parquet", processed / "groups.parquet", per_group,
                           eval_cfg.seed)
    judge = read_table(processed / "judge.parquet")
    reward_fn = GroupRewardFn(reward_dir, prompts.group_names, "cpu", batch_size=eval_cfg.batch_size)
    model, tok = load_policy(policy.model)  # the base stands in for a trained policy: same shapes
    base, _ = load_policy(policy.model)
    model.eval(), base.eval()
    g = eval_cfg.samples_per_prompt
    flops = Flops(model)
    timed = {}

    def run(name, fn):
        t0 = time.perf_counter()
        out = fn()
        timed[name] = time.perf_counter() - t0
        return out

    rollouts = run("sampling", lambda: sample_policy(model, tok, prompts, eval_cfg, policy, with_logprobs=True))
    completions = [c for ro in rollouts for c in ro.completions]
    users = [m["user_id"] for m in prompts.metadata for _ in range(g)]
    group_ids = prompts.group_ids.repeat_interleave(g)
    texts = [p for p in prompts.prompts for _ in range(g)]
    run("KL to the base", lambda: kl_to_base(base, rollouts, eval_cfg))
    judged = run("judge", lambda: judge_scores(judge, users, completions))
    learned = run("learned reward", lambda: reward_fn(texts, completions, group_ids, None).double().numpy())
    lines = read_neutral(eval_cfg.neutral_text)
    run("neutral text", lambda: neutral_loglik(model, tok, lines, eval_cfg.batch_size))
    import numpy as np
    clusters = np.repeat(np.arange(len(prompts)), g)
    run("reward-signal check", lambda: signal_check({"judge": judged, "learned": learned}, prompts,
                                                    clusters, policy.reward, g) if judge_kind(judge) else None)
    sample_f = kl_f = 0.0
    for ro in rollouts:
        prompt_lens, comp = shapes(ro, g)
        sample_f += flops.prompts_once(prompt_lens, len(prompt_lens)) + flops.completions(prompt_lens, comp)
        kl_f += flops.prompts_once(prompt_lens) + flops.completions(prompt_lens, comp)
    neutral_tokens = sum(len(tok(line, add_special_tokens=False)["input_ids"]) for line in lines)
    work = {"sampling": sample_f, "KL to the base": kl_f, "judge": 0.0,
            "learned reward": counted_flops(lambda: reward_fn(texts, completions, group_ids, None)),
            "neutral text": neutral_tokens * (flops.body + flops.head), "reward-signal check": 0.0}
    table = [(k, timed[k], work[k] / 1e9, work[k] / 1e9 / gflops) for k in timed]
    mult = print_table(f"Evaluation of one policy ({len(prompts)} test prompts x {g} samples, "
                f"{sum(len(c.split()) for c in completions) / len(completions):.1f} words a "
                f"sample; the full stage: base + each policy, and validation prompts)", table)
    return mult, {name: floor for name, _, _, floor in table}


def run_floors(cfg, eval_cfg, n_algorithms: int, step_floor: float, eval_floor: dict[str, float],
               per_group: int) -> None:
    """The floor of the default's training and evaluation stages (and of a comparison seed),
    from this run's step and evaluation floors: what no code can go below at this matmul
    rate. The profiled evaluation is scaled to the stage's size: the test phases by
    prompts_per_group / per_group, the validation sampling by its share of samples."""
    test = eval_cfg.prompts_per_group / per_group
    val = (eval_cfg.val_prompts_per_group * eval_cfg.val_samples_per_prompt
           / (eval_cfg.prompts_per_group * eval_cfg.samples_per_prompt))
    sampling = eval_floor["sampling"] * test
    base = sampling + (eval_floor["learned reward"] + eval_floor["neutral text"]) * test
    policy = sum(eval_floor.values()) * test
    validation = sampling * val  # every policy's and the base's validation samples
    training = n_algorithms * cfg.steps * step_floor
    evaluation = base + n_algorithms * policy + (n_algorithms + 1) * validation
    seed = training + n_algorithms * (policy + validation)  # the base's evaluation is cached
    print(f"\nFloors at this run's matmul rate ({n_algorithms} algorithms x {cfg.steps} steps; "
          f"evaluation scaled to {eval_cfg.prompts_per_group} test prompts a group):")
    print(f"  training {training / 60:.1f} min, evaluation {evaluation / 60:.1f} min "
          f"(base {base:.0f} s, each policy {policy:.0f} s, validation sampling {validation:.0f} s "
          f"a policy)")
    print(f"train_and_eval_floor_min={(training + evaluation) / 60:.2f}")
    print(f"comparison_seed_floor_min={seed / 60:.2f}")


def profile_decode(cfg, batches: list[int], gflops: float) -> None:
    """Completion tokens per second of the sampler at several batch sizes (rows decoded
    together), on the training prompts: what a larger evaluation batch would buy."""
    from pgrpo.core.models import load_policy
    from pgrpo.core.prompts import load_prompts
    from pgrpo.core.rollout import derived_seed, generate

    model, tok = load_policy(cfg.model)
    ps = load_prompts(cfg.prompts, cfg.seed, cfg.groups, cfg.prompt_split)
    flops = Flops(model)
    g = 4
    print("\n| rows decoded together | seconds | completion tokens/s | x floor |")
    print("|---:|---:|---:|---:|")
    for rows in batches:
        torch.manual_seed(derived_seed(cfg.seed, rows))
        t0 = time.perf_counter()
        ro = generate(model, tok, ps.prompts[:rows // g], g, max_new_tokens=cfg.max_new_tokens,
                      temperature=cfg.temperature, system_prompt=cfg.system_prompt)
        sec = time.perf_counter() - t0
        prompt_lens, comp = shapes(ro, g)
        floor = (flops.prompts_once(prompt_lens, len(prompt_lens))
                 + flops.completions(prompt_lens, comp)) / 1e9 / gflops
        tokens = int(ro.completion_mask.sum())
        print(f"| {rows} | {sec:.2f} | {tokens / sec:.0f} | {sec / floor:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--algorithm", default="pgrpo", help="a key of the params file's algorithms")
    parser.add_argument("--model", default=None, help="override policy.model")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    parser.add_argument("--eval_prompts_per_group", type=int, default=4,
                        help="test prompts per group in the evaluation profile (the stage: 16)")
    parser.add_argument("--no_eval", action="store_true")
    parser.add_argument("--decode_batches", default=None,
                        help="comma-separated row counts: sampler throughput at each (e.g. 32,64,128)")
    parser.add_argument("--baseline", action="store_true",
                        help="also the step with the sampling and forward as they were, and the ratio")
    parser.add_argument("--bf16", action="store_true",
                        help="also the step under bf16 autocast, and its ratios against fp32")
    args = parser.parse_args()
    cfg = policy_config(args.params, args.algorithm)
    updates = {"steps": args.steps + 1, "resume": False, "judge_every": 0, "precision": "fp32"}
    if args.model:
        updates["model"] = args.model
    if not Path(cfg.prompts).exists() or not Path(cfg.reward).exists():
        print(f"({cfg.prompts} or {cfg.reward} missing: built-in prompts and the length reward)")
        updates.update(prompts="builtin", groups=None, reward="length", prompt_split=None)
    cfg = cfg.model_copy(update=updates)
    gflops, gbytes = matmul_gflops(), copy_gbytes()
    print(f"threads={torch.get_num_threads()} matmul_rate={gflops:.1f} GFLOP/s (fp32 2048^3) "
          f"copy_bandwidth={gbytes:.1f} GB/s model={cfg.model}")
    if args.decode_batches:
        return profile_decode(cfg, [int(b) for b in args.decode_batches.split(",")], gflops)
    step_time, step_mult, step_floor, tokens_per_s = profile_step(cfg, args.steps, gflops, gbytes)
    before = None
    if args.baseline:
        from baseline_paths import baseline_paths  # beside this script

        with baseline_paths():
            before = profile_step(cfg, args.steps, gflops, gbytes,
                                  " as before (generate(), one forward per completion)")
    bf16 = None
    if args.bf16:
        bf16 = profile_step(cfg.model_copy(update={"precision": "bf16"}), args.steps, gflops, gbytes,
                            " under bf16 autocast (the floor at the fp32 rate)")
    evaluated = None
    if not args.no_eval:
        from pgrpo.stages.evaluation.eval_config import EvalConfig
        eval_cfg = load_section(args.params, "evaluate", EvalConfig)
        evaluated = profile_eval(eval_cfg, cfg, args.eval_prompts_per_group, gflops)
        if evaluated:
            run_floors(policy_config(args.params, args.algorithm), eval_cfg,
                       len(read_params(args.params).get("algorithms") or {}) or 1, step_floor,
                       evaluated[1], args.eval_prompts_per_group)
    if before:
        print(f"\nbaseline_step_x_floor={before[1]:.2f}")
        print(f"step_time_ratio_vs_baseline={step_time / before[0]:.3f}")
    if bf16:
        print(f"\nbf16_step_time_ratio_vs_fp32={bf16[0] / step_time:.3f}")
        print(f"bf16_tokens_per_s_ratio_vs_fp32={bf16[3] / tokens_per_s:.3f}")
    print(f"\ntrain_step_x_floor={step_mult:.2f}")
    if evaluated:
        print(f"eval_policy_x_floor={evaluated[0]:.2f}")


if __name__ == "__main__":
    main()
