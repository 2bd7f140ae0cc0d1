#!/usr/bin/env python
"""What one batch row costs a decode step, with and without the n-gram ban (CUDA GPU).

The analytic model prices 9.7 launches per batch row and decode step outside the layer tree (the greedy
step's per-row ops and the n-gram ban; ``analytic.model.DECODE_ROW_LAUNCHES``) at a decoder op's host cost.
At batch 64 that over-predicted the decode by 62% on the H200 (docs/results-h200.md section 20). This
script measures the row's cost directly. It runs the profiler's own pass (``ModelSession.run_pass``, random
bf16 weights, one synthetic page repeated across the batch, fixed-length decode) at each batch size and
n-gram setting, rotating them every round. It records per pass the decode stage's ms per decoder forward and
the module probe (``hw probe``'s us per aten call; the mean of the probes before and after the pass). The
decode stage over its forwards counts the last step's token pick (no forward) too, as the runs' own decode
per token does (at 64 new tokens that puts 1.6% more into each forward). The
summary fits, per n-gram setting, median ms per forward = fixed + per_row * batch (least squares over the batch
sizes), and gives both terms in ms and in module-probe calls (ms / probe us).

    PYTHONPATH=src python scripts/gpu/decode_rows.py --mode small --batches 1 4 16 64 --ngram 20 0 \\
        --rounds 6 --out decode-rows.json
    PYTHONPATH=src python scripts/gpu/decode_rows.py --from decode-rows.json      (the summary, CPU)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

import torch

from llm_perf_opt.analytic.model import DECODE_ROW_LAUNCHES
from llm_perf_opt.cli import render_saved, run_guarded
from llm_perf_opt.compare.fit import probe_call_fit
from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.host_speed import gpu_uuid
from llm_perf_opt.inputs.synthetic import synthetic_pages
from llm_perf_opt.measure_script import Samples, add_measure_args, ready_out, rotated_rounds
from llm_perf_opt.models.deepseek_ocr.modes import MODES
from llm_perf_opt.models.deepseek_ocr.prompt import resolve_prompt
from llm_perf_opt.profiling.env import cpu_model
from llm_perf_opt.profiling.session import ModelSession, SessionSettings
from llm_perf_opt.profiling.timers import StageRecorder
from llm_perf_opt.vocab import DType, Stage

FIELDS = ("forward_ms", "probe_us")


def summarize(samples: dict[str, dict[str, dict[str, list[float]]]]) -> dict[str, Any]:
    """Per n-gram setting: medians per batch size and the fixed + per-row fit of the ms per forward."""
    out: dict[str, Any] = {}
    for ngram, by_batch in samples.items():
        sizes = sorted((b for b in by_batch if by_batch[b]["forward_ms"]), key=int)
        med = {b: {f: statistics.median(by_batch[b][f]) for f in FIELDS} for b in sizes}
        fit: dict[str, Any] = {}
        if sizes:
            fit["probe_us"] = statistics.median([v for b in sizes for v in by_batch[b]["probe_us"]])
        if len(sizes) >= 2:
            fit.update(probe_call_fit([float(b) for b in sizes], [med[b]["forward_ms"] for b in sizes],
                                      fit["probe_us"], "row"))
        out[ngram] = {"medians": med, "fit": fit}
    return out


def render(data: dict[str, Any]) -> str:
    """The summary as text."""
    lines = [f"decode ms per forward by batch size ({data['gpu']}, {data['gpu_uuid']}; {data['cpu_model']}; torch "
             f"{data['torch']}; mode {data['mode']}; {data['max_new_tokens']} new tokens; {data['rounds']} rounds; "
             "medians)",
             f"{'n-gram':>6} {'batch':>5} {'ms/forward':>10} {'probe us':>8}"]
    summary = data["summary"]
    for ngram, s in summary.items():
        for b, m in s["medians"].items():
            lines.append(f"{ngram:>6} {b:>5} {m['forward_ms']:>10.3f} {m['probe_us']:>8.2f}")
    for ngram, s in summary.items():
        f = s["fit"]
        if "per_row_ms" in f:
            lines.append(f"n-gram {ngram}: fixed {f['fixed_ms']:.3f} ms + {f['per_row_ms'] * 1e3:.1f} us per row "
                         f"= {f['fixed_probe_calls']:.0f} + {f['per_row_probe_calls']:.2f} x rows module-probe calls "
                         f"(probe {f['probe_us']:.2f} us; the model prices {DECODE_ROW_LAUNCHES} ops per row)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="small", choices=MODES, help="resolution mode (default small)")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16, 64], metavar="N",
                    help="batch sizes (default 1 4 16 64)")
    ap.add_argument("--ngram", nargs="+", type=int, default=[20, 0], metavar="N",
                    help="no-repeat n-gram sizes to compare (default 20, the reference's, and 0: off)")
    ap.add_argument("--rounds", type=int, default=6,
                    help="rounds; each runs every batch size and n-gram setting once (default 6)")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="decode steps per pass (default 64)")
    add_measure_args(ap, out_help="JSON file to write (per pass samples and the summary)",
                     cpu_help="cpu (fp32, host-clock ranges: a check of the script only)")
    args = ap.parse_args(argv)
    if args.from_json is not None:
        print(render_saved(args.from_json, lambda data: render({**data, "summary": summarize(data["samples"])})))
        return 0
    if args.rounds < 1 or any(b < 1 for b in args.batches) or len(set(args.batches)) < 2:
        raise UserError("--rounds must be >= 1 and --batches needs two or more different sizes >= 1")
    if len(set(args.batches)) < len(args.batches) or len(set(args.ngram)) < len(args.ngram):
        raise UserError("--batches and --ngram must not repeat a value")
    if any(n < 0 for n in args.ngram) or args.max_new_tokens < 2:
        raise UserError("--ngram sizes must be >= 0 and --max-new-tokens >= 2 (one decoder forward at least)")
    out_path = ready_out(args.out)  # before the measurement, so that a bad --out does not cost it
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU here")
    torch.set_grad_enabled(False)
    dev = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    session = ModelSession(SessionSettings(
        config_name=args.config, mode=args.mode, prompt=resolve_prompt("document"),
        max_new_tokens=args.max_new_tokens, dtype=DType.BF16 if dev.type == "cuda" else DType.FP32,
        device=str(dev)), dev)  # ConfigError (a UserError) names a bad --config
    page = synthetic_pages(1)[0].cached()
    configs = [(n, b) for n in args.ngram for b in args.batches]
    samples: Samples = {
        str(n): {str(b): {f: [] for f in FIELDS} for b in args.batches} for n in args.ngram}

    def one_pass(config: tuple[int, int], timed: bool = True) -> None:
        ngram, batch = config
        session.reconfigure(batch_size=batch, no_repeat_ngram_size=ngram)
        rec = session.run_pass([page] * batch, StageRecorder(dev, nvtx=False), probes=timed)
        if not timed:
            return
        probes = [p for p in (rec.host_module_probe_us, rec.host_module_probe_after_us) if p]
        row = samples[str(ngram)][str(batch)]
        row["forward_ms"].append(rec.stage_ms[Stage.DECODE.value] / max(rec.decode_forwards, 1))
        row["probe_us"].append(statistics.fmean(probes))

    with torch.inference_mode():
        for c in configs:  # warm-up: every shape once, untimed
            one_pass(c, timed=False)
        done = rotated_rounds(configs, args.rounds, one_pass, samples)
    cuda = dev.type == "cuda"
    out = {"mode": args.mode, "batches": args.batches, "ngram": args.ngram, "rounds": done, "config": args.config,
           "max_new_tokens": args.max_new_tokens, "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(dev) if cuda else "cpu", "gpu_uuid": gpu_uuid(dev),
           "cpu_model": cpu_model(), "summary": summarize(samples), "samples": samples}
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    print(render(out))
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, "decode_rows.py"))
