#!/usr/bin/env python
"""Device memory the GPU libraries keep after their first call: cuBLAS and cuBLASLt workspaces, measured alone.

The analytic footprint is within 0.7% under every measured pass's ``max_memory_allocated``, and what it leaves
out is one constant per allocator setting (33.4 MiB with expandable segments on the H200,
``memory_batches.py --from``; docs/results-h200.md sections 28-29). PyTorch draws the cuBLAS workspace from its
caching allocator, so a library workspace is the likely constant. This script measures each candidate in a
fresh process: after CUDA is initialised and the inputs are allocated, it runs one call of each kind, frees
its result, synchronises and records ``torch.cuda.memory_allocated`` and ``memory_reserved``; what an
allocation kept beyond the freed result is the library's. Steps, in order (bf16 [N, N] operands, N = --size):
a plain matmul (cuBLAS, default stream), a linear with bias (addmm: cuBLASLt), an fp32 matmul, a batched
matmul, and a matmul on a second stream (a workspace per stream). The total over the default-stream steps is
what one model pass on one stream keeps.

    PYTHONPATH=src python scripts/gpu/library_workspace.py --out workspace.json      (CUDA GPU, seconds)
    PYTHONPATH=src python scripts/gpu/library_workspace.py --from workspace.json     (the summary, CPU)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from llm_perf_opt.cli import render_saved, run_guarded
from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.host_speed import gpu_uuid
from llm_perf_opt.measure_script import ready_out, write_json_atomic
from llm_perf_opt.profiling.run import ALLOC_CONF_VARS

MIB = 2**20
#: side of the [N, N] operands by default (2 MiB per bf16 operand)
DEFAULT_SIZE = 1024
#: steps on the default stream, in order; "second stream" runs last on a new stream
STEPS = ("bf16 matmul", "bf16 linear with bias", "fp32 matmul", "bf16 batched matmul", "bf16 matmul, second stream")


def measure(size: int, device: torch.device) -> list[dict[str, Any]]:
    """One row per step: bytes allocated and reserved after it (its result freed) and the deltas over the state
    before it. ``size``: the side N of the [N, N] operands."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    bias = torch.randn(size, device=device, dtype=torch.bfloat16)
    a32, b32 = a.float(), b.float()
    a3, b3 = a.view(4, size // 4, size), b.view(4, size, size // 4)
    side = torch.cuda.Stream(device)
    calls: dict[str, Callable[[], torch.Tensor]] = {
        "bf16 matmul": lambda: a @ b,
        "bf16 linear with bias": lambda: torch.nn.functional.linear(a, b, bias),
        "fp32 matmul": lambda: a32 @ b32,
        "bf16 batched matmul": lambda: torch.bmm(a3, b3),
    }

    def on_side() -> torch.Tensor:
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            out = a @ b
        torch.cuda.current_stream(device).wait_stream(side)
        return out

    calls["bf16 matmul, second stream"] = on_side
    torch.cuda.synchronize(device)
    rows = []
    for step in STEPS:
        before = (torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device))
        out = calls[step]()
        torch.cuda.synchronize(device)
        del out
        after = (torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device))
        rows.append({"step": step, "allocated": after[0], "reserved": after[1],
                     "allocated_delta": after[0] - before[0], "reserved_delta": after[1] - before[1]})
    return rows


def render(data: dict[str, Any]) -> str:
    """The summary as text, from the rows alone (MiB = 2**20 bytes)."""
    lines = [f"library workspaces ({data['gpu']}, {data['gpu_uuid']}; torch {data['torch']}, CUDA {data['cuda']}; "
             f"CUBLAS_WORKSPACE_CONFIG={data.get('cublas_workspace_config') or '(unset)'}; "
             f"PYTORCH_CUDA_ALLOC_CONF={data.get('allocator') or '(unset)'}; operands {data['size']}x{data['size']})",
             f"{'step':<28} {'kept MiB':>9} {'reserved +MiB':>13}"]
    one_stream = 0
    for r in data["steps"]:
        lines.append(f"{r['step']:<28} {r['allocated_delta'] / MIB:>9.2f} {r['reserved_delta'] / MIB:>13.2f}")
        if r["step"] != STEPS[-1]:
            one_stream += r["allocated_delta"]
    lines.append(f"kept on the default stream (one model pass): {one_stream / MIB:.2f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=None, metavar="N",
                    help=f"side of the [N, N] operands (default {DEFAULT_SIZE}; a multiple of 4)")
    ap.add_argument("--out", type=Path, help="JSON file to write; required to measure")
    ap.add_argument("--from", dest="from_json", type=Path, metavar="FILE",
                    help="print the summary of a JSON this script wrote (recomputed from the file; no GPU)")
    args = ap.parse_args(argv)
    if args.from_json is not None:
        given = [flag for flag, value in (("--out", args.out), ("--size", args.size)) if value is not None]
        if given:
            raise UserError(f"--from summarizes a saved file; {' and '.join(given)} would measure (give one or the other)")
        print(render_saved(args.from_json, render))
        return 0
    size = DEFAULT_SIZE if args.size is None else args.size
    if size < 4 or size % 4:
        raise UserError(f"--size {size}: must be a positive multiple of 4")
    if not torch.cuda.is_available():
        raise UserError("no CUDA GPU here: the workspaces are device memory (--from FILE summarizes a saved run)")
    out_path = ready_out(args.out)
    dev = torch.device("cuda", 0)
    torch.cuda.init()
    rows = measure(size, dev)
    data = {"gpu": torch.cuda.get_device_name(dev), "gpu_uuid": gpu_uuid(dev), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ""),
            "allocator": ",".join(c for c in (os.environ.get(v, "") for v in ALLOC_CONF_VARS) if c),
            "size": size, "steps": rows}
    write_json_atomic(out_path, data)
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, "library_workspace.py"))
