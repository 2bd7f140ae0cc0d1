"""Time to build the analytic report for each resolution mode on CPU (no weights, no model build).

    python benchmarks/bench_analytic_report.py [--repeats 5] [--gpu h100-sxm]

Prints one row per mode (median of the repeats, full module tree and top-modules-only) and the
total for all five modes; the goal is well under 2 s for the five together.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from llm_perf_opt.analytic.workloads import get_profile
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.runners.dsocr_analyzer import DEFAULT_GPU, DeepseekOCRStaticAnalyzer

MODES = ("tiny", "small", "base", "large", "gundam")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed builds per mode (median reported)")
    parser.add_argument("--gpu", default=DEFAULT_GPU, help="GPU catalogue key")
    args = parser.parse_args(argv)
    analyzer = DeepseekOCRStaticAnalyzer()
    config = DeepseekOCRConfig.default()
    analyzer.analyze(config, get_profile("dsocr-base-v1"), args.gpu)  # warm-up (imports, caches)
    print(f"{'mode':<8} {'full tree ms':>13} {'top modules ms':>15} {'snapshots':>10}")
    totals = [0.0, 0.0]
    for mode in MODES:
        workload = get_profile(f"dsocr-{mode}-v1")
        row = []
        snapshots = 0
        for depth in (None, 1):
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                report = analyzer.analyze(config, workload, args.gpu, max_depth=depth)
                times.append(time.perf_counter() - start)
                if depth is None:
                    snapshots = len(report.snapshots)
            row.append(statistics.median(times))
        totals[0] += row[0]
        totals[1] += row[1]
        print(f"{mode:<8} {row[0] * 1e3:>13.1f} {row[1] * 1e3:>15.1f} {snapshots:>10}")
    print(f"{'total':<8} {totals[0] * 1e3:>13.1f} {totals[1] * 1e3:>15.1f}   (goal: well under 2000 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
