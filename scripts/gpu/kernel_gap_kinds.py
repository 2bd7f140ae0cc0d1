"""The device's gap between kernels, on a stream and replayed from a CUDA graph, per kind of kernel (GPU only).

`llm-perf-opt hw gap` measures both gaps over small kernels of mixed kinds (llm_perf_opt.hardware.bench.gap_mix).
This script measures them for ONE kind at a time, and for the mix: 200 kernels queued behind twelve 8192^3 bf16
matmuls, three bursts traced with torch.profiler (bench.queued_trace, as hw gap does), and the same 200 kernels
captured in one CUDA graph, three replays traced (bench.graph_trace). It prints, per kind, the median gap
between consecutive small kernels (next start minus previous end, bench.small_kernel_gaps_us) with its 10th
and 90th percentiles, on the stream and in the graph, and the median kernel duration on the stream:

    PYTHONPATH=src python scripts/gpu/kernel_gap_kinds.py
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable

import torch

from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.bench import gap_mix, graph_trace, queued_trace, small_kernel_gaps_us


def kinds(device: str) -> dict[str, Callable[[], object]]:
    """Label -> a call launching one kernel of that kind (the mix: the next kernel of hw gap's mix)."""
    one = torch.zeros(1, device=device)
    t = torch.zeros(1 << 20, device=device)
    b = torch.randn(8, 512, 512, device=device, dtype=torch.bfloat16)
    s = torch.randn(4096, 1024, device=device)
    return {"1-element fp32 add": lambda: one.add_(1.0), "1M-element fp32 add": lambda: t.add_(1.0),
            "bf16 bmm 8x512x512": lambda: torch.bmm(b, b), "fp32 softmax 4096x1024": lambda: torch.softmax(s, -1),
            "hw gap's mix": gap_mix(device)}


def spread(gaps: list[float]) -> str:
    """'median (p10-p90) us' of gaps in us."""
    g = sorted(gaps)
    return f"{statistics.median(g):.2f} us ({g[len(g) // 10]:.2f}-{g[9 * len(g) // 10]:.2f})"


def main() -> int:
    if not torch.cuda.is_available():
        print("kernel_gap_kinds.py: no CUDA device", file=sys.stderr)
        return 2
    print("| kernel | stream gap (p10-p90) | CUDA-graph gap (p10-p90) | duration |\n|---|---:|---:|---:|")
    for label, fn in kinds("cuda").items():
        gaps, durations = small_kernel_gaps_us(queued_trace(fn, device="cuda", bursts=3))
        try:
            graph = spread(small_kernel_gaps_us(graph_trace(fn, device="cuda", repeats=3))[0])
        except UserError as exc:
            graph = f"not measured ({exc})"
        print(f"| {label} | {spread(gaps)} | {graph} | {statistics.median(durations):.2f} us |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
