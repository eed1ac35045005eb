"""Our trainer against Hugging Face TRL's GRPOTrainer on identical work, alternating, in one
invocation: same model folder, prompts (in the order our trainer draws them), reward
function, G, batch, completion length, KL weight, loss and seed.

    pip install -e ".[bench]"                 # TRL, for this benchmark only
    python benchmarks/vs_trl.py               # SmolLM2-135M-Instruct, 2 rounds of each
    python benchmarks/vs_trl.py --model tiny-random-llama --steps 3 --rounds 1   # a quick check
    python benchmarks/vs_trl.py --random_init_from DIR   # DIR's architecture (config.json +
                                              # tokenizer), random weights: a GPU box's check

The work (the setting of ENVIRONMENT.md's earlier comparison): 4 prompts x G=4 completions
a step, at most 32 new tokens, temperature 1, beta 0.04 (a frozen reference model, k3 KL),
loss dapo, clip 0.2, one optimizer step per generation (micro-batches of 8), AdamW lr 1e-6,
fp32 on CPU (bf16 on a GPU), the built-in length task and its rule reward. Each run is a
fresh process (so its peak memory is its own), ours and TRL's in turn, `--rounds` times.
A run's step time is the median of its steps after the first (warm-up); a side's is the
median over its runs. Peak memory: the process's peak resident set (CPU) or peak CUDA
memory allocated (GPU).

Last lines: `step_time_ratio_vs_trl=<ours / TRL>` and `peak_memory_ratio_vs_trl=<ours / TRL>`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORK = dict(prompts_per_step=4, num_generations=4, max_new_tokens=32, beta=0.04, loss_agg="dapo",
            eps_low=0.2, eps_high=0.2, micro_batch_size=8, lr=1e-6, temperature=1.0, top_p=1.0,
            seed=0, prompt_sampling="uniform")


def peak_memory_bytes() -> int:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_ours(model: str, steps: int) -> list[float]:
    from pgrpo.core.config import PolicyConfig
    from pgrpo.core.trainer import Trainer

    cfg = PolicyConfig(model=model, prompts="builtin", reward="length", steps=steps, resume=False,
                       checkpoint_every=10 ** 6, **WORK)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, out)
        times = [trainer.train_step()["perf/step_time_s"] for _ in range(steps)]
        trainer.logger.close()
    return times


def trl_dataset(steps: int):
    """Our trainer's prompts in the order it draws them, as TRL's conversational rows."""
    from datasets import Dataset

    from pgrpo.core.prompts import load_prompts, step_prompts

    ps = load_prompts("builtin", WORK["seed"])
    rows = [i for s in range(steps) for i in step_prompts(s, ps.group_ids, WORK["prompts_per_step"],
                                                          WORK["seed"], WORK["prompt_sampling"])]
    return Dataset.from_list([{"prompt": [{"role": "user", "content": ps.prompts[i]}],
                               "target_words": ps.metadata[i]["target_words"]} for i in rows])


def run_trl(model: str, steps: int) -> list[float]:
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from pgrpo.core.rewards import length_preference_reward

    def length_reward(prompts, completions, target_words, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        meta = [{"target_words": t} for t in target_words]
        return length_preference_reward(prompts, texts, torch.zeros(len(texts)), meta).tolist()

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

    g, per_step = WORK["num_generations"], WORK["prompts_per_step"]
    mb = WORK["micro_batch_size"]
    gpu = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(
            output_dir=out, max_steps=steps, per_device_train_batch_size=mb,
            gradient_accumulation_steps=per_step * g // mb,  # one optimizer step per generation
            num_generations=g, max_completion_length=WORK["max_new_tokens"], beta=WORK["beta"],
            loss_type=WORK["loss_agg"], epsilon=WORK["eps_low"], epsilon_high=WORK["eps_high"],
            learning_rate=WORK["lr"], temperature=WORK["temperature"], top_p=WORK["top_p"], top_k=0,
            seed=WORK["seed"], shuffle_dataset=False, logging_steps=1, report_to="none",
            save_strategy="no", disable_tqdm=True, use_cpu=not gpu, bf16=gpu,
            lr_scheduler_type="constant", max_grad_norm=1.0, weight_decay=0.0)
        callback = StepTimes()
        trainer = GRPOTrainer(model=model, reward_funcs=[length_reward], args=cfg,
                              train_dataset=trl_dataset(steps), callbacks=[callback])
        trainer.train()
    return callback.times


def worker(side: str, model: str, steps: int) -> None:
    times = (run_ours if side == "ours" else run_trl)(model, steps)
    print("RESULT " + json.dumps({"side": side, "step_times": times,
                                  "peak_memory_bytes": peak_memory_bytes()}))


def resolve(model: str, random_init_from: str | None) -> str:
    """A folder both trainers load (a built-in name is converted / built once)."""
    if random_init_from:
        sys.path.insert(0, os.path.dirname(__file__))
        from trainer_speed import random_init_model

        return random_init_model(random_init_from)
    from pgrpo.core.models import resolve_model

    return str(resolve_model(model))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--random_init_from", default=None)
    parser.add_argument("--steps", type=int, default=6, help="steps per run; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side, alternating")
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.model, args.steps)
    import torch

    model = resolve(args.model, args.random_init_from)
    print(f"model={model} threads={torch.get_num_threads()} device="
          f"{'cuda:' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'} "
          f"work={json.dumps(WORK)}", flush=True)
    results = {"ours": [], "trl": []}
    for r in range(args.rounds):
        for side in ("ours", "trl"):
            done = subprocess.run([sys.executable, __file__, "--worker", side, "--model", model,
                                   "--steps", str(args.steps)], capture_output=True, text=True)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            if done.returncode or not lines:
                sys.exit(f"{side} run failed (rc {done.returncode}):\n{done.stderr[-3000:]}")
            res = json.loads(lines[-1][len("RESULT "):])
            step = statistics.median(res["step_times"][1:] or res["step_times"])
            results[side].append({"step": step, "peak": res["peak_memory_bytes"]})
            print(f"round {r + 1} {side:4s}: step {step:.2f} s (steps "
                  f"{', '.join(f'{t:.1f}' for t in res['step_times'])}), peak memory "
                  f"{res['peak_memory_bytes'] / 2 ** 30:.2f} GiB", flush=True)
    step = {s: statistics.median(x["step"] for x in v) for s, v in results.items()}
    peak = {s: statistics.median(x["peak"] for x in v) for s, v in results.items()}
    print(f"ours {step['ours']:.2f} s a step, TRL {step['trl']:.2f} s; peak memory ours "
          f"{peak['ours'] / 2 ** 30:.2f} GiB, TRL {peak['trl'] / 2 ** 30:.2f} GiB")
    print(f"step_time_ratio_vs_trl={step['ours'] / step['trl']:.3f}")
    print(f"peak_memory_ratio_vs_trl={peak['ours'] / peak['trl']:.3f}")


if __name__ == "__main__":
    main()
