#!/usr/bin/env python
"""One decode step with no host in the way: the step captured in a CUDA graph and replayed (CUDA GPU).

The what-if's ``--cuda-graphs decode`` rows (and ``--host-probe-us 0``) come from the timeline model alone:
the sum of each block's device time plus the gap between kernels replayed from a CUDA graph. This script
measures that figure for decode. It runs the profiler's own pass code on synthetic pages (``prefill``, then ``--steps`` greedy
``decode_step`` calls, random bf16 weights), captures the next decode step (n-gram ban, argmax, token and
mask appends, decoder forward, LM head) in a CUDA graph and times its replays with CUDA events. Every
replay repeats the same step over the same KV cache (``kv_len`` positions attended). The step is captured
with ``decode_step(pass_mask=False)``: the pages have one layout, so no row is padded and the mask changes
nothing, and without it SDPA attention makes no host sync (eager attention still builds a mask; its
capture is tried and its failure, if any, recorded).

For each attention implementation and batch it also times the same step run eagerly (host-bound). Only
once every step has been timed does it trace one eager step and three replays with torch.profiler
(kernels per step, the sum of their durations, the replay's span) and time the replays again: once a
process has run the profiler, its graph replays are slower. Writes one JSON record per (attention, batch),
after each timing and each trace (an interrupted run keeps what it measured; exit 130):

    PYTHONPATH=src python scripts/gpu/graph_decode.py --mode base --batches 1,4 --out graph-decode.json

``python scripts/analytical/host_figures.py graph graph-decode.json --calibration CAL`` sets the records
next to the timeline model's device-bound decode step at the same KV length (CPU only).
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
from attrs import evolve

from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.bench import device_trace
from llm_perf_opt.inputs.synthetic import synthetic_pages
from llm_perf_opt.models.deepseek_ocr import build_prompt, decode_step, prefill, preprocess_image
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.generation import DecodeState
from llm_perf_opt.models.deepseek_ocr.modeling import ATTN_IMPLEMENTATIONS, build_model
from llm_perf_opt.models.deepseek_ocr.prompt import DEFAULT_PROMPT
from llm_perf_opt.profiling.timers import host_probe_us
from llm_perf_opt.vocab import DEFAULT_NO_REPEAT_NGRAM, EXPERTS_IMPLEMENTATIONS

Snapshot = tuple[DecodeState, list[tuple[torch.Tensor, torch.Tensor]]]


def snapshot(state: DecodeState) -> Snapshot:
    """The state and its cache's per-layer K/V tensors, so that a step can be run again from here."""
    return evolve(state), [(layer.keys, layer.values) for layer in state.past_key_values.layers]


def restore(snap: Snapshot) -> DecodeState:
    """A state equal to the snapshot's (the cache's layers point at the saved K/V again)."""
    state, kv = snap
    for layer, (k, v) in zip(state.past_key_values.layers, kv, strict=True):
        layer.keys, layer.values = k, v
    return evolve(state)


#: kernels listed per trace, by their time per call
TOP_KERNELS = 12


def trace_spans(fn: Callable[[], object], reps: int) -> list[tuple[float, float, str]]:
    """(start us, end us, kernel name) of every device activity of ``reps`` calls of ``fn``, in start order
    (llm_perf_opt.hardware.bench.device_trace)."""
    def calls() -> None:
        for _ in range(reps):
            fn()

    return sorted((start, end, name) for name, start, end in device_trace(calls, device="cuda"))


def trace_figures(trace: list[tuple[float, float, str]], reps: int) -> dict[str, Any]:
    """Per call: device activities, the sum of their durations (ms), the span first start to last end (ms),
    and the :data:`TOP_KERNELS` kernel names of most time (``top``: name, launches and ms per call)."""
    if not trace:
        return {"kernels": 0.0, "kernel_sum_ms": 0.0, "span_ms": 0.0, "top": []}
    per: dict[str, list[float]] = {}
    for start, end, name in trace:
        per.setdefault(name, []).append(end - start)
    top = sorted(per.items(), key=lambda kv: -sum(kv[1]))[:TOP_KERNELS]
    return {"kernels": len(trace) / reps, "kernel_sum_ms": sum(e - s for s, e, _ in trace) / reps / 1e3,
            "span_ms": (trace[-1][1] - trace[0][0]) / reps / 1e3,
            "top": [{"name": name, "launches": len(d) / reps, "ms": sum(d) / reps / 1e3} for name, d in top]}


def timed_ms(fn: Callable[[], object], calls: int, sets: int) -> list[float]:
    """ms per call of ``fn``, one figure per set of ``calls`` calls timed with CUDA events from an idle device."""
    out = []
    for _ in range(sets):
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(calls):
            fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) / calls)
    return out


#: distinct synthetic pages drawn per batch: synthetic_pages cycles 3 categories over 2 paper sizes, so the
#: first 6 pages, repeated, have the layouts (and token counts) of synthetic_pages(batch) at any batch
DISTINCT_PAGES = 6


def batch_pages(mode: str, batch: int) -> list[Any]:
    """``batch`` preprocessed pages: the first :data:`DISTINCT_PAGES` synthetic pages, drawn once and cycled
    (drawing takes about 0.3 s a page; a decode step's time does not depend on the pixels)."""
    distinct = [preprocess_image(page.load(), mode) for page in synthetic_pages(min(batch, DISTINCT_PAGES))]
    return [distinct[i % len(distinct)] for i in range(batch)]


def measure(model: Any, pre: list[Any], mode: str, attention: str, experts: str, steps: int, replays: int,
            sets: int, ngram: int) -> tuple[dict[str, Any], Callable[[], None], Any]:
    """One record: eager and graph-replayed ms of the decode step after ``steps`` steps (see module doc) over
    the preprocessed pages ``pre`` (one batch), n-gram ban of size ``ngram`` (0: off), timed with CUDA events
    only; returns it with the eager step and the graph (None when the capture failed) for :func:`trace`,
    which must run after every timing (a profiler session slows later graph replays)."""
    prompt = build_prompt([p.layout for p in pre], DEFAULT_PROMPT)
    state = prefill(model, prompt, pre)
    for _ in range(steps):
        state = decode_step(model, state, fixed_length=True, pass_mask=False, no_repeat_ngram_size=ngram)
    snap = snapshot(state)
    rec: dict[str, Any] = {"mode": mode, "batch": len(pre), "attention": attention, "experts": experts,
                           "no_repeat_ngram_size": ngram, "prompt_length": state.prompt_length,
                           "steps_before": steps, "kv_len": state.prompt_length + steps + 1}

    def eager() -> None:
        decode_step(model, restore(snap), fixed_length=True, pass_mask=False, no_repeat_ngram_size=ngram)

    for _ in range(3):
        eager()
    rec["host_probe_add_us"] = host_probe_us("cuda")
    eager_ms = timed_ms(eager, 1, max(sets, 10))
    rec["eager_ms"] = statistics.median(eager_ms)
    rec["eager_ms_all"] = eager_ms
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            eager()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            decode_step(model, restore(snap), fixed_length=True, pass_mask=False, no_repeat_ngram_size=ngram)
    except Exception as exc:  # noqa: BLE001 - a failed capture is a result of the run, recorded as such
        torch.cuda.synchronize()
        rec["graph_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return rec, eager, None
    for _ in range(5):
        graph.replay()
    graph_ms = timed_ms(graph.replay, replays, sets)
    rec["graph_ms"] = statistics.median(graph_ms)
    rec["graph_ms_all"] = graph_ms
    return rec, eager, graph


def trace(rec: dict[str, Any], eager: Callable[[], None], graph: Any, replays: int, sets: int) -> None:
    """Add to ``rec`` the profiler figures of one eager step and of three replays, then the replays' time
    again, in a process that has now run the profiler (``graph_ms_traced_process``)."""
    rec["eager_trace"] = trace_figures(trace_spans(eager, 1), 1)
    if graph is None:
        return
    rec["graph_trace"] = trace_figures(trace_spans(graph.replay, 3), 3)
    after = timed_ms(graph.replay, replays, sets)
    rec["graph_ms_traced_process"] = statistics.median(after)


def _line(rec: dict[str, Any]) -> str:
    """The record in one line."""
    head = (f"{rec['mode']} b{rec['batch']} {rec['attention']}: kv_len {rec['kv_len']}; eager {rec['eager_ms']:.3f} ms "
            f"({rec['eager_trace']['kernels']:.0f} kernels, sum {rec['eager_trace']['kernel_sum_ms']:.3f} ms, "
            f"add_ probe {rec['host_probe_add_us']:.2f} us); ")
    if "graph_error" in rec:
        return head + f"capture failed: {rec['graph_error']}"
    g = rec["graph_trace"]
    gap = (rec["graph_ms"] - g["kernel_sum_ms"]) / g["kernels"] * 1e3 if g["kernels"] else float("nan")
    return head + (f"graph {rec['graph_ms']:.3f} ms before any trace, {rec['graph_ms_traced_process']:.3f} ms after "
                   f"({g['kernels']:.0f} kernels, sum {g['kernel_sum_ms']:.3f} ms; {gap:.2f} us between kernels)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="base", help="resolution mode of the synthetic pages (default base)")
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes (default 1,4)")
    parser.add_argument("--attn", default="sdpa,eager",
                        help=f"comma-separated attention implementations, of {', '.join(ATTN_IMPLEMENTATIONS)} "
                             "(default sdpa,eager)")
    parser.add_argument("--experts", default="grouped_mm", choices=EXPERTS_IMPLEMENTATIONS,
                        help="MoE experts implementation (default grouped_mm)")
    parser.add_argument("--steps", type=int, default=8, help="eager decode steps before the captured one (default 8)")
    parser.add_argument("--no-repeat-ngram-size", type=int, default=DEFAULT_NO_REPEAT_NGRAM, metavar="N",
                        help=f"n-gram ban of every step, 0 for none (default {DEFAULT_NO_REPEAT_NGRAM}, the "
                             "profiler's)")
    parser.add_argument("--replays", type=int, default=50, help="graph replays per timed set (default 50)")
    parser.add_argument("--sets", type=int, default=10, help="timed sets (default 10)")
    parser.add_argument("--out", type=Path, help="write the records as JSON here")
    args = parser.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",") if b]
        attns = [a for a in args.attn.split(",") if a]
    except ValueError:
        parser.error(f"--batches {args.batches!r}: not a comma-separated list of integers")
    if not batches or min(batches) < 1 or args.steps < 0 or args.replays < 1 or args.sets < 1 \
            or args.no_repeat_ngram_size < 0:
        parser.error("--batches must be positive integers, --steps and --no-repeat-ngram-size >= 0, --replays "
                     "and --sets >= 1")
    if bad := [a for a in attns if a not in ATTN_IMPLEMENTATIONS]:
        parser.error(f"--attn {','.join(bad)}: not one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    if args.out is not None and not args.out.parent.is_dir():
        parser.error(f"--out {args.out}: folder {args.out.parent} does not exist")
    if not torch.cuda.is_available():
        print("graph_decode.py: needs a CUDA GPU", file=sys.stderr)
        return 2
    records: list[dict[str, Any]] = []
    pending = []

    def save() -> None:
        """The records so far (timed ones before their traces) to --out."""
        if args.out is not None:
            args.out.write_text(json.dumps({"records": records}, indent=1) + "\n")

    try:
        models = {}
        pages: dict[int, list[Any]] = {}
        for attn in attns:  # every timing first: a profiler session slows the graph replays that follow it
            models[attn] = build_model(DeepseekOCRConfig.default(), device="cuda", dtype=torch.bfloat16,
                                       attn_implementation=attn, experts_implementation=args.experts)
            for b in batches:
                if b not in pages:
                    pages[b] = batch_pages(args.mode, b)
                rec, eager, graph = measure(models[attn], pages[b], args.mode, attn, args.experts, args.steps,
                                            args.replays, args.sets, args.no_repeat_ngram_size)
                records.append(rec)
                pending.append((rec, eager, graph))
                save()
                print(f"timed {args.mode} b{b} {attn}", flush=True)
        for rec, eager, graph in pending:
            trace(rec, eager, graph, args.replays, args.sets)
            save()
            print(_line(rec), flush=True)
    except UserError as exc:
        save()
        print(f"graph_decode.py: {exc}", file=sys.stderr)
        return 2
    except torch.cuda.OutOfMemoryError:
        save()
        print("graph_decode.py: out of device memory (fewer or smaller --batches, or one --attn)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        save()
        print(f"graph_decode.py: interrupted; {len(records)} records kept"
              + (f" in {args.out}" if args.out is not None else ""), file=sys.stderr)
        return 130
    return 0

if __name__ == "__main__":
    sys.exit(main())
