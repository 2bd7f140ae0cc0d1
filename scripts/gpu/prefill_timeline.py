#!/usr/bin/env python
"""Where the host and the device are during a prefill and a few decode steps (CUDA GPU).

Runs the profiler's own pass code (``prefill`` and ``decode_step`` of the executable model, random bf16
weights, the session's attention and experts implementations) on synthetic white pages and marks, on
entry and exit of every stage range and of every module under the decoder down to ``--depth``, the host
clock (``time.perf_counter``) and a CUDA event. With both clocks zeroed on one synchronised instant:

* ``lag`` = device time - host time of a mark: the device backlog when the host got there (about the
  launch latency, ~0.01 ms, when the device waits for the host; larger when the host runs ahead);
* a module's host ms (exit - entry on the host) and device ms (exit - entry on the device).

A second, untimed pass runs under ``torch.cuda.set_sync_debug_mode("warn")`` and counts every
synchronising CUDA call by the innermost frame of this project or of transformers that made it.

    PYTHONPATH=src python scripts/gpu/prefill_timeline.py --mode base --batches 1,4 --out prefill-timeline.json

Prints, per batch: the language-model prefill's wall, host and kernel time, the backlog at the start
and end of each decoder layer, the host/device ms per module class, and the synchronising calls.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from llm_perf_opt.errors import UserError
from llm_perf_opt.models.deepseek_ocr import build_prompt, decode_step, prefill, preprocess_image
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modeling import build_model
from llm_perf_opt.models.deepseek_ocr.prompt import DEFAULT_PROMPT
from llm_perf_opt.profiling.timers import host_probe_us
from llm_perf_opt.vocab import EXPERTS_IMPLEMENTATIONS, Stage

#: page size of the synthetic pages (A4 at 150 dpi, as the sample pages)
PAGE_SIZE = (1240, 1754)


class Marks:
    """(name, host perf_counter s, CUDA event) in call order, zeroed on :meth:`start`."""

    def __init__(self) -> None:
        self.items: list[tuple[str, float, torch.cuda.Event]] = []
        self.t0 = 0.0
        self.e0 = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self.items.clear()
        torch.cuda.synchronize()
        self.e0.record()
        torch.cuda.synchronize()
        self.t0 = time.perf_counter()

    def mark(self, name: str) -> None:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        self.items.append((name, time.perf_counter(), ev))

    def collect(self) -> list[dict[str, Any]]:
        """[{name, host_ms, device_ms, lag_ms}] in call order (device synchronised first)."""
        torch.cuda.synchronize()
        out = []
        for name, t, ev in self.items:
            host = (t - self.t0) * 1e3
            dev = self.e0.elapsed_time(ev)
            out.append({"name": name, "host_ms": host, "device_ms": dev, "lag_ms": dev - host})
        return out


def hook_modules(root: torch.nn.Module, prefix: str, depth: int, marks: Marks) -> list[Any]:
    """Entry/exit marks on every module under ``root`` down to ``depth`` levels (names: prefix.path)."""
    handles = []
    for path, mod in root.named_modules():
        level = 0 if not path else path.count(".") + 1
        if level > depth:
            continue
        name = f"{prefix}.{path}" if path else prefix
        label = f"{name}:{type(mod).__name__}"
        handles.append(mod.register_forward_pre_hook(lambda _m, _a, label=label: marks.mark(f"enter {label}")))
        handles.append(mod.register_forward_hook(lambda _m, _a, _o, label=label: marks.mark(f"exit {label}")))
    return handles


def stage_scope(marks: Marks) -> Any:
    @contextlib.contextmanager
    def scope(name: str) -> Iterator[None]:
        marks.mark(f"enter stage:{name}")
        try:
            yield
        finally:
            marks.mark(f"exit stage:{name}")
    return scope


def _frame(fr: traceback.FrameSummary) -> str:
    """file:line function: code, the file relative to its package root (or its last two path parts)."""
    short = fr.filename.split("site-packages/")[-1].split("src/")[-1]
    if short.startswith("/"):
        short = "/".join(Path(short).parts[-2:])
    return f"{short}:{fr.lineno} {fr.name}: {(fr.line or '').strip()[:80]}"


def sync_sites(fn: Any) -> Counter[str]:
    """Synchronising CUDA calls of one call of ``fn``, by the innermost frame of this project or of
    transformers that made them (file:line function)."""
    sites: Counter[str] = Counter()
    old = warnings.showwarning
    active = False  # count only what fn() makes (switching the mode may warn by itself)

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if "synchronizing" not in str(message):
            return old(message, category, filename, lineno, file, line)
        if not active:
            return None
        frames = traceback.extract_stack()[:-1]
        site = ""
        for fr in reversed(frames):
            if ("llm_perf_opt" in fr.filename or "transformers" in fr.filename) and "prefill_timeline" not in fr.filename:
                site = _frame(fr)
                break
        if not site:  # made outside the model's code: the innermost two frames
            site = "other: " + " <- ".join(_frame(fr) for fr in reversed(frames[-2:]))
        sites[site] += 1
        return None

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            torch.cuda.set_sync_debug_mode("warn")
            try:
                active = True
                fn()
            finally:
                active = False
                torch.cuda.set_sync_debug_mode(0)
                torch.cuda.synchronize()
    finally:
        warnings.showwarning = old
    return sites


def between(rows: list[dict[str, Any]], first: str, last: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first mark named ``first`` and the first mark named ``last`` after it."""
    i = next(i for i, r in enumerate(rows) if r["name"] == first)
    return rows[i], next(r for r in rows[i:] if r["name"] == last)


def per_class(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Host and device ms per module class, summed over entry/exit pairs (nested modules counted in
    their parents too)."""
    open_: dict[str, list[dict[str, Any]]] = defaultdict(list)
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "host_ms": 0.0, "device_ms": 0.0})
    for r in rows:
        kind, _, label = r["name"].partition(" ")
        if kind == "enter":
            open_[label].append(r)
        elif open_[label]:
            e = open_[label].pop()
            cls = label.split(":", 1)[1]
            o = out[cls]
            o["calls"] += 1
            o["host_ms"] += r["host_ms"] - e["host_ms"]
            o["device_ms"] += r["device_ms"] - e["device_ms"]
    return dict(out)


def run_batches(model: Any, mode: str, batches: list[int], reps: int, steps: int, depth: int
                ) -> list[dict[str, Any]]:
    """Timed passes of every batch size, interleaved (b1, b4, b1, b4, ...) so that a drift of the host's
    speed falls on all of them alike; the add_ host probe is taken before each pass."""
    marks = Marks()
    scope = stage_scope(marks)
    inputs = {}
    for b in batches:
        pre = [preprocess_image(Image.new("RGB", PAGE_SIZE, "white"), mode) for _ in range(b)]
        inputs[b] = (pre, build_prompt([p.layout for p in pre], DEFAULT_PROMPT))

    def one_pass(b: int, scope_fn: Any = None) -> None:
        pre, prompt = inputs[b]
        state = prefill(model, prompt, pre, scope=scope_fn)
        marks.mark("prefill returned")
        for i in range(steps):
            state = decode_step(model, state, scope=scope_fn, fixed_length=True, forward=i < steps - 1)

    handles = hook_modules(model.model.language, "language", depth, marks)
    handles += hook_modules(model.lm_head, "lm_head", 0, marks)
    passes: dict[int, list[tuple[float, list[dict[str, Any]]]]] = {b: [] for b in batches}
    try:
        for b in batches:
            for _ in range(2):  # warm-up
                one_pass(b, scope)
        for _ in range(reps):
            for b in batches:
                probe = host_probe_us("cuda")
                marks.start()
                one_pass(b, scope)
                passes[b].append((probe, marks.collect()))
    finally:
        for h in handles:
            h.remove()
    return [summarise(mode, b, int(inputs[b][1].input_ids.shape[1]), passes[b],
                      sync_sites(lambda b=b: one_pass(b))) for b in batches]


def summarise(mode: str, batch: int, prompt_length: int, passes: list[tuple[float, list[dict[str, Any]]]],
              sites: Counter[str]) -> dict[str, Any]:
    """Per-pass figures of one batch size (see the module docstring)."""
    summaries = []
    for probe, rows in passes:
        proj_end = next(r for r in rows if r["name"] == f"exit stage:{Stage.PROJECTOR.value}")
        lm_enter, lm_exit = between(rows, "enter language:DeepseekOcr2TextModel", "exit language:DeepseekOcr2TextModel")
        pre_exit = next(r for r in rows if r["name"] == f"exit stage:{Stage.PREFILL.value}")
        layers = [r for r in rows if r["name"].startswith(("enter language.layers.", "exit language.layers."))
                  and r["name"].count(".") == 2]
        prefill_layers = []
        for r in layers:
            if r["host_ms"] > pre_exit["host_ms"]:
                break
            prefill_layers.append({"name": r["name"], "lag_ms": round(r["lag_ms"], 3),
                                   "host_ms": round(r["host_ms"] - lm_enter["host_ms"], 3)})
        prefill_rows = [r for r in rows if r["host_ms"] <= pre_exit["host_ms"]]
        decode_rows = [r for r in rows if r["host_ms"] > pre_exit["host_ms"]]
        summaries.append({
            # the profiler's measured LM prefill: prefill range end minus the projector's end (device clock)
            "lm_prefill_wall_ms": pre_exit["device_ms"] - proj_end["device_ms"],
            "host_probe_us": probe,
            "lm_host_issue_ms": lm_exit["host_ms"] - lm_enter["host_ms"],
            "lm_device_span_ms": lm_exit["device_ms"] - lm_enter["device_ms"],
            "host_from_projector_exit_to_lm_enter_ms": lm_enter["host_ms"] - proj_end["host_ms"],
            "lag_at_projector_exit_ms": proj_end["lag_ms"],
            "lag_at_lm_enter_ms": lm_enter["lag_ms"],
            "lag_at_lm_exit_ms": lm_exit["lag_ms"],
            "prefill_layers": prefill_layers,
            "prefill_by_class": per_class(prefill_rows),
            "decode_by_class": per_class(decode_rows),
        })
    return {"mode": mode, "batch": batch, "prompt_length": prompt_length, "passes": summaries,
            "sync_sites": dict(sites.most_common()), "marks_last_pass": passes[-1][1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", default="base", help="resolution mode of the pages (default base)")
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes (default 1,4)")
    parser.add_argument("--reps", type=int, default=3, help="timed passes per batch (default 3)")
    parser.add_argument("--decode-steps", type=int, default=4, help="decode steps per pass (default 4)")
    parser.add_argument("--depth", type=int, default=3,
                        help="module levels under the decoder that get marks (default 3: layer, "
                             "attention/mlp, their children)")
    parser.add_argument("--attn", default="eager", choices=("eager", "sdpa"), help="attention implementation")
    parser.add_argument("--experts", default="grouped_mm", choices=EXPERTS_IMPLEMENTATIONS,
                        help="experts implementation (default grouped_mm)")
    parser.add_argument("--out", type=Path, help="write every figure and mark as JSON here")
    args = parser.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error(f"--batches {args.batches!r}: not a comma-separated list of integers")
    if min(batches) < 1 or args.reps < 1 or args.decode_steps < 1 or args.depth < 0:
        parser.error("--batches, --reps and --decode-steps must be >= 1, --depth >= 0")
    if args.out is not None and not args.out.parent.is_dir():
        parser.error(f"--out {args.out}: folder {args.out.parent} does not exist")
    if not torch.cuda.is_available():
        print("prefill_timeline.py: needs a CUDA GPU", file=sys.stderr)
        return 2
    try:
        model = build_model(DeepseekOCRConfig.default(), device="cuda", dtype=torch.bfloat16,
                            attn_implementation=args.attn, experts_implementation=args.experts)
        results = run_batches(model, args.mode, batches, args.reps, args.decode_steps, args.depth)
    except UserError as exc:
        print(f"prefill_timeline.py: {exc}", file=sys.stderr)
        return 2
    for res in results:
        print(f"\n== {res['mode']} b{res['batch']} (prompt {res['prompt_length']} tokens, {args.attn}, "
              f"{args.experts})")
        for i, s in enumerate(res["passes"]):
            print(f"pass {i}: add_ probe {s['host_probe_us']:.2f} us; LM prefill wall {s['lm_prefill_wall_ms']:.2f} ms; decoder host issue "
                  f"{s['lm_host_issue_ms']:.2f} ms, device span {s['lm_device_span_ms']:.2f} ms; backlog at "
                  f"projector exit {s['lag_at_projector_exit_ms']:.3f}, LM enter {s['lag_at_lm_enter_ms']:.3f}, "
                  f"LM exit {s['lag_at_lm_exit_ms']:.3f} ms; host projector exit -> LM enter "
                  f"{s['host_from_projector_exit_to_lm_enter_ms']:.2f} ms")
        last = res["passes"][-1]
        print("decoder layers (last pass): " + ", ".join(
            f"{r['name'].split(':')[0].replace('language.layers.', 'L')} lag {r['lag_ms']:.3f}"
            for r in last["prefill_layers"]))
        for part in ("prefill_by_class", "decode_by_class"):
            print(f"{part} (last pass): class calls host_ms device_ms")
            for cls, o in sorted(last[part].items(), key=lambda kv: -kv[1]["host_ms"]):
                print(f"  {cls:<36} {int(o['calls']):4d} {o['host_ms']:9.3f} {o['device_ms']:9.3f}")
        print(f"synchronising calls of one pass (prefill + {args.decode_steps} steps):")
        for site, n in res["sync_sites"].items():
            print(f"  {n:4d}  {site}")
    if args.out is not None:
        args.out.write_text(json.dumps({"attn": args.attn, "experts": args.experts,
                                        "decode_steps": args.decode_steps, "results": results}, indent=1))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
