#!/usr/bin/env python
"""What the host did just before decides what SAM costs it (CUDA GPU).

A profile run's SAM stage comes right after the page is drawn and preprocessed on the host; ``hw probe
--decode-step`` times its SAM pass right after a module probe. At batch 1 SAM is host-bound (its kernels
take a few ms, its ~460 launches take the host tens of ms), so its time is the host's issue time. This
script times one SAM pass (the model's ``encode_sam``, random bf16 weights, CUDA events from an idle
device, and the host clock around the call) after each of these contexts, rotating their order every round:

- ``probe``: a module probe, then SAM on pixels prepared long before;
- ``prepare``: a module probe, then a page loaded and preprocessed as the profiler does, then SAM on it;
- ``prepare_held``: as ``prepare``, but SAM runs on the pixels prepared long before;
- ``prepare_second``: as ``prepare``, with one untimed SAM pass before the timed one;
- ``prepare_probe``: a page prepared, then a module probe (recorded), then SAM on the page;
- ``sleep``: a module probe, then the host idle for ``--sleep`` seconds, then SAM;
- ``flush``: a module probe, then ``--flush-mib`` MiB written and summed on the host, then SAM;
- ``vision``: a module probe, then a page prepared, then the profiler's own vision stages
  (``embed_images`` under a ``StageRecorder``), whose ``vision.sam`` range is the one a run reports.

Writes one JSON object (per context: SAM ms samples by CUDA events and by host clock, the module probe
before, and medians over the probe's us per call and per launch):

    PYTHONPATH=src python scripts/gpu/sam_host_context.py --mode small --rounds 15 --out sam-context.json
    PYTHONPATH=src python scripts/gpu/sam_host_context.py --from sam-context.json     (the summary again, CPU)
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

import numpy as np
import torch

from llm_perf_opt.cli import render_saved, run_guarded
from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.host_speed import gpu_uuid
from llm_perf_opt.inputs.synthetic import synthetic_pages
from llm_perf_opt.measure_script import ready_out
from llm_perf_opt.models.deepseek_ocr import PreprocessedImage, preprocess_image
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modeling import build_model, tiny_decoder_program
from llm_perf_opt.profiling.env import cpu_model
from llm_perf_opt.profiling.timers import ModuleHostProbe, StageRecorder, device_activity
from llm_perf_opt.vocab import Stage

CONTEXTS = ("probe", "prepare", "prepare_held", "prepare_second", "prepare_probe", "sleep", "flush", "vision")


#: cudaSetDeviceFlags values of the host thread's wait in a sync (CUDA runtime API, cudaDeviceSchedule*)
SCHEDULES = {"auto": 0, "spin": 1, "yield": 2, "blocking": 4}


def set_schedule(name: str) -> None:
    """Set how the host thread waits in a sync (cudaSetDeviceFlags on device 0) through the CUDA runtime torch
    has loaded; UserError when it cannot be found or refuses."""
    import ctypes

    with open("/proc/self/maps", encoding="utf-8") as fh:
        paths = sorted({line.split()[-1] for line in fh if "libcudart.so" in line})
    if not paths:
        raise UserError("--schedule: torch has not loaded a shared CUDA runtime (libcudart.so) to set it on")
    lib = ctypes.CDLL(paths[0])
    if lib.cudaSetDevice(0) != 0 or lib.cudaSetDeviceFlags(SCHEDULES[name]) != 0:
        raise UserError(f"--schedule {name}: cudaSetDeviceFlags refused")
    flags = ctypes.c_uint(0)
    if lib.cudaGetDeviceFlags(ctypes.byref(flags)) != 0 or (flags.value & 7) != SCHEDULES[name]:
        raise UserError(f"--schedule {name}: the device's flags read {flags.value:#x} afterwards")


def timed(fn: Callable[[], object], dev: torch.device) -> tuple[float, float]:
    """(CUDA-event ms, host-clock ms) of one call of ``fn`` started on an idle device."""
    torch.cuda.synchronize(dev)
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0 = time.perf_counter()
    a.record()
    fn()
    b.record()
    host_ms = (time.perf_counter() - t0) * 1e3
    b.synchronize()
    return float(a.elapsed_time(b)), host_ms


def summarize(samples: dict[str, dict[str, list[float]]], launches: int) -> dict[str, dict[str, float]]:
    """Per context, and over every sample ('all'): median SAM ms (CUDA events, host clock), median probe
    us, SAM's host us per launch over the probe before it (median over samples, min, max); for 'all' also
    the spread (coefficient of variation of SAM ms and of the probe) and the correlation of the two."""
    out: dict[str, dict[str, float]] = {}
    pooled: dict[str, list[float]] = {"event_ms": [], "host_ms": [], "probe_us": []}
    for ctx, rec in [*samples.items(), ("all", pooled)]:
        if ctx != "all":
            for key in pooled:
                pooled[key] += rec[key]
        ev, pr = rec["event_ms"], rec["probe_us"]
        ratios = [e * 1e3 / launches / p for e, p in zip(ev, pr, strict=True)]
        row = {"median_event_ms": statistics.median(ev), "median_host_ms": statistics.median(rec["host_ms"]),
               "median_probe_us": statistics.median(pr), "per_launch_over_probe": statistics.median(ratios),
               "min_per_launch_over_probe": min(ratios), "max_per_launch_over_probe": max(ratios)}
        if ctx == "all" and len(ev) > 2:
            row.update(event_cv=statistics.stdev(ev) / statistics.fmean(ev),
                       probe_cv=statistics.stdev(pr) / statistics.fmean(pr),
                       correlation=statistics.correlation(ev, pr))
        out[ctx] = row
    return out


def render(data: dict[str, Any]) -> str:
    """Text table of a written JSON's summary."""
    lines = [f"SAM pass on a {data['mode']} page: {data['sam_launches']} launches, {data['sam_syncs']} syncs, "
             f"{data['rounds']} rounds ({data['gpu']}, {data.get('gpu_uuid') or 'UUID not recorded'}; sync wait: "
             f"{data.get('schedule') or 'runtime default'})",
             f"{'context':<15} {'SAM ms':>8} {'probe us':>9} {'per launch / probe':>19} {'min':>6} {'max':>6}"]
    for ctx, row in data["summary"].items():
        lines.append(f"{ctx:<15} {row['median_event_ms']:>8.2f} {row['median_probe_us']:>9.2f} "
                     f"{row['per_launch_over_probe']:>19.2f} {row['min_per_launch_over_probe']:>6.2f} "
                     f"{row['max_per_launch_over_probe']:>6.2f}")
    alls = data["summary"]["all"]
    if "correlation" in alls:
        lines.append(f"over all samples: SAM ms CV {alls['event_cv']:.2f}, probe CV {alls['probe_cv']:.2f}, "
                     f"correlation of SAM ms with the probe before it {alls['correlation']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="small", help="resolution mode of the page SAM encodes (default small)")
    ap.add_argument("--rounds", type=int, default=15, help="rounds; each times every context once (default 15)")
    ap.add_argument("--sleep", type=float, default=0.4, help="host idle time of the 'sleep' context, s (default 0.4)")
    ap.add_argument("--flush-mib", type=int, default=256, help="host memory swept by the 'flush' context (default 256)")
    ap.add_argument("--schedule", choices=sorted(SCHEDULES), default=None,
                    help="how the host thread waits in a sync (cudaSetDeviceFlags: spin, yield, blocking or auto); "
                         "default: leave the runtime's choice")
    ap.add_argument("--out", type=Path, help="JSON file to write; required to measure")
    ap.add_argument("--from", dest="from_json", type=Path, metavar="FILE",
                    help="print the summary of a JSON this script wrote (recomputed from its samples; no GPU)")
    args = ap.parse_args(argv)
    if args.from_json is not None:
        print(render_saved(args.from_json, lambda data: render(
            {**data, "summary": summarize(data["samples"], int(data["sam_launches"]))})))
        return 0
    out_path = ready_out(args.out)  # before the measurement, so that a bad --out does not cost it
    if not torch.cuda.is_available():
        raise UserError("needs a CUDA GPU")
    if args.rounds < 1 or args.sleep < 0 or args.flush_mib < 1:
        raise UserError("--rounds and --flush-mib must be >= 1 and --sleep >= 0")
    if args.schedule is not None:
        set_schedule(args.schedule)
    torch.set_grad_enabled(False)
    config = DeepseekOCRConfig.default()
    dev = torch.device("cuda", 0)
    probe = ModuleHostProbe(tiny_decoder_program(config, device=dev, dtype=torch.bfloat16), dev)
    model = build_model(config, device=dev, dtype=torch.bfloat16)
    pages = synthetic_pages(4)
    held = preprocess_image(pages[0].load(), args.mode).global_view.unsqueeze(0)

    def sam(pixels: torch.Tensor) -> Callable[[], object]:
        return lambda: model.encode_sam(pixels)

    def prepare(i: int) -> tuple[torch.Tensor, PreprocessedImage]:
        pre = preprocess_image(pages[i % len(pages)].load(), args.mode)
        return pre.global_view.unsqueeze(0), pre

    samples: dict[str, dict[str, list[float]]] = {c: {"event_ms": [], "host_ms": [], "probe_us": []}
                                                  for c in CONTEXTS}
    buf = np.zeros(args.flush_mib * (1 << 20) // 8)

    def one_round(r: int) -> None:
        order = CONTEXTS[r % len(CONTEXTS):] + CONTEXTS[:r % len(CONTEXTS)]
        for ctx in order:
            rec = samples[ctx]
            if ctx != "prepare_probe":
                rec["probe_us"].append(probe.probe())
            pixels = held
            if ctx.startswith("prepare") or ctx == "vision":
                pixels, pre = prepare(r)
            if ctx == "prepare_held":
                pixels = held
            elif ctx == "prepare_second":
                sam(pixels)()
            elif ctx == "prepare_probe":
                rec["probe_us"].append(probe.probe())
            elif ctx == "sleep":
                time.sleep(args.sleep)
            elif ctx == "flush":
                np.add(buf, 1.0, out=buf)
                float(buf.sum())
            if ctx == "vision":
                recorder = StageRecorder(dev, nvtx=False)
                torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
                model.embed_images([pre], recorder.scope)
                host_ms = (time.perf_counter() - t0) * 1e3
                rec["event_ms"].append(recorder.collect()[Stage.VISION_SAM.value])
                rec["host_ms"].append(host_ms)  # whole vision (SAM, CLIP, projector), host clock
            else:
                ev, host = timed(sam(pixels), dev)
                rec["event_ms"].append(ev)
                rec["host_ms"].append(host)
            print(f"round {r + 1}/{args.rounds} {ctx}: {rec['event_ms'][-1]:.2f} ms", file=sys.stderr)

    with torch.inference_mode():
        for _ in range(3):
            sam(held)()
        launches, syncs = device_activity(sam(held), dev) or (0, 0)
        done = 0
        try:
            for r in range(args.rounds):
                one_round(r)
                done = r + 1
        except KeyboardInterrupt:
            if done == 0:
                raise UserError("interrupted before the first full round: nothing written") from None
            for rec in samples.values():  # keep the full rounds only, the same count for every context
                for key in rec:
                    del rec[key][done:]
            print(f"interrupted: writing the {done} full rounds taken", file=sys.stderr)
    summary = summarize(samples, launches)
    out = {"mode": args.mode, "rounds": done, "schedule": args.schedule, "sleep_s": args.sleep, "flush_mib": args.flush_mib,
           "torch": torch.__version__, "gpu": torch.cuda.get_device_name(dev), "gpu_uuid": gpu_uuid(dev),
           "cpu_model": cpu_model(),
           "sam_launches": launches, "sam_syncs": syncs, "summary": summary, "samples": samples}
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    print(render(out))
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, "sam_host_context.py"))
