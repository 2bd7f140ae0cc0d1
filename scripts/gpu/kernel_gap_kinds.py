"""The device's gap between kernels queued back to back, for kernels of several kinds and sizes (GPU only).

`llm-perf-opt hw gap` measures the gap between small kernels of mixed kinds. This script queues 200
kernels of ONE kind at a time behind twelve 8192^3 bf16 matmuls and traces three bursts with torch.profiler
(llm_perf_opt.hardware.bench.queued_trace, as hw gap does). It prints, per kind, the median gap (next start
minus previous end, llm_perf_opt.hardware.bench.queued_gaps_us), its 10th and 90th percentiles and the
median kernel duration:

    PYTHONPATH=src python scripts/gpu/kernel_gap_kinds.py
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable

import torch

from llm_perf_opt.hardware.bench import queued_gaps_us, queued_trace


def kinds(device: str) -> dict[str, Callable[[], object]]:
    """Label -> one call launching one kernel of that kind."""
    t = torch.zeros(1 << 20, device=device)
    b = torch.randn(8, 512, 512, device=device, dtype=torch.bfloat16)
    s = torch.randn(4096, 1024, device=device)
    return {"1M-element fp32 add": lambda: t.add_(1.0), "bf16 bmm 8x512x512": lambda: torch.bmm(b, b),
            "fp32 softmax 4096x1024": lambda: torch.softmax(s, -1)}


def main() -> int:
    if not torch.cuda.is_available():
        print("kernel_gap_kinds.py: no CUDA device", file=sys.stderr)
        return 2
    print("| kernel | gap (median) | gap (p10-p90) | duration |\n|---|---:|---:|---:|")
    for label, fn in kinds("cuda").items():
        gaps, durations = queued_gaps_us(queued_trace(fn, device="cuda", bursts=3))
        g = sorted(gaps)
        print(f"| {label} | {statistics.median(g):.2f} us | {g[len(g) // 10]:.2f}-{g[9 * len(g) // 10]:.2f} us | "
              f"{statistics.median(durations):.2f} us |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
