"""Recompute an exported analytic report under changed parameters (no model build, no weights).

Every list flag takes one or more values; the scenarios are their cartesian
product. A flag left out keeps the report's value. Writes one CSV and one
JSON (one row per scenario; columns in docs/what-if.md) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from llm_perf_opt.analytic.calibration import Calibration, load_calibration
from llm_perf_opt.analytic.model import NGRAM_BAN_ROW_LAUNCHES
from llm_perf_opt.cli import CommandParser, non_negative_int, progress_bar, run_guarded
from llm_perf_opt.compare.analytic import load_analytic_report
from llm_perf_opt.compare.whatif import (
    COLUMNS,
    WHATIF_SCHEMA,
    Scenario,
    WhatIfRow,
    expand_sweep,
    rows_as_dicts,
    run_what_if,
    write_csv,
)
from llm_perf_opt.data.analytic import AnalyticModelReport
from llm_perf_opt.data.validators import is_safe_id
from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.catalog import load_catalog
from llm_perf_opt.vocab import DEFAULT_NO_REPEAT_NGRAM, Stage


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size {text!r} is not WIDTHxHEIGHT (e.g. 1700x2200)") from None


def _grid(text: str) -> tuple[int, int]:
    try:
        r, c = text.lower().split("x")
        return int(r), int(c)
    except ValueError:
        raise argparse.ArgumentTypeError(f"tiles {text!r} is not ROWSxCOLS (e.g. 3x2)") from None


def _probe(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"host probe {text!r} is not a number of us/op") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"host probe {text!r} must be a finite number >= 0 us/op")
    return value + 0.0  # -0 -> 0.0


def _jobs(text: str) -> int:
    """--jobs: N >= 1 processes, or 0 for one per core this process may use."""
    value = non_negative_int(text)
    if value:
        return value
    affinity = getattr(os, "sched_getaffinity", None)  # the cores this process may run on (cgroups, taskset)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def _graph_set(text: str) -> tuple[str, ...]:
    """'none', 'all' or comma-separated stage names -> the stages, in pipeline order."""
    stages = [st.value for st in Stage]
    if text == "none":
        return ()
    if text == "all":
        return tuple(stages)
    wanted = [t for t in text.split(",") if t]
    if not wanted or any(t not in stages for t in wanted):
        raise argparse.ArgumentTypeError(f"CUDA-graph stages {text!r}: give none, all or stages among "
                                         f"{', '.join(stages)} (comma-separated)")
    return tuple(st for st in stages if st in wanted)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `llm-perf-opt what-if`."""
    parser.add_argument("--report", required=True, type=Path, metavar="REPORT",
                        help="exported AnalyticModelReport (JSON or YAML) to start from")
    parser.add_argument("--gpu", nargs="+", default=None, metavar="KEY",
                        help="GPU catalogue keys or aliases (llm-perf-opt hw list)")
    parser.add_argument("--dtype", nargs="+", default=None, metavar="DTYPE", help="compute dtypes (bf16, fp16, fp32, fp8)")
    parser.add_argument("--mode", nargs="+", default=None, metavar="MODE",
                        help="resolution modes: tiny, small, base, large, gundam")
    parser.add_argument("--image-size", nargs="+", type=_size, default=None, metavar="WxH",
                        help="page sizes in pixels, e.g. 1700x2200 (Gundam tiles follow from it)")
    parser.add_argument("--tiles", nargs="+", type=_grid, default=None, metavar="RxC",
                        help="Gundam tile grids rows x cols (e.g. 2x3); sets the page to 640*cols x 640*rows px; "
                             "not together with --image-size")
    parser.add_argument("--prompt-text-tokens", nargs="+", type=int, default=None, metavar="N",
                        help="prompt tokens besides the image slots (BOS included)")
    parser.add_argument("--max-new-tokens", nargs="+", type=int, default=None, metavar="N",
                        help="decode steps per page")
    parser.add_argument("--batch-size", nargs="+", type=int, default=None, metavar="N", help="pages per pass")
    parser.add_argument("--no-repeat-ngram-size", nargs="+", type=int, default=None, metavar="N",
                        help=f"greedy decoding's n-gram ban ({DEFAULT_NO_REPEAT_NGRAM}: the reference's and the "
                             f"profiler's default; 0: off); the ban adds {NGRAM_BAN_ROW_LAUNCHES:g} launches per page "
                             "and token to the decode step (analytic.model.NGRAM_BAN_ROW_LAUNCHES)")
    parser.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                        help="calibration JSON (llm-perf-opt calibrate) used by calibrated scenarios")
    parser.add_argument("--calibrated", choices=("off", "on", "both"), default=None,
                        help="pure roofline (off), calibrated (on) or both; default: on with --calibration, else off")
    parser.add_argument("--host-probe-us", nargs="+", type=_probe, default=None, metavar="US",
                        help="calibrated scenarios on a host of this speed: its host-speed probe in us/op, of the "
                             "calibration's probe kind (llm-perf-opt hw probe measures it; a timeline calibration, "
                             "fitted on probed runs unless the probe is 0); 0 = every stage replayed from CUDA "
                             "graphs (no host cost, the graph's gap between kernels); default: the calibration's "
                             "own host")
    parser.add_argument("--cuda-graphs", nargs="+", type=_graph_set, default=None, metavar="STAGES",
                        help="calibrated scenarios with these stages replayed from CUDA graphs (no host or sync "
                             "cost, the graph's gap between kernels; a timeline calibration): each value none, all "
                             "or comma-separated stages, e.g. decode or prefill,decode; one sweep value each; the "
                             "other stages keep the host of --host-probe-us; default none")
    parser.add_argument("--out", type=Path, default=Path("tmp/what-if"), metavar="DIR",
                        help="folder for <name>.csv and <name>.json (default tmp/what-if)")
    parser.add_argument("--name", default=None, help="output file stem (default: what-if-<report_id>)")
    parser.add_argument("--catalog", type=Path, default=None, metavar="YAML",
                        help="extra GPU catalogue file layered over the packaged one")
    parser.add_argument("--jobs", type=_jobs, default=1, metavar="N",
                        help="processes that run the sweep's distinct analyses (default 1; 0: one per CPU core); "
                             "rows and files are the same for any N")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar on stderr (default: only on a terminal)")
    parser.add_argument("--quiet", action="store_true", help="print only the output paths")


def _graphs_cell(stages: str | None) -> str:
    """The graph_stages column in the printed table: '-' for none, 'all' for every stage."""
    if not stages:
        return "-"
    return "all" if stages == "+".join(st.value for st in Stage) else stages


def print_rows(rows: Sequence[WhatIfRow], limit: int = 40) -> None:
    """A short table of the scenarios."""
    print(f"{'#':>4} {'gpu':<14} {'dtype':<5} {'mode':<7} {'tiles':>5} {'ptok':>5} {'new':>5} {'batch':>5} {'ngram':>5} "
          f"{'cal':<3} "
          f"{'host us':>7} {'graphs':<7} "
          f"{'vision ms':>10} {'prefill ms':>10} {'decode ms':>11} {'total ms':>11} {'pages/day':>12} {'mem GB':>8} fits")
    for r in rows[:limit]:
        vision = r.vision_sam_ms + r.vision_clip_ms + r.projector_ms
        print(f"{r.scenario_id:>4} {r.gpu_key:<14} {r.dtype:<5} {r.mode:<7} {r.tiles:>5} {r.prefill_tokens:>5} "
              f"{r.max_new_tokens:>5} {r.batch_size:>5} {r.no_repeat_ngram_size:>5} {'on' if r.calibrated else 'off':<3} "
              f"{'-' if r.host_probe_us is None else f'{r.host_probe_us:.2f}':>7} "
              f"{_graphs_cell(r.graph_stages):<7} {vision:>10.3f} "
              f"{r.prefill_ms:>10.3f} {r.decode_ms:>11.3f} {r.total_ms:>11.3f} {r.pages_per_day:>12,.0f} "
              f"{r.memory_total_bytes / 1e9:>8.2f} {'yes' if r.fits else 'NO'}")
    if len(rows) > limit:
        print(f"... {len(rows) - limit} more rows in the CSV/JSON")


def _write(rows: Sequence[WhatIfRow], scenarios: Sequence[Scenario], report: AnalyticModelReport,
           calibration: Calibration | None, csv_path: Path, json_path: Path, *, complete: bool) -> None:
    """The CSV and the JSON of ``rows`` (``complete`` False: the rows done of an interrupted or failed sweep;
    the JSON's ``scenarios`` lists every scenario asked for)."""
    write_csv(rows, csv_path)
    fields = {a.name: a.metadata.get("help", "") for a in WhatIfRow.__attrs_attrs__}
    payload = {
        "schema_version": WHATIF_SCHEMA, "report_id": report.report_id, "report_schema": report.schema_version,
        "base_gpu_key": report.gpu_key, "base_workload": report.workload.profile_id,
        "calibration": calibration.describe() if calibration is not None else None,
        "columns": {c: fields[c] for c in COLUMNS},
        "complete": complete,
        "scenarios": [sc.changes() for sc in scenarios], "rows": rows_as_dicts(rows),
    }
    json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    """Sweep, write CSV + JSON, print."""
    report = load_analytic_report(args.report)
    calibration = load_calibration(args.calibration) if args.calibration is not None else None
    mode = args.calibrated or ("on" if calibration is not None else "off")
    if mode != "off" and calibration is None:
        raise UserError(f"--calibrated {mode} needs --calibration FILE")
    cal_values = {"off": [False], "on": [True], "both": [False, True]}[mode]
    for flag, given in (("--host-probe-us", args.host_probe_us), ("--cuda-graphs", args.cuda_graphs)):
        if given and mode == "off":
            raise UserError(f"{flag} applies to calibrated scenarios: give --calibration FILE"
                            + (" and drop --calibrated off" if calibration is not None else ""))
    if mode == "off" and calibration is not None:
        raise UserError("--calibrated off leaves --calibration unused: drop one of them (or --calibrated both)")
    if args.name is not None and not is_safe_id(args.name):
        raise UserError(f"--name {args.name!r}: a file stem of letters, digits and '._:+-' (no spaces or path "
                        "separators)")
    if args.tiles and args.image_size:
        raise UserError("give --tiles or --image-size, not both")
    catalog = load_catalog(args.catalog)
    scenarios = expand_sweep(gpus=args.gpu or [None], dtypes=args.dtype or [None], modes=args.mode or [None],
                             image_sizes=args.image_size or [None], tiles=args.tiles or [None],
                             prompt_text_tokens=args.prompt_text_tokens or [None],
                             max_new_tokens=args.max_new_tokens or [None], batch_sizes=args.batch_size or [None],
                             no_repeat_ngram_sizes=args.no_repeat_ngram_size or [None], calibrated=cal_values, host_probes_us=args.host_probe_us or [None],
                             graph_stages=args.cuda_graphs or [None])
    stem = args.name or f"what-if-{report.report_id}"
    csv_path, json_path = args.out / f"{stem}.csv", args.out / f"{stem}.json"
    done: list[WhatIfRow] = []
    # --quiet prints only the paths: no bar unless --progress asks for one
    bar = progress_bar(len(scenarios), args.progress if args.progress is not None else (False if args.quiet else None),
                       "scenarios", "scenario")

    def on_row(row: WhatIfRow) -> None:
        done.append(row)
        bar.update(1)

    try:
        rows = run_what_if(report, scenarios, calibration=calibration, catalog=catalog, jobs=args.jobs,
                           on_row=on_row)
    except BaseException as exc:
        bar.close()
        if not done or not isinstance(exc, Exception | KeyboardInterrupt):
            raise
        done.sort(key=lambda r: r.scenario_id)
        complete = len(done) == len(scenarios)
        _write(done, scenarios, report, calibration, csv_path, json_path, complete=complete)
        where = f"the {len(done)} of {len(scenarios)} rows done are in {csv_path} and {json_path}"
        if isinstance(exc, KeyboardInterrupt):
            print(f"llm-perf-opt what-if: interrupted; {where}", file=sys.stderr)
            return 130
        if isinstance(exc, UserError):
            raise UserError(f"{exc} ({where})") from exc
        print(f"llm-perf-opt what-if: {where}", file=sys.stderr)
        raise
    bar.close()
    _write(rows, scenarios, report, calibration, csv_path, json_path, complete=True)
    if not args.quiet:
        print_rows(rows)
    print(f"wrote {csv_path}")
    print(f"wrote {json_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m llm_perf_opt.runners.what_if_cli`."""
    parser = CommandParser(prog="llm-perf-opt what-if", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_guarded(lambda: run(args), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
