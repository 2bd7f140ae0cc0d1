#!/usr/bin/env python
"""What one batch row costs a decode step, with and without the n-gram ban (CUDA GPU).

The analytic model prices the n-gram ban at 7 launches per batch row and token pick outside the layer tree
(``analytic.model.NGRAM_BAN_ROW_LAUNCHES``), at ``DECODE_ROW_HOST_WEIGHT`` of a decoder op's host cost each;
this script measured that weight (docs/results-h200.md sections 21-22). It
runs the profiler's own pass (``ModelSession.run_pass``, random bf16 weights, one synthetic page repeated
across the batch, fixed-length decode) at each batch size and n-gram setting, rotating them every round, and
rewrites --out after every round. It records per pass the decode stage's ms per decoder forward and the
module probe (``hw probe``'s us per aten call; the mean of the probes before and after the pass). The decode
stage over its forwards counts the last step's token pick (no forward) too, as the runs' own decode per
token does (at 64 new tokens that puts 1.6% more into each forward). The summary fits, per n-gram setting,
median ms per forward = fixed + per_row * batch (least squares over the batch sizes) in ms and in
module-probe calls at the median probe; the same line in each pass's own probe calls (host drift between
passes divides out); the per-row launch's host weight that line implies (:func:`row_host_weight`); and, per
n-gram setting, the model's decode host ops per row next to the measured per-row growth in those ops.

    PYTHONPATH=src python scripts/gpu/decode_rows.py --mode small --batches 1 4 16 64 --ngram 20 0 \\
        --rounds 6 --out decode-rows.json
    PYTHONPATH=src python scripts/gpu/decode_rows.py --from decode-rows*.json     (the summaries and the median
                                                                                   weight over the files, CPU)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import torch

from llm_perf_opt.analytic.model import DECODE_ROW_HOST_WEIGHT, NGRAM_BAN_ROW_LAUNCHES, AnalyticModel
from llm_perf_opt.analytic.timeline_model import stage_host_work
from llm_perf_opt.cli import render_saved, run_guarded
from llm_perf_opt.compare.fit import line_fit, probe_call_fit
from llm_perf_opt.data.analytic import OCRWorkloadProfile
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
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modes import MODES
from llm_perf_opt.models.deepseek_ocr.prompt import resolve_prompt
from llm_perf_opt.profiling.env import cpu_model
from llm_perf_opt.profiling.session import ModelSession, SessionSettings
from llm_perf_opt.profiling.timers import StageRecorder
from llm_perf_opt.vocab import DType, Stage

FIELDS = ("forward_ms", "probe_us")


def _decode_model(mode: str, config: str, batch: int, max_new_tokens: int, ngram: int) -> AnalyticModel:
    page = synthetic_pages(1)[0]  # the page the script measures (its size sets the tiles)
    wl = OCRWorkloadProfile.create(profile_id="decode-rows", mode=mode, image_width_px=page.width,
                                   # the decode's host ops do not depend on the prompt's length (it is > n)
                                   image_height_px=page.height, prompt_text_tokens=9, max_new_tokens=max_new_tokens,
                                   batch_size=batch, attention="eager", experts="grouped_mm",
                                   no_repeat_ngram_size=ngram)
    return AnalyticModel(DeepseekOCRConfig.named(config), wl)


def model_decode_ops(mode: str, config: str, max_new_tokens: int = 64, ngram: int = 20) -> tuple[float, float]:
    """(fixed, per row) host ops of the analytic decode forward (``stage_host_work``) for this script's page
    in ``mode`` at ``max_new_tokens`` and n-gram size ``ngram``: its ops are linear in the batch size."""
    ops = [stage_host_work(_decode_model(mode, config, b, max_new_tokens, ngram).stages[Stage.DECODE])[0]
           for b in (1, 2)]
    return ops[0] - (ops[1] - ops[0]), ops[1] - ops[0]


def row_launches(mode: str, config: str, max_new_tokens: int = 64, ngram: int = 20) -> float:
    """The model's n-gram-ban launches per batch row and decode forward (``NGRAM_BAN_ROW_LAUNCHES`` times the
    ban's token picks per forward)."""
    return NGRAM_BAN_ROW_LAUNCHES * _decode_model(mode, config, 1, max_new_tokens, ngram).ban_picks_per_forward()


def row_host_weight(mode: str, config: str, fixed: float, per_row: float, max_new_tokens: int = 64,
                    ngram: int = 20) -> float:
    """The host weight of a ban launch (``analytic.model.DECODE_ROW_HOST_WEIGHT``) that the fit implies.

    The fit's fixed term (ms or probe calls) over the model's fixed host ops (:func:`model_decode_ops`) is
    this host's cost of an op, and the per-row term in those ops, less the model's per-row ops that are not
    the ban's launches, over the ban's launches per row and forward (:func:`row_launches`) is the weight. The
    whole per-row growth is taken as host time (the decode forward is host-bound on the H200 at these batch
    sizes). ``ngram`` must be > 0."""
    fixed_ops, slope = model_decode_ops(mode, config, max_new_tokens, ngram)
    launches = row_launches(mode, config, max_new_tokens, ngram)
    if launches <= 0:
        raise ValueError(f"n-gram size {ngram}: no ban launches, so no weight to fit")
    other = slope - launches * DECODE_ROW_HOST_WEIGHT
    return (per_row * fixed_ops / fixed - other) / launches


def summarize(samples: dict[str, dict[str, dict[str, list[float]]]], mode: str, config: str,
              max_new_tokens: int = 64) -> dict[str, Any]:
    """Per n-gram setting: medians per batch size, the fixed + per-row fit of the ms per forward, the same fit
    of each pass's forward in its own module-probe calls (ms * 1e3 / the pass's probe us: host drift between
    passes divides out, as the prior scales host costs by each run's probe) and the per-row launch's host
    weight that fit implies (:func:`row_host_weight`, n-gram on); and the per-row growth in the model's host ops
    (``per_row_ops``: the per-pass line's slope over its fixed term times the model's fixed ops) next to the
    model's own (``model_per_row_ops``)."""
    out: dict[str, Any] = {}
    for ngram, by_batch in samples.items():
        sizes = sorted((b for b in by_batch if by_batch[b]["forward_ms"]), key=int)
        med = {b: {f: statistics.median(by_batch[b][f]) for f in FIELDS} for b in sizes}
        for b in sizes:
            calls = [ms * 1e3 / us for ms, us in zip(by_batch[b]["forward_ms"], by_batch[b]["probe_us"], strict=True)
                     if us > 0]
            if calls:
                med[b]["probe_calls"] = statistics.median(calls)
        fit: dict[str, Any] = {}
        if sizes:
            fit["probe_us"] = statistics.median([v for b in sizes for v in by_batch[b]["probe_us"]])
        if len(sizes) >= 2:
            xs = [float(b) for b in sizes]
            fit.update(probe_call_fit(xs, [med[b]["forward_ms"] for b in sizes], fit["probe_us"], "row"))
            if all("probe_calls" in med[b] for b in sizes):
                fixed, per_row = line_fit(xs, [med[b]["probe_calls"] for b in sizes])
                fit.update(fixed_calls_per_pass=fixed, per_row_calls_per_pass=per_row)
                if fixed > 0:
                    fixed_ops, slope = model_decode_ops(mode, config, max_new_tokens, int(ngram))
                    fit.update(per_row_ops=per_row * fixed_ops / fixed, model_per_row_ops=slope)
                    if int(ngram) > 0:
                        fit["row_host_weight"] = row_host_weight(mode, config, fixed, per_row, max_new_tokens,
                                                                 int(ngram))
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
    n_new = data.get("max_new_tokens", 64)
    for ngram, s in summary.items():
        f = s["fit"]
        if "per_row_ms" in f:
            launches = row_launches(data["mode"], data["config"], n_new, int(ngram))
            lines.append(f"n-gram {ngram}: fixed {f['fixed_ms']:.3f} ms + {f['per_row_ms'] * 1e3:.1f} us per row "
                         f"= {f['fixed_probe_calls']:.0f} + {f['per_row_probe_calls']:.2f} x rows module-probe calls "
                         f"(probe {f['probe_us']:.2f} us; the model prices {launches:.2f} ban launches per row "
                         "and forward)")
            if "fixed_calls_per_pass" in f:
                lines.append(f"  in each pass's own probe calls: {f['fixed_calls_per_pass']:.0f} + "
                             f"{f['per_row_calls_per_pass']:.2f} x rows")
            if "per_row_ops" in f:
                fixed_ops, _ = model_decode_ops(data["mode"], data["config"], n_new, int(ngram))
                lines.append(f"  per row in the model's host ops: measured {f['per_row_ops']:.2f}, model "
                             f"{f['model_per_row_ops']:.2f} (its decode forward: {fixed_ops:.1f} host ops + "
                             f"{f['model_per_row_ops']:.2f} per row)")
            if "row_host_weight" in f:
                lines.append(f"  host weight of a ban launch this implies: {f['row_host_weight']:.3f} of a decoder "
                             f"op (the model's DECODE_ROW_HOST_WEIGHT: {DECODE_ROW_HOST_WEIGHT})")
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
    add_measure_args(ap, out_help="JSON file to write (per pass samples and the summary; rewritten after every round)",
                     cpu_help="cpu (fp32, host-clock ranges: a check of the script only)", many_from=True)
    args = ap.parse_args(argv)
    if args.from_json is not None:
        weights: list[float] = []

        def one(data: dict[str, Any]) -> str:
            summary = summarize(data["samples"], data["mode"], data["config"], data.get("max_new_tokens", 64))
            weights.extend(s["fit"]["row_host_weight"] for n, s in summary.items()
                           if n != "0" and "row_host_weight" in s["fit"])
            return render({**data, "summary": summary})

        print("\n\n".join(render_saved(path, one) for path in args.from_json))
        if len(args.from_json) > 1 and weights:
            print(f"\nhost weight of a ban launch over {len(weights)} fits (n-gram ban on): median "
                  f"{statistics.median(weights):.3f}, {min(weights):.3f} to {max(weights):.3f} (the model's "
                  f"DECODE_ROW_HOST_WEIGHT: {DECODE_ROW_HOST_WEIGHT})")
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
        try:
            rec = session.run_pass([page] * batch, StageRecorder(dev, nvtx=False), probes=timed)
        except torch.cuda.OutOfMemoryError:
            kept = f"{out_path} keeps the {done_rounds} full rounds taken" if done_rounds else "nothing measured yet"
            raise UserError(f"mode {args.mode} batch {batch}: out of GPU memory ({kept}); use smaller --batches "
                            "(scripts/gpu/memory_batches.py --find-max gives the largest that runs)") from None
        if not timed:
            return
        probes = [p for p in (rec.host_module_probe_us, rec.host_module_probe_after_us) if p]
        row = samples[str(ngram)][str(batch)]
        row["forward_ms"].append(rec.stage_ms[Stage.DECODE.value] / max(rec.decode_forwards, 1))
        row["probe_us"].append(statistics.fmean(probes))

    cuda = dev.type == "cuda"
    done_rounds = 0

    def result(done: int) -> dict[str, Any]:
        return {"mode": args.mode, "batches": args.batches, "ngram": args.ngram, "rounds": done,
                "config": args.config, "max_new_tokens": args.max_new_tokens, "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name(dev) if cuda else "cpu", "gpu_uuid": gpu_uuid(dev),
                "cpu_model": cpu_model(), "summary": summarize(samples, args.mode, args.config, args.max_new_tokens),
                "samples": samples}

    def save(done: int) -> None:  # after every round: an error or a kill later keeps what ran
        nonlocal done_rounds
        done_rounds = done
        write_json_atomic(out_path, result(done))

    with torch.inference_mode():
        for c in configs:  # warm-up: every shape once, untimed
            one_pass(c, timed=False)
        done = rotated_rounds(configs, args.rounds, one_pass, samples, after_round=save)
    out = result(done)
    write_json_atomic(out_path, out)
    print(render(out))
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, "decode_rows.py"))
