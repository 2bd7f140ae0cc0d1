"""Rebuild a profiling run's reports from its files, with the current code (no GPU, no model).

Reads passes.jsonl, settings.json, env.json, metrics.json (inputs, operator rows, notes),
operator_table.json and timeline.json of each run folder and writes report.md, operators.md,
metrics.json/.yaml, stakeholder_summary.md and assumptions.md again: the measurements stay
as measured, while statistics and MFU/MBU (the analytic work of each pass against the GPU's
peaks) come from this version. One line per run says how the MFU/MBU of metrics.json changed.

    llm-perf-opt rebuild reports/profile/h200-small-b64-* --dry-run
    llm-perf-opt rebuild tmp/profile-output/RUN_ID --ceilings hw-ceilings.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from llm_perf_opt.cli import CommandParser, progress_bar, run_guarded
from llm_perf_opt.data.profile import LLMProfileReport
from llm_perf_opt.errors import UserError
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.profiling.analytic_work import ANALYTIC_NOTE, make_work_fn
from llm_perf_opt.profiling.mfu import WorkFn
from llm_perf_opt.profiling.rebuild import (
    load_runner,
    model_config,
    peak_flags,
        rebuild_note,
)
from llm_perf_opt.profiling.run import CATALOG_COPY, CEILINGS_COPY, RunOutcome
from llm_perf_opt.runners.llm_profile_runner import check_peak_files, make_peaks_resolver
from llm_perf_opt.vocab import Stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `llm-perf-opt rebuild`."""
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run folders of `llm-perf-opt profile` (or their torch_profiler/ folders)")
    parser.add_argument("--gpu", default=None, metavar="KEY",
                        help="catalogue key whose datasheet peaks MFU/MBU use (default: the run's own --gpu, else "
                             "the GPU its env.json names)")
    parser.add_argument("--catalog", type=Path, default=None, metavar="FILE",
                        help=f"extra GPU catalogue YAML (default: the run's own --catalog, if it gave one: its copy "
                             f"{CATALOG_COPY} in the run folder, else the path its command gave)")
    parser.add_argument("--ceilings", type=Path, default=None, metavar="FILE",
                        help="hw bench ceilings for the measured-peak MFU/MBU (default: the run's own --ceilings: its "
                             f"copy {CEILINGS_COPY} in the run folder, else the path its command gave, which must "
                             "then exist here, relative to the working folder)")
    parser.add_argument("--config", default=None, metavar="NAME_OR_PATH",
                        help="model config for the analytic work ('default', 'tiny' or a config.json path; "
                             "default: the run's --config, or its checkpoint's config.json)")
    parser.add_argument("--no-plots", action="store_true",
                        help="keep the run's plots as they are (they show timings only, which a rebuild does not "
                             "change); default: draw them again")
    parser.add_argument("--dry-run", action="store_true",
                        help="print how each run's MFU/MBU would change and write nothing")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar over the runs (default: only on a terminal)")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def utilization_changes(old: LLMProfileReport, new: LLMProfileReport, tol: float = 5e-5) -> list[str]:
    """``KIND stage old -> new`` for every MFU/MBU figure of metrics.json (fractions of the datasheet peak) that
    moved by more than ``tol``, appeared or went."""
    out: list[str] = []
    for kind, a, b in (("MFU", old.stage_mfu, new.stage_mfu), ("MBU", old.stage_mbu, new.stage_mbu)):
        for stage in Stage:
            x, y = a.get(stage), b.get(stage)
            if (x is None) != (y is None) or (x is not None and y is not None and abs(x - y) > tol):
                out.append(f"{kind} {stage.value} {_pct(x)} -> {_pct(y)}")
    x, y = old.model_mfu, new.model_mfu
    if (x is None) != (y is None) or (x is not None and y is not None and abs(x - y) > tol):
        out.append(f"MFU model {_pct(x)} -> {_pct(y)}")
    return out


def rebuild_one(run_dir: Path, args: argparse.Namespace) -> tuple[RunOutcome, list[str]]:
    """The rebuilt outcome of one run folder and its MFU/MBU changes; writes the reports unless --dry-run."""
    loaded = load_runner(run_dir)
    runner, s = loaded.runner, loaded.runner.options.settings
    own = peak_flags(runner.options.command)
    copies = {name: runner.artifact_dir / name for name in (CEILINGS_COPY, CATALOG_COPY)}
    for name, flag in ((CEILINGS_COPY, "ceilings"), (CATALOG_COPY, "catalog")):  # the run's own copies first
        if copies[name].is_file() and getattr(own, flag) is not None:
            setattr(own, flag, copies[name])
    flags = argparse.Namespace(gpu=args.gpu if args.gpu is not None else own.gpu,
                               catalog=args.catalog if args.catalog is not None else own.catalog,
                               ceilings=args.ceilings if args.ceilings is not None else own.ceilings)
    try:
        check_peak_files(flags, device_type="cuda" if s.device.startswith("cuda") else s.device)
    except UserError as exc:
        origin = "" if (args.ceilings or args.catalog) else " (from the run's command; pass the flag to override)"
        raise UserError(f"{exc}{origin}") from None
    runner.model_config = model_config(s, args.config)
    pages = runner.pages

    def work_fn_factory(config: DeepseekOCRConfig) -> tuple[WorkFn, str]:
        return make_work_fn(config, pages, mode=s.mode, dtype=s.dtype, attn_implementation=s.attn_implementation,
                            experts_implementation=s.experts_implementation,
                            no_repeat_ngram_size=s.no_repeat_ngram_size), ANALYTIC_NOTE

    runner.work_fn_factory = work_fn_factory
    runner.peaks_resolver = make_peaks_resolver(flags, s.dtype)
    runner.notes.append(rebuild_note())
    outcome = runner.build_outcome(loaded.env, loaded.interrupted)
    changes = utilization_changes(loaded.report, outcome.report)
    if not args.dry_run:
        from llm_perf_opt.reporting.profile_artifacts import write_artifacts

        write_artifacts(outcome, plots=not args.no_plots)
    return outcome, changes


def run(args: argparse.Namespace) -> int:
    """Rebuild every run folder given; one line per run, errors included (exit 1 when any failed)."""
    failed = 0
    bar = progress_bar(len(args.run_dirs), args.progress, "runs", "run")
    try:
        for run_dir in args.run_dirs:
            try:
                outcome, changes = rebuild_one(run_dir, args)
            except UserError as exc:
                failed += 1
                print(f"llm-perf-opt rebuild: error: {run_dir}: {exc}", file=sys.stderr, flush=True)
            else:
                what = "; ".join(changes) if changes else "MFU/MBU unchanged"
                verb = "would be rebuilt" if args.dry_run else "rebuilt"
                print(f"{outcome.report.meta.run_id}: {verb}: {what}", flush=True)
            bar.update(1)
    finally:
        bar.close()
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m llm_perf_opt.runners.rebuild_cli`."""
    parser = CommandParser(prog="llm-perf-opt rebuild", description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_guarded(lambda: run(args), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
