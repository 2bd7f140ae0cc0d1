"""Predicted vs measured for a Stage 1 profiling run (writes RUN_DIR/compare/ and the unified report).

Without --analytic the analytic model is computed for the run's exact
workload(s) (mode, page sizes and tiles, prompt length, max_new_tokens,
batch, dtype, GPU). Ratios are predicted / measured.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from llm_perf_opt.analytic.calibration import Calibration, load_calibration
from llm_perf_opt.cli import CommandParser, run_guarded
from llm_perf_opt.compare.analytic import check_same_model, check_same_workload, load_analytic_report
from llm_perf_opt.compare.compare import Comparison, compare_run
from llm_perf_opt.compare.runs import MeasuredRun, RunFolderError, load_run, run_workloads
from llm_perf_opt.data.analytic import AnalyticModelReport, OCRWorkloadProfile
from llm_perf_opt.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `llm-perf-opt compare`."""
    parser.add_argument("--run", required=True, type=Path, metavar="RUN_DIR",
                        help="run folder of a profiling run, its metrics.json, or a run id under "
                             f"{PROFILE_OUTPUT_ROOT}/")
    parser.add_argument("--analytic", type=Path, default=None, metavar="REPORT",
                        help="exported AnalyticModelReport (JSON/YAML) of the same workload; default: compute it "
                             "from the run's workload without building the model")
    parser.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                        help="calibration JSON (llm-perf-opt calibrate) for the run's GPU: adds calibrated columns")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder for compare.json/.md/.png (default: RUN_DIR/compare)")
    parser.add_argument("--prompt-text-tokens", type=int, default=None, metavar="N",
                        help="prompt tokens besides the image slots (BOS included); default: derived from the "
                             "run's prefill token counts")
    parser.add_argument("--catalog", type=Path, default=None, metavar="YAML",
                        help="extra GPU catalogue file layered over the packaged one")
    parser.add_argument("--config", default=None, metavar="NAME",
                        help="model config to analyse instead of the run's ('default', 'tiny' or a config.json "
                             "path), e.g. when the run's checkpoint folder is not on this machine")
    parser.add_argument("--no-unified", action="store_true",
                        help="do not write the unified report (unified_report.md/.json)")
    parser.add_argument("--unified-dir", type=Path, default=None, metavar="DIR",
                        help="folder for unified_report.md/.json (default: the --out folder when given, else "
                             "RUN_DIR: with --out nothing is written into the run folder)")


def _unified_dir(unified_dir: Path | None, out: Path | None, run_dir: Path) -> Path:
    """Where the unified report goes: ``--unified-dir``, else the ``--out`` folder, else the run folder."""
    if unified_dir is not None:
        return unified_dir
    return out if out is not None else run_dir


#: Where the profiling runner puts its run folders (relative to the working directory).
PROFILE_OUTPUT_ROOT = Path("tmp/profile-output")


def resolve_run_dir(run: str | Path, root: Path = PROFILE_OUTPUT_ROOT) -> Path:
    """A path as given when it exists, else ``root/<run>`` when that exists (a run id), else the path."""
    p = Path(run)
    if not p.exists() and (root / p).exists():
        return root / p
    return p


def predictions_for_run(run: MeasuredRun, *, analytic: Path | None = None, prompt_text_tokens: int | None = None,
                        catalog: Path | None = None, config: str | None = None
                        ) -> tuple[list[tuple[AnalyticModelReport, int]], list[OCRWorkloadProfile]]:
    """(report, images) per workload of the run, and the run's workloads (same order).

    With ``analytic`` the one report must match every workload of the run
    (MismatchError otherwise); without it each workload is analysed.
    """
    if prompt_text_tokens is not None and prompt_text_tokens < 1:
        raise UserError(f"--prompt-text-tokens must be >= 1 (BOS included), got {prompt_text_tokens}")
    workloads = run_workloads(run, prompt_text_tokens=prompt_text_tokens)
    if run.gpu_key is None:
        raise RunFolderError(f"{run.report_path}: run has no GPU catalogue key; nothing to predict against")
    if analytic is not None:
        report = load_analytic_report(analytic)
        check_same_model(report, config or run.report.model.config_origin, where=str(analytic))
        for wl, _ in workloads:
            check_same_workload(report, wl, run.gpu_key, where=str(analytic))
        return [(report, sum(n for _, n in workloads))], [workloads[0][0]]
    from llm_perf_opt.compare.analyzer_bridge import analyze_for_run

    preds = [(analyze_for_run(run, wl, catalog=catalog, config=config), n) for wl, n in workloads]
    return preds, [wl for wl, _ in workloads]


def build_comparison(run: MeasuredRun, *, analytic: Path | None = None, calibration: Calibration | None = None,
                     prompt_text_tokens: int | None = None, catalog: Path | None = None, config: str | None = None
                     ) -> tuple[Comparison, list[tuple[AnalyticModelReport, int]]]:
    """The Comparison of ``run`` and the predictions it used."""
    preds, workloads = predictions_for_run(run, analytic=analytic, prompt_text_tokens=prompt_text_tokens,
                                           catalog=catalog, config=config)
    return compare_run(run, preds, calibration=calibration, workloads=workloads, catalog=catalog,
                       config=config), preds


def run(args: argparse.Namespace) -> int:
    """Compare, write the outputs, print the stage table."""
    from llm_perf_opt.reporting.compare_report import write_compare_outputs

    if args.no_unified and args.unified_dir is not None:
        raise UserError("--unified-dir names where the unified report goes: drop it or --no-unified")
    measured = load_run(resolve_run_dir(args.run))
    calibration = load_calibration(args.calibration) if args.calibration is not None else None
    cmp, preds = build_comparison(measured, analytic=args.analytic, calibration=calibration,
                                  prompt_text_tokens=args.prompt_text_tokens, catalog=args.catalog,
                                  config=args.config)
    out_dir = args.out if args.out is not None else measured.run_dir / "compare"
    paths = write_compare_outputs(cmp, out_dir)
    if len(preds) == 1 and cmp.totals.measured_total_ms:
        # the analytic contract summary with the measured total filled in
        import json

        from llm_perf_opt.contracts.convert import to_analytic_summary, to_json_dict

        summary = to_analytic_summary(preds[0][0], measured_total_time_ms=cmp.totals.measured_total_ms)
        spath = out_dir / "analytic_summary.json"
        spath.write_text(json.dumps(to_json_dict(summary), indent=2) + "\n", encoding="utf-8")
        paths.append(spath)
    if not args.no_unified:
        from llm_perf_opt.reporting.unified_report import build_unified, write_unified

        unified = build_unified(measured, cmp, preds, catalog=args.catalog, calibration=calibration)
        paths += write_unified(unified, _unified_dir(args.unified_dir, args.out, measured.run_dir))
    print(f"{'stage':<12} {'measured ms':>12} {'predicted ms':>13} {'ratio':>7}"
          + (f" {'calibrated':>11} {'ratio':>7}" if calibration else ""))
    for s in cmp.stages:
        m = "-" if s.measured_ms is None else f"{s.measured_ms:.3f}"
        r = "-" if s.ratio is None else f"{s.ratio:.3f}"
        line = f"{s.stage:<12} {m:>12} {s.predicted_ms:>13.3f} {r:>7}"
        if calibration:
            c = "-" if s.calibrated_ms is None else f"{s.calibrated_ms:.3f}"
            cr = "-" if s.calibrated_ratio is None else f"{s.calibrated_ratio:.3f}"
            line += f" {c:>11} {cr:>7}"
        print(line)
    t = cmp.totals
    print(f"total: measured {t.measured_total_ms} ms, predicted {t.predicted_total_ms:.3f} ms, ratio {t.ratio}")
    for p in paths:
        print(f"wrote {p}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m llm_perf_opt.runners.compare_cli`."""
    parser = CommandParser(prog="llm-perf-opt compare", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_guarded(lambda: run(args), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
