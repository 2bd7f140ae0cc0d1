#!/usr/bin/env python
"""Does the host's cost of issuing a kernel depend on the kernel's own device time? (CUDA GPU)

The timeline model charges the host a fixed cost per kernel of a stage. This measures, for one op at
several sizes (an in-place elementwise multiply of N fp32 elements, and a bf16 [T, 1280] x [1280, 1280]
matmul at T tokens), with ``--ops`` calls issued back to back:

* host us/op, idle start: the host's time to issue the calls, the device idle when the loop starts;
* host us/op, busy start: the same, queued behind a sleep kernel (the device busy the whole loop);
* device us/op: CUDA events around the calls queued behind a sleep kernel (the device's own time).

Sizes are interleaved over ``--rounds`` rounds so that a drift of the host's speed falls on all alike;
figures are medians over rounds. If the host cost were a constant per kernel, both host columns would
be flat across sizes.

    PYTHONPATH=src python scripts/gpu/launch_cost_check.py --out launch-cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: fp32 elements of the elementwise op
ELEMENTWISE_SIZES = (1, 4096, 65536, 262144, 1 << 20, 1 << 22, 1 << 24)
#: token counts of the matmul (1 = a decode row, 282 / 1128 = Base b1 / b4 prefill)
MATMUL_TOKENS = (1, 282, 1128, 4512)
#: hidden size of the matmul (the DeepSeek-OCR decoder's hidden size, config.json)
HIDDEN = 1280
#: sleep kernel cycles queued before the busy-start and device timings (~10-20 ms at H100/H200 clocks)
SLEEP_CYCLES = 20_000_000


def programs() -> list[tuple[str, Callable[[], Any]]]:
    """(label, one call) per op and size, tensors allocated once."""
    out: list[tuple[str, Callable[[], Any]]] = []
    for n in ELEMENTWISE_SIZES:
        x = torch.ones(n, device="cuda")
        out.append((f"mul_ fp32 N={n}", lambda x=x: x.mul_(1.0)))
    w = torch.randn(HIDDEN, HIDDEN, device="cuda", dtype=torch.bfloat16)
    for t in MATMUL_TOKENS:
        a = torch.randn(t, HIDDEN, device="cuda", dtype=torch.bfloat16)
        out.append((f"matmul bf16 T={t}", lambda a=a: torch.matmul(a, w)))
    return out


def host_us(fn: Callable[[], Any], ops: int, busy: bool) -> float:
    """Host us per call of ``ops`` calls issued back to back (device idle or busy at the start)."""
    torch.cuda.synchronize()
    if busy:
        torch.cuda._sleep(SLEEP_CYCLES)
    t0 = time.perf_counter()
    for _ in range(ops):
        fn()
    dt = time.perf_counter() - t0
    torch.cuda.synchronize()
    return dt / ops * 1e6


def device_us(fn: Callable[[], Any], ops: int) -> float:
    """Device us per call: CUDA events around ``ops`` calls queued behind a sleep kernel."""
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    torch.cuda._sleep(SLEEP_CYCLES)
    e0.record()
    for _ in range(ops):
        fn()
    e1.record()
    torch.cuda.synchronize()
    return e0.elapsed_time(e1) / ops * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=100, help="calls issued back to back per timing (default 100)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds; medians over them (default 9)")
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    args = parser.parse_args(argv)
    if args.ops < 1 or args.rounds < 1:
        parser.error("--ops and --rounds must be >= 1")
    if args.out is not None and not args.out.parent.is_dir():
        parser.error(f"--out {args.out}: folder {args.out.parent} does not exist")
    if not torch.cuda.is_available():
        print("launch_cost_check.py: needs a CUDA GPU", file=sys.stderr)
        return 2
    progs = programs()
    for _, fn in progs:  # warm-up (cuBLAS handles, kernels loaded)
        for _ in range(3):
            fn()
    samples: dict[str, dict[str, list[float]]] = {k: {"idle": [], "busy": [], "device": []} for k, _ in progs}
    for _ in range(args.rounds):
        for label, fn in progs:
            samples[label]["idle"].append(host_us(fn, args.ops, busy=False))
            samples[label]["busy"].append(host_us(fn, args.ops, busy=True))
            samples[label]["device"].append(device_us(fn, args.ops))
    rows = []
    print(f"{'op':<26} {'host us idle':>13} {'host us busy':>13} {'device us':>10}   (medians of {args.rounds}, "
          f"{args.ops} calls each)")
    for label, _ in progs:
        s = samples[label]
        row = {"op": label, **{f"{k}_us": statistics.median(v) for k, v in s.items()},
               **{f"{k}_samples_us": v for k, v in s.items()}}
        rows.append(row)
        print(f"{label:<26} {row['idle_us']:13.2f} {row['busy_us']:13.2f} {row['device_us']:10.2f}")
    if args.out is not None:
        args.out.write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                                        "ops": args.ops, "rounds": args.rounds, "rows": rows}, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
