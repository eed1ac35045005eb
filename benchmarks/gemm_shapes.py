"""GFLOP/s of SmolLM2-135M's linear layers at the heights (rows) the trainer and the
evaluation multiply them by, three ways: torch's F.linear (what the model runs), W @ x^T
(the same product transposed), and MKL's pre-packed weights (torch.ops.mkl._mkl_linear).
What decides how far a decode step can be from its FLOP floor on a CPU.

    python benchmarks/gemm_shapes.py
    python benchmarks/gemm_shapes.py --rows 16,48,128,317 --repeats 50
    python benchmarks/gemm_shapes.py --bf16    # + F.linear in bfloat16 (does it pay on this CPU?)

bf16: on an Intel Xeon with AVX-512 and avx512_bf16 (no AMX), 2026-12-07, F.linear in bf16
ran at 0.37-0.93x the fp32 rate at 24 of the 25 shapes (1.3x at 576 x 1536 with 16 rows), so
fp32 stays there too (docs/speed.md). On an Intel Xeon with AMX (amx_bf16), 2026-12-07, one
thread (the other core busy with a training run, for both columns alike), F.linear in bf16
ran at 1.1-6.8x its fp32 rate at all 25 shapes (median 2.6x).
"""

from __future__ import annotations

import argparse
import time

import torch

# (out, in) of SmolLM2-135M's matrices: q/o, k/v, MLP up/gate, MLP down, the output layer
SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)]


def seconds(fn, repeats: int) -> float:
    fn(), fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="16,32,48,128,317")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--bf16", action="store_true", help="add F.linear with bf16 inputs and weights")
    args = parser.parse_args()
    print(f"threads={torch.get_num_threads()}")
    print("| out x in | rows | F.linear | W @ x^T | MKL packed |" + (" F.linear bf16 |" if args.bf16 else ""))
    print("|---|---:|---:|---:|---:|" + ("---:|" if args.bf16 else ""))
    for n, k in SHAPES:
        w = torch.randn(n, k)
        for m in map(int, args.rows.split(",")):
            x = torch.randn(m, k)
            packed = torch.ops.mkl._mkl_reorder_linear_weight(w, m)
            gflop = 2 * m * n * k / 1e9
            rates = [gflop / seconds(f, args.repeats) for f in (
                lambda: torch.nn.functional.linear(x, w),
                lambda: (w @ x.t()).t(),
                lambda: torch.ops.mkl._mkl_linear(x, packed, w, None, m))]
            if args.bf16:
                xb, wb = x.bfloat16(), w.bfloat16()
                rates.append(gflop / seconds(lambda xb=xb, wb=wb: torch.nn.functional.linear(xb, wb),
                                             args.repeats))
            print(f"| {n} x {k} | {m} | " + " | ".join(f"{r:.0f}" for r in rates) + " |")


if __name__ == "__main__":
    main()
