"""Trainer speed on a fixed config, and what P-GRPO's advantage step costs.

    python benchmarks/trainer_speed.py                          # default model (SmolLM2-135M)
    python benchmarks/trainer_speed.py --model tiny-random-llama --steps 3
    python benchmarks/trainer_speed.py --random_init_from DIR    # DIR's architecture, random weights

`--random_init_from` builds the model of a folder holding only config.json and the
tokenizer, with random weights: the speed of the architecture on a machine its
weights cannot reach (a GPU box that takes 64 MiB of files: SmolLM2 is 517 MB).

Fixed config: 4 prompts x G=8 completions, 48 new tokens, micro-batch 8, full
fine-tuning, fp32 on CPU / bf16 on GPU. After one warm-up step, each timed step
prints its wall time and completion tokens/s. Then, measured in this process:
  - the P-GRPO advantage step (gather + running-moment merge + normalization,
    timed inside the trainer) as a fraction of the full step;
  - P-GRPO's advantage function against GRPO's on the same batch (ratio);
  - the same fraction if the batch were 4096 samples in 16 groups.
The last line is `advantage_overhead_fraction=<x>` (target < 0.01).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from pgrpo.core.advantages import GroupRewardStats, grpo_advantages, pgrpo_advantages  # noqa: E402
from pgrpo.core.config import PolicyConfig  # noqa: E402
from pgrpo.core.trainer import Trainer  # noqa: E402


def time_call(fn, repeats: int = 50) -> float:
    """Median seconds of fn() over `repeats` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def advantage_microbench(n: int, n_groups: int, g: int = 8) -> tuple[float, float]:
    """Median seconds of (P-GRPO, GRPO) advantages on a batch of n samples."""
    gen = torch.Generator().manual_seed(0)
    rewards = torch.rand(n, generator=gen)
    prompt_ids = torch.arange(n // g).repeat_interleave(g)
    group_ids = torch.randint(0, n_groups, (n // g,), generator=gen).repeat_interleave(g)
    stats = GroupRewardStats()
    stats.update(torch.rand(10 * n, generator=gen), torch.randint(0, n_groups, (10 * n,), generator=gen))
    pg = time_call(lambda: pgrpo_advantages(rewards, prompt_ids, group_ids, stats))
    gr = time_call(lambda: grpo_advantages(rewards, prompt_ids))
    return pg, gr


def random_init_model(config_dir: str) -> str:
    """Save config_dir's architecture with seeded random weights (safetensors) to a temp folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = tempfile.mkdtemp(prefix="random-init-")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_dir)).save_pretrained(out)
    AutoTokenizer.from_pretrained(config_dir).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--prompts_per_step", type=int, default=4, help="the fixed config's 4; raise on a GPU")
    parser.add_argument("--random_init_from", default=None,
                        help="folder with config.json + tokenizer: time that architecture, random weights")
    args = parser.parse_args()
    if args.random_init_from:
        args.model = random_init_model(args.random_init_from)
    cfg = PolicyConfig(model=args.model, steps=args.steps + 1, prompts_per_step=args.prompts_per_step, num_generations=8,
                       max_new_tokens=48, micro_batch_size=8, resume=False)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, out)
        print(f"device={trainer.acc.device} precision={trainer.acc.mixed_precision} model={args.model} "
              f"prompts_per_step={cfg.prompts_per_step} threads={torch.get_num_threads()}")
        trainer.train_step()  # warm-up: allocator, optimizer state, kernels
        rows = [trainer.train_step() for _ in range(args.steps)]
        trainer.logger.close()
    for i, m in enumerate(rows, 1):
        print(f"step {i}: {m['perf/step_time_s']:.2f} s, generation {m['perf/generation_time_s']:.2f} s, "
              f"{m['perf/tokens_per_s']:.1f} completion tokens/s overall, "
              f"{m['perf/generation_tokens_per_s']:.1f} while generating, "
              f"advantage step {1e3 * m['perf/advantage_time_s']:.3f} ms")
    step = statistics.median(m["perf/step_time_s"] for m in rows)
    adv = statistics.median(m["perf/advantage_time_s"] for m in rows)
    tokens = statistics.median(m["perf/tokens_per_s"] for m in rows)
    print(f"median step_time_s={step:.3f} completion_tokens_per_s={tokens:.1f}")
    n = cfg.prompts_per_step * cfg.num_generations
    pg, gr = advantage_microbench(n, 3)
    print(f"advantage fn on this batch ({n} samples, 3 groups): P-GRPO {1e6 * pg:.0f} us, "
          f"GRPO {1e6 * gr:.0f} us, ratio P-GRPO/GRPO={pg / gr:.2f}")
    big_pg, big_gr = advantage_microbench(4096, 16)
    print(f"at 4096 samples in 16 groups: P-GRPO {1e3 * big_pg:.2f} ms "
          f"(ratio P-GRPO/GRPO={big_pg / big_gr:.2f}), fraction of this step={big_pg / step:.5f}")
    print(f"advantage_overhead_fraction={adv / step:.6f}")


if __name__ == "__main__":
    main()
