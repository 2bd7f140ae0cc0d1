"""Does the stream gap between kernels depend on the profiler session it is traced in? (GPU only.)

`llm-perf-opt hw gap` traces hw gap's mix of small kernels (llm_perf_opt.hardware.bench.gap_mix) queued behind
matmuls, in the process's first torch.profiler session. This script, in one process:

1. times the mix with CUDA events and no profiler: device us per kernel (its duration plus the gap after it),
   from ``GAP_KERNELS`` calls queued behind matmuls (gemms.queued_cuda_timer), the median of ROUNDS timings;
2. traces the mix SESSIONS times, each in its own profiler session (bench.queued_trace, hw gap's own
   measurement), and prints per session the median and mean gap, the mean kernel duration and their sum;
3. times the mix with events again.

The events see no profiler, so "events minus the traced mean duration" is the mean gap of an untraced run, which
is what the timeline model's kernel_gap_s stands for:

    PYTHONPATH=src python scripts/gpu/gap_sessions.py [--sessions 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.bench import (
    GAP_BUSY_MATMULS,
    GAP_KERNELS,
    GAP_QUEUED_MAX_US,
    gap_mix,
    queued_trace,
    small_kernel_gaps_us,
)
from llm_perf_opt.hardware.gemms import queued_cuda_timer


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def event_us_per_kernel(device: str, rounds: int) -> float:
    """Median over ``rounds`` of the device us per kernel of ``GAP_KERNELS`` mix kernels queued behind
    ``GAP_BUSY_MATMULS`` 8192^3 bf16 matmuls, timed by CUDA events around the small kernels alone."""
    import torch

    launch = gap_mix(device)
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)

    def busy() -> None:
        for _ in range(GAP_BUSY_MATMULS):
            a @ a

    times = [queued_cuda_timer(launch, GAP_KERNELS, keep_busy=busy) for _ in range(rounds + 1)]
    return statistics.median(times[1:]) * 1e6  # the first round warms up


def session_row(index: int, device: str) -> tuple[str, float]:
    """One traced session of the mix (three bursts): its table row and its mean kernel duration (us)."""
    gaps, durations = small_kernel_gaps_us(queued_trace(gap_mix(device), device=device, bursts=3))
    queued = [g for g in gaps if g <= GAP_QUEUED_MAX_US]
    if not queued or not durations:
        return f"| {index} | no queued small kernels in the trace | | | |", float("nan")
    mean_dur = statistics.fmean(durations)
    row = (f"| {index} | {statistics.median(queued):.3f} | {statistics.fmean(queued):.3f} | {mean_dur:.3f} | "
           f"{statistics.fmean(queued) + mean_dur:.3f} |")
    return row, mean_dur


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=_positive, default=4, help="profiler sessions traced in a row (4)")
    parser.add_argument("--rounds", type=_positive, default=5, help="event timings before and after, median (5)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gap_sessions.py: no CUDA device", file=sys.stderr)
        return 2
    try:
        return _run(args.sessions, args.rounds)
    except UserError as exc:  # the host did not get ahead of the device: one line, what was printed stays
        print(f"gap_sessions.py: {exc}", file=sys.stderr)
        return 2


def _run(sessions: int, rounds: int) -> int:
    """Events, ``sessions`` traced sessions, events again; the table and the untraced gap on stdout."""
    before = event_us_per_kernel("cuda", rounds)
    print(f"events, no profiler yet: {before:.3f} us per mix kernel (duration + gap)", flush=True)
    print("| session | median gap us | mean gap us | mean duration us | mean gap + duration us |\n"
          "|---:|---:|---:|---:|---:|", flush=True)
    durations = []
    for i in range(1, sessions + 1):
        row, dur = session_row(i, "cuda")
        durations.append(dur)
        print(row, flush=True)
    after = event_us_per_kernel("cuda", rounds)
    print(f"events, after the sessions: {after:.3f} us per mix kernel (duration + gap)")
    measured = [d for d in durations if d == d]
    if not measured:
        raise UserError("no session traced queued small kernels: no untraced gap to give")
    dur = statistics.fmean(measured)
    print(f"untraced mean gap (events less the traced mean duration {dur:.3f} us): before {before - dur:.3f} us, "
          f"after {after - dur:.3f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
