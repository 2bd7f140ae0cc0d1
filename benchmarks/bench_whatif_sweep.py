#!/usr/bin/env python
"""Time a 1,000-scenario what-if sweep on CPU (no model build, no GPU).

Starts from the analytic report of the standard workload (dsocr-standard-v1: Gundam,
1700x2200 page, 1024 new tokens, bf16) on an H100 SXM and sweeps
5 GPUs x 5 modes x 5 batch sizes x 8 output lengths = 1,000 scenarios, every
one a distinct analysis (nothing cached across scenarios).

    PYTHONPATH=src python benchmarks/bench_whatif_sweep.py [--out DIR] [--calibration CAL] [--jobs N]

With ``--jobs N`` (N > 1) the uncalibrated sweep runs again over N processes (run_what_if(jobs=N)) and the
two times are printed side by side, with a check that the rows are the same.

With ``--calibration`` (a timeline calibration, e.g. calibrate --prior) it then times a calibrated sweep on
the calibration's GPU: 5 modes x 5 batch sizes x 8 output lengths = 200 scenarios through the host/device
timeline model, whose decode runs as 8 groups of forwards (AnalyticModel.decode_segments).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.analytic.report import build_report
from llm_perf_opt.analytic.roofline import RooflinePeaks
from llm_perf_opt.analytic.workloads import get_profile
from llm_perf_opt.compare.analytic import load_analytic_report
from llm_perf_opt.compare.whatif import expand_sweep, run_what_if, write_csv
from llm_perf_opt.data.io import dump_json
from llm_perf_opt.hardware.bench import effective_peaks
from llm_perf_opt.hardware.catalog import load_catalog
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig

GPUS = ["h100-sxm", "b200", "a100-sxm4-80gb", "l40s", "h200"]
MODES = ["tiny", "small", "base", "large", "gundam"]
BATCHES = [1, 2, 4, 8, 16]
NEW_TOKENS = [64, 128, 256, 512, 768, 1024, 1536, 2048]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the sweep CSV (default: a temp folder)")
    parser.add_argument("--calibration", type=Path, default=None, metavar="CAL",
                        help="a timeline calibration (calibrate --prior or --time-model timeline): also time a "
                             "calibrated sweep (200 scenarios) on its GPU")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="also run the uncalibrated sweep over N processes and print both times (default 1: "
                             "one process only)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-whatif-"))
    catalog = load_catalog()
    wl = get_profile("dsocr-standard-v1")
    peaks = RooflinePeaks.from_effective(effective_peaks(catalog.get("h100-sxm")), wl.dtype)
    report_path = dump_json(build_report(AnalyticModel(DeepseekOCRConfig.default(), wl), peaks), out / "base.json")
    t0 = time.perf_counter()
    report = load_analytic_report(report_path)
    scenarios = expand_sweep(gpus=GPUS, modes=MODES, batch_sizes=BATCHES, max_new_tokens=NEW_TOKENS)
    rows = run_what_if(report, scenarios, catalog=catalog)
    csv_path = write_csv(rows, out / "sweep.csv")
    elapsed = time.perf_counter() - t0
    print(f"what-if sweep: {len(rows)} scenarios in {elapsed:.2f} s ({elapsed / len(rows) * 1e3:.2f} ms per scenario, "
          f"report load and CSV write included) -> {csv_path}")
    if args.jobs > 1:
        t0 = time.perf_counter()
        rows_n = run_what_if(load_analytic_report(report_path), scenarios, catalog=catalog, jobs=args.jobs)
        par = time.perf_counter() - t0
        print(f"what-if sweep over {args.jobs} processes: {len(rows_n)} scenarios in {par:.2f} s "
              f"({elapsed / par:.2f}x the one-process time, {os.cpu_count()} CPU cores here; rows "
              f"{'identical' if rows_n == rows else 'DIFFERENT'})")
    if args.calibration is not None:
        from llm_perf_opt.analytic.calibration import load_calibration

        cal = load_calibration(args.calibration)
        t0 = time.perf_counter()
        scenarios = expand_sweep(gpus=[cal.gpu_key], modes=MODES, batch_sizes=BATCHES, max_new_tokens=NEW_TOKENS,
                                 calibrated=[True])
        rows = run_what_if(report, scenarios, calibration=cal, catalog=catalog)
        csv_path = write_csv(rows, out / "sweep-calibrated.csv")
        elapsed = time.perf_counter() - t0
        print(f"calibrated what-if sweep ({cal.gpu_key}, {args.calibration.name}): {len(rows)} scenarios in "
              f"{elapsed:.2f} s ({elapsed / len(rows) * 1e3:.1f} ms per scenario) -> {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
