"""Analytic model report of DeepSeek-OCR (no GPU, no weights): FLOPs, bytes, memory, roofline time.

    python -m llm_perf_opt.runners.dsocr_analyzer_main --mode analytic
    llm-perf-opt analyze --workload-profile-id dsocr-base-v1 --gpu a100-sxm4-80gb

Writes ``<output-dir>/static_analysis/analytic_model/{report.json,report.yaml,summary.json,layers/*.md}``
and prints the report.json path as its last line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from llm_perf_opt.analytic.model import NGRAM_BAN_ROW_LAUNCHES
from llm_perf_opt.errors import UserError
from llm_perf_opt.vocab import DEFAULT_NO_REPEAT_NGRAM, EXPERTS_IMPLEMENTATIONS

DEFAULT_OUTPUT_ROOT = Path("tmp") / "profile-output"


def _image_size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size {text!r} is not WIDTHxHEIGHT (e.g. 1700x2200)") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the analyzer (also used by ``llm-perf-opt analyze``)."""
    from llm_perf_opt.analytic.workloads import DEFAULT_PROFILE_ID
    from llm_perf_opt.runners.dsocr_analyzer import DEFAULT_GPU

    parser.add_argument("--mode", default="analytic", metavar="{analytic}",
                        help="what to produce: 'analytic' = the analytic model report (the only mode of this runner; "
                             "the resolution mode is --resolution-mode)")
    parser.add_argument("--model", "--config", dest="model", default=None,
                        help="model config (--config is the same flag, as in profile, compare and calibrate): 'default' "
                             "(packaged DeepSeek-OCR config.json; the default), 'tiny', a "
                             "config.json or a local model folder holding one (weights are never read); with "
                             "--profile-run-id the run's own config unless given")
    parser.add_argument("--device", choices=["meta", "cpu", "none"], default="meta",
                        help="device on which the executable model is built to cross-check the analytic parameter "
                             "counts per top module ('meta': shapes only, no memory; 'cpu': random weights; "
                             "'none': skip the check)")
    parser.add_argument("--workload-profile-id", default=None,
                        help=f"named workload profile (default {DEFAULT_PROFILE_ID}; see docs/analytic.md); the "
                             "flags below override its fields")
    parser.add_argument("--profile-run-id", default=None, metavar="RUN",
                        help="analyse the exact workload of a Stage 1 run (a run id under tmp/profile-output/ or "
                             "its folder) on the run's GPU, write the report into the run folder and compare it "
                             "with the measurements (RUN/compare/; the summary gets the measured total); the "
                             "workload, GPU and ceilings flags do not apply")
    parser.add_argument("--resolution-mode", default=None, help="override the mode: tiny, small, base, large, gundam")
    parser.add_argument("--image-size", type=_image_size, default=None,
                        help="override the page size in pixels, WIDTHxHEIGHT (sets Gundam's tile grid)")
    parser.add_argument("--prompt-tokens", "--prompt-text-tokens", dest="prompt_tokens", type=int, default=None,
                        help="override the prompt's text tokens (BOS + text, without the image slots; "
                             "--prompt-text-tokens is the same flag, as in what-if, compare and calibrate)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="override the generated tokens per page")
    parser.add_argument("--batch-size", type=int, default=None, help="override the pages per forward")
    parser.add_argument("--dtype", default=None, help="override the compute dtype: bf16, fp16, fp32, fp8")
    parser.add_argument("--attention", "--attn-implementation", dest="attention", choices=["eager", "sdpa", "flash"],
                        default=None,
                        help="override the attention implementation modelled (eager: scores in memory; sdpa: "
                             "fused; flash: fused and causal-skipping; --attn-implementation is the same flag, "
                             "as in profile)")
    parser.add_argument("--experts", "--experts-implementation", dest="experts", choices=list(EXPERTS_IMPLEMENTATIONS),
                        default=None,
                        help="override the MoE experts implementation modelled (grouped_mm: transformers' default "
                             "and the profiler's; batched_mm; eager: per-expert loop). Changes bytes and launches "
                             "(--experts-implementation is the same flag, as in profile)")
    parser.add_argument("--no-repeat-ngram-size", type=int, default=None, metavar="N",
                        help=f"override the n-gram ban of greedy decoding modelled (default {DEFAULT_NO_REPEAT_NGRAM}, "
                             f"the reference's and the profiler's; 0: off). The ban adds {NGRAM_BAN_ROW_LAUNCHES:g} "
                             "launches per page and token to the decode step (analytic.model.NGRAM_BAN_ROW_LAUNCHES)")
    parser.add_argument("--gpu", default=None,
                        help=f"GPU catalogue key or alias (default {DEFAULT_GPU}; `llm-perf-opt hw list` shows them)")
    parser.add_argument("--ceilings", type=Path, default=None,
                        help="measured ceilings file (llm-perf-opt hw bench) used instead of the datasheet peaks")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="calibration file (llm-perf-opt calibrate): per-category efficiencies and launch cost; "
                             "with --profile-run-id it adds calibrated columns to the comparison (the report stays "
                             "the pure roofline, as compare needs it)")
    parser.add_argument("--max-depth", type=int, default=None,
                        help="module-tree depth kept per stage in the report (default: all nodes)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="run folder (default tmp/profile-output/<run_id>/, or the profiled run's folder with "
                             "--profile-run-id); outputs go to <output-dir>/static_analysis/analytic_model/")


def check_parameters(config: object, report: object, device: str) -> str:
    """Build the executable model on ``device`` and compare its parameter count per top module with the
    report's weight bytes; returns one summary line, raises RuntimeError on a mismatch (a bug)."""
    import torch

    from llm_perf_opt.analytic.model import (
        CLIP_PATH,
        LANGUAGE_PATH,
        LAYOUT_PATH,
        LM_HEAD_PATH,
        PROJECTOR_PATH,
        SAM_PATH,
    )
    from llm_perf_opt.data.analytic import AnalyticModelReport
    from llm_perf_opt.models.deepseek_ocr import build_model
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
    from llm_perf_opt.vocab import DTYPE_BYTES, Stage

    assert isinstance(config, DeepseekOCRConfig) and isinstance(report, AnalyticModelReport)
    model = build_model(config, device=device, dtype=torch.bfloat16)
    wb = DTYPE_BYTES[report.workload.dtype]
    lang = model.model.language
    real = {
        f"{Stage.VISION_SAM.value}/{SAM_PATH}": model.model.sam_model,
        f"{Stage.VISION_CLIP.value}/{CLIP_PATH}": model.model.vision_model,
        f"{Stage.PROJECTOR.value}/{PROJECTOR_PATH}": model.model.projector,
        f"{Stage.PREFILL.value}/{LANGUAGE_PATH}.embed_tokens": lang.embed_tokens,
        f"{Stage.PREFILL.value}/{LANGUAGE_PATH}.norm": lang.norm,
        f"{Stage.PREFILL.value}/{LM_HEAD_PATH}": model.lm_head,
    }
    for i, layer in enumerate(lang.layers):
        real[f"{Stage.PREFILL.value}/{LANGUAGE_PATH}.layers.{i}"] = layer
    bad = []
    for module_id, module in real.items():
        n = sum(p.numel() for p in module.parameters())
        got = report.snapshot(module_id).weight_bytes / wb
        if got != n:
            bad.append(f"{module_id}: analytic {got:.0f} vs model {n}")
    layout = model.model.image_newline.numel() + model.model.view_seperator.numel()
    if report.snapshot(f"{Stage.PROJECTOR.value}/{LAYOUT_PATH}").weight_bytes / wb != layout:
        bad.append(f"{LAYOUT_PATH}: layout parameters differ")
    total = sum(p.numel() for p in model.parameters())
    if report.memory.weights_bytes / wb != total:
        bad.append(f"total: analytic {report.memory.weights_bytes / wb:.0f} vs model {total}")
    if bad:
        raise RuntimeError("analytic parameter counts differ from the executable model: " + "; ".join(bad))
    return f"parameters checked against the executable model on {device}: {total:,} equal per top module"


def run(args: argparse.Namespace) -> int:
    """Build the report, write the outputs, print the report path last."""
    from llm_perf_opt.analytic.workloads import DEFAULT_PROFILE_ID, get_profile, with_overrides
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
    from llm_perf_opt.runners.dsocr_analyzer import DEFAULT_GPU, DeepseekOCRStaticAnalyzer, write_outputs
    from llm_perf_opt.vocab import parse_dtype

    if args.mode != "analytic":
        hint = (f"; for the resolution mode give --resolution-mode {args.mode}"
                if args.mode in ("tiny", "small", "base", "large", "gundam") else "")
        raise UserError(f"--mode {args.mode!r} is not supported by this runner (use 'analytic'){hint}")
    if args.max_depth is not None and args.max_depth < 1:
        raise UserError(f"--max-depth must be >= 1, got {args.max_depth}")
    if args.profile_run_id is not None:
        return run_for_profile(args)
    config = DeepseekOCRConfig.named(args.model or "default")
    dtype = None
    if args.dtype is not None:
        try:
            dtype = parse_dtype(args.dtype)
        except ValueError as exc:
            raise UserError(f"--dtype: {exc}") from None
    workload = with_overrides(get_profile(args.workload_profile_id or DEFAULT_PROFILE_ID), mode=args.resolution_mode,
                              image_size=args.image_size, prompt_text_tokens=args.prompt_tokens,
                              max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, dtype=dtype,
                              attention=args.attention, experts=args.experts,
                              no_repeat_ngram_size=args.no_repeat_ngram_size)
    analyzer = DeepseekOCRStaticAnalyzer()
    spec = analyzer.gpu(args.gpu or DEFAULT_GPU)
    report = analyzer.analyze(config, workload, spec, args.ceilings, calibration=args.calibration,
                              max_depth=args.max_depth)
    if args.device != "none":
        report.notes.append(check_parameters(config, report, args.device))
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + f"-analytic-{workload.profile_id}"
    output_dir = args.output_dir or (DEFAULT_OUTPUT_ROOT / run_id)
    path = write_outputs(report, output_dir)
    t = report.model_totals
    print(f"model {config.name}, workload {workload.profile_id} ({workload.mode}, "
          f"{workload.image_width_px}x{workload.image_height_px}, {workload.prefill_tokens} prompt tokens, "
          f"{workload.max_new_tokens} new), GPU {spec.key} ({report.peaks.source.value} peaks)")
    for stage, st in report.stage_totals.items():
        print(f"  {stage.value:<12} {st.total_flops / 1e9:12,.2f} GFLOP {st.io_bytes / 1e9:10,.3f} GB "
              f"{st.time_ms:10,.3f} ms")
    print(f"  {'total':<12} {t.total_flops / 1e9:12,.2f} GFLOP {t.io_bytes / 1e9:10,.3f} GB {t.time_ms:10,.3f} ms")
    print(f"  decode per token {report.decode.per_token.time_ms:.4f} ms; weights "
          f"{report.memory.weights_bytes / 1e9:.2f} GB; max batch {report.memory.max_batch_size}")
    print(path)
    return 0


#: flags that describe a workload, GPU or peaks: a Stage 1 run fixes them under --profile-run-id
_RUN_FIXED_FLAGS = (("--workload-profile-id", "workload_profile_id"), ("--resolution-mode", "resolution_mode"),
                    ("--image-size", "image_size"), ("--prompt-tokens", "prompt_tokens"),
                    ("--max-new-tokens", "max_new_tokens"), ("--batch-size", "batch_size"), ("--dtype", "dtype"),
                    ("--attention", "attention"), ("--experts", "experts"),
                    ("--no-repeat-ngram-size", "no_repeat_ngram_size"), ("--gpu", "gpu"),
                    ("--ceilings", "ceilings"))


def run_for_profile(args: argparse.Namespace) -> int:
    """--profile-run-id: the analytic report of a Stage 1 run's workload, written into the run folder and
    compared with the run (RUN/compare/, summary with the measured total)."""
    from llm_perf_opt.analytic.calibration import load_calibration
    from llm_perf_opt.compare.runs import load_run
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
    from llm_perf_opt.reporting.compare_report import write_compare_outputs
    from llm_perf_opt.runners.compare_cli import build_comparison, resolve_run_dir
    from llm_perf_opt.runners.dsocr_analyzer import write_outputs

    given = [flag for flag, attr in _RUN_FIXED_FLAGS if getattr(args, attr) is not None]
    if given:
        raise UserError(f"--profile-run-id takes the workload, GPU and peaks from the run; drop {', '.join(given)}")
    measured = load_run(resolve_run_dir(args.profile_run_id))
    calibration = load_calibration(args.calibration) if args.calibration is not None else None
    cmp, preds = build_comparison(measured, calibration=calibration, config=args.model)
    report = max(preds, key=lambda p: p[1])[0]
    if args.max_depth is not None:
        from llm_perf_opt.compare.analyzer_bridge import analyze_like

        report = analyze_like(report, report.workload, max_depth=args.max_depth)
    if args.device != "none":
        config = DeepseekOCRConfig.named(args.model or measured.report.model.config_origin)
        report.notes.append(check_parameters(config, report, args.device))
    out = args.output_dir if args.output_dir is not None else measured.run_dir
    total = cmp.totals.measured_total_ms if len(preds) == 1 else None
    path = write_outputs(report, out, measured_total_time_ms=total)
    paths = write_compare_outputs(cmp, out / "compare")
    w = report.workload
    print(f"run {measured.run_id}: workload {w.mode} {w.tile_rows}x{w.tile_cols} tiles, {w.prefill_tokens} prompt "
          f"tokens, {w.max_new_tokens} new, batch {w.batch_size}, GPU {report.gpu_key}"
          + (f" ({len(preds)} page-size groups: the report is the largest, compare covers all)" if len(preds) > 1
             else ""))
    print(f"{'stage':<12} {'measured ms':>12} {'predicted ms':>13} {'ratio':>7}")
    for s in cmp.stages:
        m = "-" if s.measured_ms is None else f"{s.measured_ms:.3f}"
        r = "-" if s.ratio is None else f"{s.ratio:.3f}"
        print(f"{s.stage:<12} {m:>12} {s.predicted_ms:>13.3f} {r:>7}")
    for p in paths:
        print(f"wrote {p}")
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llm_perf_opt.runners.dsocr_analyzer_main``."""
    from llm_perf_opt.cli import CommandParser, run_guarded

    parser = CommandParser(prog="dsocr_analyzer_main", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_guarded(lambda: run(args), "dsocr_analyzer_main")


if __name__ == "__main__":
    sys.exit(main())
