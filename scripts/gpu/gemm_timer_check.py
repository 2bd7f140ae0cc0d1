"""How the bench's GEMM timer compares with the kernels' own durations (CUDA GPU).

For each GEMM shape: the device time per call from hw bench's timer (calls queued behind a sleep kernel,
CUDA events around the calls), the same with the calls queued behind large matmuls instead (which heat
the GPU), and the summed kernel durations per call that torch.profiler records (what the kernel census
reports; for a call timed whole, every kernel, memset and copy of the call, without the gaps between
them). Prints one row per shape and writes them as JSON.

    PYTHONPATH=src python scripts/gpu/gemm_timer_check.py --out gemm-timer-check.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from llm_perf_opt.hardware.gemms import GEMM_CALLS, gemm_program, queued_cuda_timer

#: CLIP's, SAM's and the prefill's shapes of Base b1 (scripts/analytical/host_figures.py gemms)
SHAPES = ("bmm_nt@16x257x257x64", "bmm_nn@16x257x64x257", "linear_bias@1x257x1024x1024",
          "linear_bias@1x257x4096x1024", "bmm_nt@300x196x196x64", "bmm_nn@300x196x64x196",
          "linear_bias@1x4096x3072x768", "bmm_nt@12x4096x4096x64", "linear@1x282x1280x1280",
          "bmm_nt@10x282x282x128",
          # a MoE layer's routed experts, timed whole: Base b1 and b4 prefill, b1 and b4 decode
          "experts_grouped_mm@64x6x282x1280x896", "experts_grouped_mm@64x6x1128x1280x896",
          "experts_grouped_mm@64x6x1x1280x896", "experts_grouped_mm@64x6x4x1280x896",
          # the decoder's rotary embedding, timed whole: Base b1 and b4 prefill
          "rope@1x282x10x10x128", "rope@4x282x10x10x128",
          # a MoE layer's router (fp32 gate GEMM, casts, softmax, top-k), timed whole: Base b1 and b4 prefill
          "moe_router@282x1280x64x6", "moe_router@1128x1280x64x6")


def matmul_queued_timer(fn: Callable[[], Any], calls: int) -> float:
    """As queued_cuda_timer, the device kept busy by three 8192^3 bf16 matmuls instead of a sleep kernel."""
    blocker = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    return queued_cuda_timer(fn, calls, keep_busy=lambda: [blocker @ blocker for _ in range(3)])


def profiled_kernel_s(fn: Callable[[], Any], calls: int) -> float:
    """Summed device durations of the kernels the profiler records, per call."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    total_us = sum(e.device_time_total for e in prof.events() if e.device_type.name == "CUDA")
    return total_us * 1e-6 / calls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--repeats", type=int, default=11, help="repeats per timer; the median is kept (default 11)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gemm_timer_check.py: no CUDA GPU visible", file=sys.stderr)
        return 2
    rows = []
    print(f"{'shape':<30} {'sleep-queued us':>15} {'matmul-queued us':>16} {'profiler us':>11} "
          f"{'sleep/profiler':>14}")
    for key in SHAPES:
        fn = gemm_program(key, "cuda")
        queued_cuda_timer(fn, GEMM_CALLS)
        sleep = statistics.median(queued_cuda_timer(fn, GEMM_CALLS) for _ in range(args.repeats)) * 1e6
        heavy = statistics.median(matmul_queued_timer(fn, GEMM_CALLS) for _ in range(args.repeats)) * 1e6
        prof = profiled_kernel_s(fn, GEMM_CALLS) * 1e6
        rows.append({"shape": key, "sleep_queued_us": sleep, "matmul_queued_us": heavy, "profiler_us": prof})
        print(f"{key:<30} {sleep:>15.2f} {heavy:>16.2f} {prof:>11.2f} {sleep / prof:>14.2f}")
    args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                    "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
