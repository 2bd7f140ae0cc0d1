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
from llm_perf_opt.profiling.analytic_work import session_work_fn_factory
from llm_perf_opt.profiling.rebuild import load_runner, model_config, peak_flags, rebuild_note
from llm_perf_opt.profiling.run import ANALYTIC_FAILED_NOTE, CATALOG_COPY, CEILINGS_COPY, RunOutcome
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
    pairs = [(f"{kind} {stage.value}", a.get(stage), b.get(stage))
             for kind, a, b in (("MFU", old.stage_mfu, new.stage_mfu), ("MBU", old.stage_mbu, new.stage_mbu))
             for stage in Stage]
    pairs.append(("MFU model", old.model_mfu, new.model_mfu))
    return [f"{name} {_pct(x)} -> {_pct(y)}" for name, x, y in pairs
            if (x is None) != (y is None) or (x is not None and y is not None and abs(x - y) > tol)]


def _warn(msg: str) -> None:
    print(f"llm-perf-opt rebuild: {msg}", file=sys.stderr, flush=True)


def rebuild_one(run_dir: Path, args: argparse.Namespace) -> tuple[RunOutcome, list[str]]:
    """The rebuilt outcome of one run folder and its MFU/MBU changes; writes the reports unless --dry-run.
    A folder that cannot be rebuilt is a UserError naming it."""
    folder = Path(run_dir).resolve()
    try:
        return _rebuild(run_dir, args)
    except UserError as exc:
        text = str(exc)
        raise UserError(text if text.startswith(str(folder)) else f"{folder}: {text}") from None
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a value of a type the files never hold
        raise UserError(f"{folder}: a file holds a value this version cannot read "
                        f"({type(exc).__name__}: {exc})") from None


def _rebuild(run_dir: Path, args: argparse.Namespace) -> tuple[RunOutcome, list[str]]:
    folder = Path(run_dir).resolve()

    def log(msg: str) -> None:  # the analytic model's failure is this folder's error line below, not a warning
        if ANALYTIC_FAILED_NOTE not in msg:
            _warn(f"{folder}: {msg}")

    loaded = load_runner(run_dir, log=log)
    runner, s = loaded.runner, loaded.runner.options.settings
    own = peak_flags(runner.options.command)
    copies = {name: runner.artifact_dir / name for name in (CEILINGS_COPY, CATALOG_COPY)}
    for name, flag in ((CEILINGS_COPY, "ceilings"), (CATALOG_COPY, "catalog")):  # the run's own copies first
        if copies[name].is_file() and getattr(own, flag) is not None:
            setattr(own, flag, copies[name])
    flags = argparse.Namespace(gpu=args.gpu if args.gpu is not None else own.gpu,
                               catalog=args.catalog if args.catalog is not None else own.catalog,
                               ceilings=args.ceilings if args.ceilings is not None else own.ceilings)
    # ceilings measured on another GPU than the one whose peaks apply are refused here, as by the profiler; the
    # run's GPU is its env.json's catalogue key when no --gpu says otherwise
    env_gpu = loaded.env.get("gpu")
    gpu = env_gpu if isinstance(env_gpu, dict) else {}
    checked = argparse.Namespace(gpu=flags.gpu or gpu.get("catalog_key"), catalog=flags.catalog,
                                 ceilings=flags.ceilings)
    try:
        check_peak_files(checked, device_type="cuda" if s.device.startswith("cuda") else s.device,
                         gpu_origin="--gpu" if flags.gpu else "the run's GPU")
    except UserError as exc:
        from_run = [flag for flag, given, used in (("--gpu", args.gpu, checked.gpu),
                                                   ("--catalog", args.catalog, flags.catalog),
                                                   ("--ceilings", args.ceilings, flags.ceilings))
                    if given is None and used is not None and flag in str(exc)]
        hint = f" ({', '.join(from_run)} from the run; pass the flag to override)" if from_run else ""
        raise UserError(f"{exc}{hint}") from None
    runner.model_config = model_config(s, args.config)
    runner.work_fn_factory = session_work_fn_factory(s, runner.pages)
    runner.peaks_resolver = make_peaks_resolver(flags, s.dtype)
    overrides = [f"{flag} {value}" for flag, value in (("--gpu", args.gpu), ("--catalog", args.catalog),
                                                       ("--ceilings", args.ceilings), ("--config", args.config))
                 if value is not None]
    runner.notes.append(rebuild_note(overrides))
    outcome = runner.build_outcome(loaded.env, loaded.interrupted)
    failed = [n for n in outcome.notes if n.startswith(ANALYTIC_FAILED_NOTE)]
    if failed:  # the run's MFU/MBU would be lost: refuse rather than write reports without them
        raise UserError(failed[0])
    changes = utilization_changes(loaded.report, outcome.report)
    if not args.dry_run:
        from llm_perf_opt.data.io import all_or_nothing
        from llm_perf_opt.reporting.profile_artifacts import write_artifacts

        with all_or_nothing():  # stopped part way, the folder keeps every old file: no new metrics under old reports
            write_artifacts(outcome, plots=not args.no_plots)
    return outcome, changes


def run(args: argparse.Namespace) -> int:
    """Rebuild every run folder given; one line per run, errors included (exit 1 when any failed)."""
    if args.dry_run and args.no_plots:
        raise UserError("--no-plots with --dry-run does nothing: a dry run writes no file")
    failed = 0
    bar = progress_bar(len(args.run_dirs), args.progress, "runs", "run")
    try:
        for run_dir in args.run_dirs:
            try:
                outcome, changes = rebuild_one(run_dir, args)
            except UserError as exc:
                failed += 1
                _warn(f"error: {exc}")
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
