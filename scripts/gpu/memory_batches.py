#!/usr/bin/env python
"""Device memory of a whole pass per batch size, and the largest batch that runs, next to the analytic model.

The analytic model's memory footprint (weights + the largest stage's activation peak and the KV cache live in
it) decides what-if's ``fits`` column, ``max_batch_size`` and the unified report's "best batch that fits". This script
measures both on a CUDA GPU with the profiler's own pass (``ModelSession.run_pass``: preprocess, vision,
prefill, fixed-length decode; random bf16 weights): per mode and batch size the peak allocated and reserved
bytes of the pass (``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``, the allocator emptied
before each pass), and with ``--find-max`` the largest batch that runs without running out of memory (a search
that starts at the model's prediction and narrows the step between the largest batch that ran and the
smallest that did not). One page is repeated across the batch, so every page of a pass has one layout; the
no-repeat n-gram ban is off (its per-row loop would dominate large batches, and its [B, vocab] logits copy is
small next to SAM's attention scores).

Predictions use the catalogue's capacity of the GPU (what what-if and the unified report use) and the capacity
this process can use (``torch.cuda.mem_get_info``: the total minus what the CUDA context and other processes
hold before the model is built). The JSON is rewritten after every pass, so an interrupted or out-of-time
run keeps what it measured.

    PYTHONPATH=src python scripts/gpu/memory_batches.py --modes small base large gundam --batches 1 8 32 \\
        --find-max --out memory-batches.json
    PYTHONPATH=src python scripts/gpu/memory_batches.py --from memory-batches.json      (the summary, CPU)
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from typing import Any

import torch

from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.analytic.report import memory_footprint
from llm_perf_opt.cli import render_saved, run_guarded
from llm_perf_opt.data.analytic import OCRWorkloadProfile
from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.catalog import load_catalog
from llm_perf_opt.hardware.host_speed import gpu_uuid
from llm_perf_opt.inputs.pages import Page
from llm_perf_opt.inputs.synthetic import synthetic_pages
from llm_perf_opt.measure_script import add_measure_args, ready_out, write_json_atomic
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modes import MODES
from llm_perf_opt.models.deepseek_ocr.prompt import resolve_prompt
from llm_perf_opt.profiling.run import ALLOC_CONF_VARS
from llm_perf_opt.profiling.session import ModelSession, SessionSettings
from llm_perf_opt.profiling.timers import StageRecorder
from llm_perf_opt.vocab import DType

GB = 1e9
MIB = 2**20
#: the search stops after this many passes per mode (each pass near the limit takes seconds)
MAX_SEARCH_PASSES = 14


def predict(config: DeepseekOCRConfig, *, mode: str, page: tuple[int, int], text_tokens: int, batch: int,
            new_tokens: int, attention: str, dtype: str, capacities: dict[str, float]) -> dict[str, Any]:
    """The analytic footprint of one pass (bytes) and the largest batch under each capacity (bytes)."""
    wl = OCRWorkloadProfile.create(profile_id=f"{mode}-b{batch}", mode=mode, image_width_px=page[0],
                                   image_height_px=page[1], prompt_text_tokens=text_tokens,
                                   max_new_tokens=new_tokens, batch_size=batch, attention=attention, dtype=dtype)
    model = AnalyticModel(config, wl)
    mem = memory_footprint(model, None)
    return {"weights": mem.weights_bytes, "kv_cache": mem.kv_cache_bytes, "activation_peak": mem.activation_peak_bytes,
            "total": mem.total_bytes,
            "max_batch": {k: memory_footprint(model, cap).max_batch_size for k, cap in capacities.items()}}


def one_pass(session: ModelSession, page: Page, mode: str, batch: int, new_tokens: int) -> dict[str, Any]:
    """One pass of ``batch`` copies of ``page``: peak bytes, or ``ok: False`` when the device ran out of memory."""
    session.reconfigure(mode=mode, batch_size=batch, max_new_tokens=new_tokens)
    cuda = session.device.type == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()  # each pass starts from an empty cache, as a fresh process would
    t0 = time.perf_counter()
    row: dict[str, Any] = {"mode": mode, "batch": batch, "attention": session.settings.attn_implementation}
    oom = (torch.cuda.OutOfMemoryError,) if cuda else ()
    try:
        rec = session.run_pass([page] * batch, StageRecorder(session.device, nvtx=False), probes=False)
    except oom as exc:
        row.update(ok=False, error=str(exc).splitlines()[0][:200])
    else:
        row.update(ok=True, peak_allocated=rec.peak_memory_bytes,
                   peak_reserved=int(torch.cuda.max_memory_reserved(session.device)) if cuda else None,
                   text_tokens=(rec.prompt_tokens - rec.image_slots) // batch)
    row["seconds"] = time.perf_counter() - t0
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(session.device)
        row["outside_allocator"] = total - free - torch.cuda.memory_reserved(session.device)
    return row


def next_batch(ran: int, failed: int | None) -> int | None:
    """The next batch of a max-batch search from the largest batch that ran (``ran`` >= 1): 5% up while
    nothing failed, then halve the gap to the smallest that did not (``failed``); None when they are
    neighbours."""
    if failed is None:
        return max(ran + 1, math.ceil(ran * 1.05))
    if failed - ran <= 1:
        return None
    return (ran + failed) // 2


def summarize(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per measured pass: the prediction next to it (relative error of the total), from the saved file."""
    config = DeepseekOCRConfig.named(data["config"])
    caps = data["capacities"]
    text = {(r["mode"], r["attention"]): r["text_tokens"] for r in data["passes"] if r["ok"]}
    out = []
    for r in data["passes"]:
        key = (r["mode"], r["attention"])
        if key not in text:
            continue
        p = predict(config, mode=r["mode"], page=tuple(data["page"]), text_tokens=text[key], batch=r["batch"],
                    new_tokens=data["max_new_tokens"], attention=r["attention"], dtype=data["dtype"],
                    capacities=caps)
        row = {**r, "predicted": p}
        if r["ok"] and r.get("peak_allocated"):
            row["error"] = p["total"] / r["peak_allocated"] - 1
        out.append(row)
    return out


def max_batches(data: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per mode and attention: largest batch that ran, smallest that did not, and the predictions."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        k = f"{r['mode']} {r['attention']}"
        m = out.setdefault(k, {"ran": 0, "failed": None, "predicted": r["predicted"]["max_batch"]})
        if r["ok"]:
            m["ran"] = max(m["ran"], r["batch"])
        else:
            m["failed"] = r["batch"] if m["failed"] is None else min(m["failed"], r["batch"])
    return out


def render(data: dict[str, Any]) -> str:
    """The summary as text."""
    rows = summarize(data)
    caps = data["capacities"]
    lines = [f"memory per pass ({data['gpu']}, {data['gpu_uuid']}; torch {data['torch']}; "
             f"PYTORCH_CUDA_ALLOC_CONF={data.get('allocator') or '(unset)'}; page "
             f"{data['page'][0]}x{data['page'][1]}; {data['max_new_tokens']} new tokens; capacity: catalogue "
             f"{caps['catalogue'] / GB:.2f} GB, usable {caps['usable'] / GB:.2f} GB)",
             f"{'mode':<7} {'attention':<9} {'batch':>5} {'allocated GB':>12} {'reserved GB':>11} "
             f"{'predicted GB':>12} {'error':>7} {'gap MiB':>8} {'s':>5}"]
    for r in rows:
        if r["ok"]:
            alloc = r.get("peak_allocated")
            res = r.get("peak_reserved")
            err = f"{r['error']:+.1%}" if "error" in r else "-"
            # what the footprint leaves out: allocated minus predicted
            gap = f"{(alloc - r['predicted']['total']) / MIB:.1f}" if alloc else "-"
            lines.append(f"{r['mode']:<7} {r['attention']:<9} {r['batch']:>5} "
                         f"{alloc / GB if alloc else float('nan'):>12.3f} {res / GB if res else float('nan'):>11.3f} "
                         f"{r['predicted']['total'] / GB:>12.3f} {err:>7} {gap:>8} {r['seconds']:>5.1f}")
        else:
            lines.append(f"{r['mode']:<7} {r['attention']:<9} {r['batch']:>5} {'out of memory':>24} "
                         f"{r['predicted']['total'] / GB:>12.3f} {'':>7} {'':>8} {r['seconds']:>5.1f}")
    for k, m in max_batches(data, rows).items():
        found = (f"runs at {m['ran']}, not at {m['failed']}" if m["failed"] is not None
                 else f"runs at {m['ran']} (no failure seen)")
        lines.append(f"{k}: largest batch {found}; predicted {m['predicted']['catalogue']} (catalogue capacity), "
                     f"{m['predicted']['usable']} (usable capacity)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=["small", "base"], metavar="MODE",
                    help=f"resolution modes ({', '.join(MODES)}; default small base)")
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 8, 32], metavar="N",
                    help="batch sizes whose peak memory is measured per mode (default 1 8 32; may be empty with "
                         "--find-max, which then starts from one batch-1 pass)")
    ap.add_argument("--find-max", action="store_true",
                    help="per mode, also search the largest batch that runs (CUDA only)")
    ap.add_argument("--attention", nargs="+", choices=("eager", "sdpa"), default=["eager"],
                    help="attention implementations, one model each (default eager)")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="decode steps per pass (default 64)")
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="stop starting new passes after this many seconds (default 480); the file keeps what "
                         "ran")
    add_measure_args(ap, out_help="JSON file to write (rewritten after every pass)",
                     cpu_help="cpu (fp32, no memory figures: a check of the script only)")
    args = ap.parse_args(argv)
    if args.from_json is not None:
        print(render_saved(args.from_json, render))
        return 0
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        raise UserError(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if any(n < 1 for n in args.batches) or args.max_new_tokens < 1:
        raise UserError("--batches and --max-new-tokens must be >= 1")
    if args.budget_s <= 0:
        raise UserError(f"--budget-s {args.budget_s:g}: must be > 0 (seconds in which new passes may start)")
    if not args.batches and not args.find_max:
        raise UserError("nothing to measure: give --batches N... or --find-max")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU here")
    if args.find_max and args.device != "cuda":
        raise UserError("--find-max needs --device cuda (the CPU never runs out of device memory)")
    out_path = ready_out(args.out)  # before the measurement, so that a bad --out does not cost it
    torch.set_grad_enabled(False)
    config = DeepseekOCRConfig.named(args.config)  # ConfigError (a UserError) names a bad one
    dev = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    cuda = dev.type == "cuda"
    dtype = DType.BF16 if cuda else DType.FP32
    if cuda:
        torch.cuda.init()
        free, total = torch.cuda.mem_get_info(dev)
        # an uncatalogued GPU is one line (UnknownGpuError) before the model is built
        catalogue = float(load_catalog().resolve_device(torch.cuda.get_device_name(dev), total).memory_bytes)
        capacities = {"catalogue": catalogue, "usable": float(free)}
    else:
        total = 0
        capacities = {"catalogue": 0.0, "usable": 0.0}
    page = synthetic_pages(1)[0].cached()  # drawn once; the pass preprocesses every copy
    data: dict[str, Any] = {
        "config": args.config, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "gpu_uuid": gpu_uuid(dev), "allocator": ",".join(c for c in (os.environ.get(v, "") for v in ALLOC_CONF_VARS) if c), "memory_total": total, "capacities": capacities,
        "dtype": dtype.value, "page": [page.width, page.height], "max_new_tokens": args.max_new_tokens,
        "passes": []}
    started = time.perf_counter()

    def save() -> None:
        write_json_atomic(out_path, data)

    def measure(session: ModelSession, mode: str, batch: int) -> dict[str, Any]:
        row = one_pass(session, page, mode, batch, args.max_new_tokens)
        data["passes"].append(row)
        save()
        state = (f"peak {row['peak_allocated'] / GB:.2f} GB" if row["ok"] and row["peak_allocated"]
                 else "ran" if row["ok"] else "out of memory")
        print(f"{mode} {session.settings.attn_implementation} b{batch}: {state} ({row['seconds']:.1f} s)",
              file=sys.stderr, flush=True)
        return row

    def in_budget() -> bool:
        return time.perf_counter() - started < args.budget_s

    prompt = resolve_prompt("document")
    try:
        for attention in args.attention:
            session = ModelSession(SessionSettings(config_name=args.config, mode=args.modes[0], prompt=prompt,
                                                   dtype=dtype, attn_implementation=attention,
                                                   device=str(dev), no_repeat_ngram_size=0), dev)
            for mode in args.modes:
                tokens: int | None = None  # text tokens per page, from the first pass that runs
                ran, failed = 0, None
                for n in args.batches:
                    if not in_budget():
                        break
                    row = measure(session, mode, n)
                    if row["ok"]:
                        ran, tokens = max(ran, n), row["text_tokens"]
                    else:
                        failed = n if failed is None else min(failed, n)
                if not args.find_max or not in_budget():
                    continue
                if tokens is None:  # no batch ran yet: a batch-1 pass gives the prompt length
                    row = measure(session, mode, 1)
                    if not row["ok"]:
                        continue
                    ran, tokens = 1, row["text_tokens"]
                guess = predict(config, mode=mode, page=(page.width, page.height), text_tokens=tokens, batch=1,
                                new_tokens=args.max_new_tokens, attention=attention, dtype=dtype.value,
                                capacities=capacities)["max_batch"]["usable"]
                n = guess if guess and guess > ran and (failed is None or guess < failed) else next_batch(
                    ran, failed)
                for _ in range(MAX_SEARCH_PASSES):
                    if n is None or not in_budget():
                        break
                    row = measure(session, mode, n)
                    if row["ok"]:
                        ran = max(ran, n)
                    else:
                        failed = n if failed is None else min(failed, n)
                    n = next_batch(ran, failed)
            del session
    except KeyboardInterrupt:
        print(f"interrupted: {out_path} keeps the {len(data['passes'])} passes taken", file=sys.stderr)
    save()
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, "memory_batches.py"))
