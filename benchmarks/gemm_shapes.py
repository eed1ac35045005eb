"""GFLOP/s of SmolLM2-135M's linear layers at the heights (rows) the trainer and the
evaluation multiply them by, three ways: torch's F.linear (what the model runs), W @ x^T
(the same product transposed), and MKL's pre-packed weights (torch.ops.mkl._mkl_linear).
What decides how far a decode step can be from its FLOP floor on a CPU.

    python benchmarks/gemm_shapes.py
    python benchmarks/gemm_shapes.py --rows 16,48,128,317 --repeats 50
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
    args = parser.parse_args()
    print(f"threads={torch.get_num_threads()}")
    print("| out x in | rows | F.linear | W @ x^T | MKL packed |")
    print("|---|---:|---:|---:|---:|")
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
            print(f"| {n} x {k} | {m} | " + " | ".join(f"{r:.0f}" for r in rates) + " |")


if __name__ == "__main__":
    main()
