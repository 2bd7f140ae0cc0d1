#!/usr/bin/env python
"""What the projector range costs per page and what it costs once (CUDA GPU).

At batch 1 a run's projector range takes 0.15-0.45 ms on the H200 while its kernels take ~0.01-0.04 ms: the
range is host time, a fixed part and a part per page. The analytic model's PROJECTOR_RANGE_HOST_OPS,
PROJECTOR_GROUP_HOST_OPS and PROJECTOR_VIEW_CALL_WEIGHT come from two runs of this script on the H200
(docs/results-h200.md section 19). This script runs the profiler's own vision stages (``embed_images`` under a ``StageRecorder``
with NVTX ranges, as a run does; random bf16 weights) on 1..N synthetic pages per call, rotating the page
counts every round, and records per call the projector range by CUDA events and by the host clock, the CLIP
range before it, and the module probe (``hw probe``'s us per aten call) taken before the call. The summary
fits, per mode, median projector ms = fixed + per_page * pages (least squares over the page counts; "range" is
the range by CUDA events, "host clock" the host time around it), and
gives both terms in ms and in module-probe units (ms / probe us: how many probe calls' worth of host time).

    PYTHONPATH=src python scripts/gpu/projector_pages.py --modes small base --pages 1 2 4 8 --rounds 20 \
        --out projector-pages.json
    PYTHONPATH=src python scripts/gpu/projector_pages.py --from projector-pages.json      (the summary, CPU)
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch

from llm_perf_opt.cli import render_saved, run_guarded
from llm_perf_opt.compare.fit import probe_call_fit
from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.host_speed import gpu_uuid
from llm_perf_opt.inputs.synthetic import synthetic_pages
from llm_perf_opt.measure_script import (
    Samples,
    add_measure_args,
    ready_out,
    rotated_rounds,
    write_json_atomic,
)
from llm_perf_opt.models.deepseek_ocr import preprocess_image
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modeling import build_model, tiny_decoder_program
from llm_perf_opt.models.deepseek_ocr.modes import MODES
from llm_perf_opt.profiling.env import cpu_model
from llm_perf_opt.profiling.timers import ModuleHostProbe, StageRecorder, host_sync
from llm_perf_opt.vocab import Stage

FIELDS = ("projector_ms", "projector_host_ms", "clip_ms", "probe_us")


def summarize(samples: dict[str, dict[str, dict[str, list[float]]]]) -> dict[str, Any]:
    """Per mode: medians per page count and the fixed + per-page fit of the projector (events and host)."""
    out: dict[str, Any] = {}
    for mode, by_pages in samples.items():
        counts = sorted(by_pages, key=int)
        med = {n: {f: statistics.median(by_pages[n][f]) for f in FIELDS if by_pages[n][f]} for n in counts}
        probe = statistics.median([v for n in counts for v in by_pages[n]["probe_us"]])
        fit: dict[str, Any] = {"probe_us": probe}
        if len(counts) >= 2:
            for f in ("projector_ms", "projector_host_ms"):
                fit[f] = probe_call_fit([float(n) for n in counts], [med[n][f] for n in counts], probe, "page")
        out[mode] = {"medians": med, "fit": fit}
    return out


def render(data: dict[str, Any]) -> str:
    """The summary as text."""
    lines = [f"projector range per page count ({data['gpu']}, {data['gpu_uuid']}; {data['cpu_model']}; torch "
             f"{data['torch']}; {data['rounds']} rounds; medians)",
             f"{'mode':<7} {'pages':>5} {'projector ms':>12} {'host ms':>8} {'CLIP ms':>8} {'probe us':>8}"]
    for mode, s in data["summary"].items():
        for n, m in s["medians"].items():
            lines.append(f"{mode:<7} {n:>5} {m['projector_ms']:>12.3f} {m['projector_host_ms']:>8.3f} "
                         f"{m['clip_ms']:>8.2f} {m['probe_us']:>8.2f}")
    for mode, s in data["summary"].items():
        fit = s["fit"]
        for f, label in (("projector_ms", "range"), ("projector_host_ms", "host clock")):
            if f in fit:
                t = fit[f]
                lines.append(f"{mode}: {label}: fixed {t['fixed_ms']:.3f} ms + {t['per_page_ms']:.4f} ms per page "
                             f"= {t['fixed_probe_calls']:.1f} + {t['per_page_probe_calls']:.2f} x pages module-probe "
                             f"calls (probe {fit['probe_us']:.2f} us)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=["small"], metavar="MODE",
                    help=f"resolution modes ({', '.join(MODES)}; default small)")
    ap.add_argument("--pages", nargs="+", type=int, default=[1, 2, 4, 8], metavar="N",
                    help="pages per embed_images call (default 1 2 4 8)")
    ap.add_argument("--rounds", type=int, default=20, help="rounds; each times every mode and page count once "
                                                           "(default 20)")
    add_measure_args(ap, out_help="JSON file to write (per call samples and the summary)",
                     cpu_help="cpu (fp32, host-clock ranges: a check of the script only)")
    args = ap.parse_args(argv)
    if args.from_json is not None:
        print(render_saved(args.from_json, lambda data: render({**data, "summary": summarize(data["samples"])})))
        return 0
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        raise UserError(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if args.rounds < 1 or any(n < 1 for n in args.pages) or len(set(args.pages)) < 2:
        raise UserError("--rounds must be >= 1 and --pages needs two or more different counts >= 1")
    out_path = ready_out(args.out)  # before the measurement, so that a bad --out does not cost it
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU here")
    torch.set_grad_enabled(False)
    config = DeepseekOCRConfig.named(args.config)  # ConfigError (a UserError) names a bad one
    dev = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    probe = ModuleHostProbe(tiny_decoder_program(config, device=dev, dtype=dtype), dev)
    model = build_model(config, device=dev, dtype=dtype)
    pages = synthetic_pages(max(args.pages))
    prepared = {m: [preprocess_image(p.load(), m) for p in pages] for m in args.modes}
    configs = [(m, n) for m in args.modes for n in args.pages]
    samples: Samples = {
        m: {str(n): {f: [] for f in FIELDS} for n in args.pages} for m in args.modes}

    def one_call(config: tuple[str, int]) -> None:
        mode, n = config
        rec = samples[mode][str(n)]
        recorder = StageRecorder(dev, nvtx=True)
        host: dict[str, float] = {}

        @contextlib.contextmanager
        def scope(name: str) -> Iterator[None]:
            t0 = time.perf_counter()
            with recorder.scope(name):
                yield
            host[name] = (time.perf_counter() - t0) * 1e3

        p = probe.probe()
        host_sync(dev)
        model.embed_images(prepared[mode][:n], scope)
        ranges = recorder.collect()
        rec["projector_ms"].append(ranges[Stage.PROJECTOR.value])
        rec["projector_host_ms"].append(host[Stage.PROJECTOR.value])
        rec["clip_ms"].append(ranges[Stage.VISION_CLIP.value])
        rec["probe_us"].append(p)

    cuda = dev.type == "cuda"

    def result(done: int) -> dict[str, Any]:  # saved after every round: a kill later keeps what ran
        return {"modes": args.modes, "pages": args.pages, "rounds": done, "config": args.config,
                "torch": torch.__version__, "gpu": torch.cuda.get_device_name(dev) if cuda else "cpu",
                "gpu_uuid": gpu_uuid(dev), "cpu_model": cpu_model(), "summary": summarize(samples),
                "samples": samples}

    with torch.inference_mode():
        for mode, n in configs:  # warm-up: every shape once, untimed
            model.embed_images(prepared[mode][:n])
        host_sync(dev)
        done = rotated_rounds(configs, args.rounds, one_call, samples,
                              after_round=lambda n: write_json_atomic(out_path, result(n)))
    out = result(done)
    write_json_atomic(out_path, out)
    print(render(out))
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, "projector_pages.py"))
