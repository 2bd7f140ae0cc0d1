#!/usr/bin/env python
"""Kernel census: per stage and aten operator, the calls, device kernels and host time of one pass.

For each workload (mode x batch) it runs the project's model (random weights) through
``ModelSession.run_pass`` twice as warm-up, then once under torch.profiler with the stage
ranges, and writes, per stage and operator name: calls, device kernels (and memcpy/memset)
launched directly by those calls with their names and the operators that called them, self
CPU us and self device us. Decode
values are per decoder forward. This is the data the analytic kernel counts are checked
against (the dispatch meter counts one kernel per tensor-producing aten call).

    PYTHONPATH=src python scripts/gpu/kernel_census.py --out census.json \
        [--workload base:1 --workload small:1 ...] [--new-tokens 4] [--config default] [--device cuda] \
        [--detail vision.sam] [--no-repeat-ngram-size 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from llm_perf_opt.errors import UserError
from llm_perf_opt.inputs.synthetic import synthetic_pages
from llm_perf_opt.models.deepseek_ocr import DEFAULT_PROMPT
from llm_perf_opt.profiling.operators import capture_from_events, stage_of
from llm_perf_opt.profiling.session import ModelSession, SessionSettings, resolve_device
from llm_perf_opt.profiling.timers import StageRecorder
from llm_perf_opt.vocab import DEFAULT_NO_REPEAT_NGRAM


def _workload(text: str) -> tuple[str, int]:
    mode, _, batch = text.partition(":")
    try:
        return mode, int(batch or "1")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--workload {text!r}: expected MODE:BATCH, e.g. base:4") from exc


def census_of(events: list[Any], forwards: int, detail: set[str] | None = None,
              details: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """stage -> op -> {calls, kernels, self_cpu_us, self_device_us, kernel_names}; decode divided by
    ``forwards``. Uses the project's event flattening so the stages are those of the operator table.
    For the stages in ``detail``, ``details[stage]`` receives the kernels grouped by (operator, callers,
    input shapes, kernel name): calls and device us (per pass, not divided), largest total first."""
    cpu = [e for e in events if e.device_type == DeviceType.CPU and not getattr(e, "is_async", False)]
    cpu.sort(key=lambda e: (e.time_range.start, -(e.time_range.end - e.time_range.start)))
    capture = capture_from_events(events)
    if len(capture.events) != len(cpu):
        raise RuntimeError("event flattening changed: census and capture disagree on the CPU events")
    stages = stage_of(capture)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    grouped: dict[str, dict[tuple[str, str, str, str], list[float]]] = {}
    for ev, op, stage in zip(cpu, capture.events, stages, strict=True):
        if op.is_range:
            continue
        row = out.setdefault(stage, {}).setdefault(op.name, {"calls": 0.0, "kernels": 0.0, "self_cpu_us": 0.0,
                                                              "self_device_us": 0.0, "kernel_names": Counter()})
        row["calls"] += 1
        row["kernels"] += op.kernel_count
        row["self_cpu_us"] += op.self_cpu_us
        row["self_device_us"] += op.self_device_us
        for k in getattr(ev, "kernels", []):
            row["kernel_names"][str(k.name)[:120]] += 1
        if op.kernel_count:
            chain: list[str] = []
            parent = op.parent
            while parent is not None and len(chain) < 4 and not capture.events[parent].is_range:
                chain.append(capture.events[parent].name)
                parent = capture.events[parent].parent
            row.setdefault("callers", Counter())[" <- ".join(chain) or "(stage)"] += op.kernel_count
            if detail and stage in detail and details is not None:
                shapes = str(getattr(ev, "input_shapes", ""))[:160]
                for k in getattr(ev, "kernels", []):
                    group = (op.name, " <- ".join(chain), shapes, str(k.name)[:90])
                    acc = grouped.setdefault(stage, {}).setdefault(group, [0, 0.0])
                    acc[0] += 1
                    acc[1] += float(k.duration)
    for stage, ops in out.items():
        div = max(1, forwards) if stage == "decode" else 1
        for row in ops.values():
            for key in ("calls", "kernels", "self_cpu_us", "self_device_us"):
                row[key] /= div
            row["kernel_names"] = {k: v / div for k, v in row["kernel_names"].most_common(8)}
            if "callers" in row:
                row["callers"] = {k: v / div for k, v in row["callers"].most_common(12)}
    if details is not None:
        for stage, groups in grouped.items():
            details[stage] = [{"op": g[0], "callers": g[1], "input_shapes": g[2], "kernel": g[3],
                               "launches": int(v[0]), "device_us": round(v[1], 1)}
                              for g, v in sorted(groups.items(), key=lambda kv: -kv[1][1])][:80]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--workload", type=_workload, action="append", default=None, metavar="MODE:BATCH",
                        help="resolution mode and pages per pass (repeatable; default base:1 small:1 base:4 "
                             "gundam:1)")
    parser.add_argument("--new-tokens", type=int, default=4, help="decode steps of the profiled pass (default 4)")
    parser.add_argument("--config", default="default", help="model config: default | tiny | config.json path")
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--no-repeat-ngram-size", type=int, default=DEFAULT_NO_REPEAT_NGRAM, metavar="N",
                        help=f"greedy decoding's n-gram ban (default {DEFAULT_NO_REPEAT_NGRAM}, the profiler's; 0: off)")
    parser.add_argument("--detail", action="append", default=[], metavar="STAGE",
                        help="also list this stage's kernels grouped by operator, callers, input shapes and "
                             "kernel name with their device time (repeatable; records shapes)")
    args = parser.parse_args(argv)
    workloads = args.workload or [("base", 1), ("small", 1), ("base", 4), ("gundam", 1)]
    try:
        return _run(args, workloads)
    except UserError as exc:
        print(f"kernel_census.py: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, workloads: list[tuple[str, int]]) -> int:
    if args.new_tokens < 1:
        raise UserError(f"--new-tokens {args.new_tokens}: must be >= 1")
    if args.no_repeat_ngram_size < 0:
        raise UserError(f"--no-repeat-ngram-size {args.no_repeat_ngram_size}: must be >= 0")
    device = resolve_device(args.device)
    session: ModelSession | None = None
    result: dict[str, Any] = {"torch": torch.__version__, "device": str(device),
                              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                              "new_tokens": args.new_tokens, "no_repeat_ngram_size": args.no_repeat_ngram_size,
                              "workloads": {}}
    for mode, batch in workloads:
        settings = SessionSettings(config_name=args.config, mode=mode, prompt=DEFAULT_PROMPT,
                                   max_new_tokens=args.new_tokens, batch_size=batch, device=str(device),
                                   no_repeat_ngram_size=args.no_repeat_ngram_size)
        if session is None:
            session = ModelSession(settings, device)
        else:
            session.settings = settings
        pages = synthetic_pages(batch)
        for _ in range(2):
            session.run_pass(pages, StageRecorder(device, nvtx=False, timing=False))
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities, record_shapes=bool(args.detail)) as prof:
            rec = session.run_pass(pages, StageRecorder(device, nvtx=False, record_function=True, timing=False))
        key = f"{mode}:{batch}"
        details: dict[str, list[dict[str, Any]]] = {}
        result["workloads"][key] = {"decode_forwards": rec.decode_forwards,
                                    "stages": census_of(list(prof.events()), rec.decode_forwards,
                                                        set(args.detail), details)}
        if args.detail:
            result["workloads"][key]["kernel_detail"] = details
        totals = {s: round(sum(r["kernels"] for r in ops.values()), 1)
                  for s, ops in result["workloads"][key]["stages"].items()}
        print(f"{key}: kernels per stage {totals}", file=sys.stderr)
        # written after every workload: an interrupted census keeps the workloads already counted
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
