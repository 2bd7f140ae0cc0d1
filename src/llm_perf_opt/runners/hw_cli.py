"""GPU catalogue: list, show, detect the local GPU, benchmark its ceilings, its kernel gaps and the host's speed.

    llm-perf-opt hw list [--json]
    llm-perf-opt hw show KEY [--json]
    llm-perf-opt hw detect [--json] [--out FILE]
    llm-perf-opt hw bench [--out FILE] [--json] [--dtypes bf16,fp16] [--size 8192] [--pattern-sides 14,64] ...
    llm-perf-opt hw gemms --ceilings FILE --out FILE [--gemm-workloads base:1,small:320:1024] [--repeats N]
    llm-perf-opt hw gap --ceilings FILE --out FILE [--repeats N]
    llm-perf-opt hw probe [--device cuda:0] [--probes add,module] [--samples N] [--decode-step] [--out FILE] [--json]

Every subcommand accepts ``--catalog FILE``: a user YAML (same schema as the
packaged gpus.yaml) whose entries are added to, or replace, the packaged ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from llm_perf_opt.analytic.gemm_shapes import (
    DEFAULT_GEMM_BATCHES,
    GEMM_WORKLOAD_NEW_TOKENS,
    default_gemm_workloads,
    parse_gemm_workload,
    workload_gemm_keys,
)
from llm_perf_opt.cli import non_negative_int
from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.bench import (
    BENCH_DTYPES,
    DEFAULT_DTYPES,
    DEFAULT_INNER,
    DEFAULT_MATMUL_SIZE,
    DEFAULT_REPEATS,
    DEFAULT_WARMUP,
    GemmTimingStopped,
    MeasuredCeilings,
    NoGpuError,
    add_gemm_times,
    load_ceilings,
    measure_graph_kernel_gap,
    measure_kernel_gap,
    run_bench,
    save_ceilings,
)
from llm_perf_opt.hardware.catalog import GIB, MIB, TERA, GpuCatalog, GpuSpec, load_catalog
from llm_perf_opt.hardware.detect import DetectedGpu, detect_gpu
from llm_perf_opt.hardware.gemms import gemm_flops
from llm_perf_opt.hardware.patterns import DEFAULT_PATTERN_SIDES
from llm_perf_opt.vocab import DType, parse_dtype

PROG = "llm-perf-opt hw"


def _dtype_list(text: str) -> list[DType]:
    out = []
    for part in text.split(","):
        try:
            dt = parse_dtype(part)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if dt not in BENCH_DTYPES:
            raise argparse.ArgumentTypeError(
                f"{dt} matmuls are not benchmarked; choose from {', '.join(map(str, BENCH_DTYPES))}")
        out.append(dt)
    return list(dict.fromkeys(out))


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _sides(text: str) -> list[int]:
    if text.strip().lower() == "none":
        return []
    return list(dict.fromkeys(_positive_int(part) for part in text.split(",")))


def _workloads(text: str) -> list[str]:
    if text.strip().lower() == "none":
        return []
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        for part in parts:
            parse_gemm_workload(part)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not parts:
        raise argparse.ArgumentTypeError("give MODE:BATCH[:TOKENS][,...] or none")
    return list(dict.fromkeys(parts))


def _gemm_keys(workloads: list[str] | None) -> tuple[list[str], list[str]]:
    """(workloads, their GEMM keys); the default workloads when None, nothing for an empty list."""
    chosen = default_gemm_workloads() if workloads is None else workloads
    return chosen, (workload_gemm_keys(chosen) if chosen else [])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the hw subcommands (list, show, detect, bench, gemms, gap, probe) to ``parser``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--catalog", type=Path, default=None, metavar="FILE",
                        help="user GPU catalogue YAML (same schema as the packaged gpus.yaml) that adds "
                             "entries or replaces entries with the same key")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub = parser.add_subparsers(dest="hw_command", metavar="HW_COMMAND", required=True)

    sub.add_parser("list", parents=[common], help="catalogued GPUs with their dense peaks",
                   description="List catalogued GPUs: dense peak TFLOP/s per dtype, bandwidth, memory, SMs, L2.")

    show = sub.add_parser("show", parents=[common], help="one GPU's numbers and their sources",
                          description="Show one catalogue entry with the source of every number.")
    show.add_argument("name", metavar="KEY", help="catalogue key, alias or driver name (exact, case-insensitive)")

    detect = sub.add_parser("detect", parents=[common], help="the local GPU and its catalogue entry",
                            description="Detect the local CUDA GPU: name, memory, catalogue key, clocks, "
                                        "driver and CUDA versions.")
    detect.add_argument("--device", type=non_negative_int, default=0, help="CUDA device index (default 0)")
    detect.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="also write the detection as JSON to FILE")

    bench = sub.add_parser("bench", parents=[common], help="measure achievable matmul FLOP/s and bandwidth",
                           description="Measure the local GPU's achievable matmul rate per dtype and device "
                                       "memory bandwidth (CUDA events, warm-up, median of repeats).")
    bench.add_argument("--device", type=non_negative_int, default=0, help="CUDA device index (default 0)")
    bench.add_argument("--out", type=Path, default=None, metavar="FILE",
                       help="write the measured ceilings here (.json or .yaml); load with load_ceilings")
    bench.add_argument("--dtypes", type=_dtype_list, default=list(DEFAULT_DTYPES),
                       help="comma-separated matmul dtypes to measure, from "
                            f"{','.join(map(str, BENCH_DTYPES))} (default {','.join(map(str, DEFAULT_DTYPES))})")
    bench.add_argument("--size", type=_positive_int, default=DEFAULT_MATMUL_SIZE,
                       help=f"square matmul side n, n x n @ n x n (default {DEFAULT_MATMUL_SIZE})")
    bench.add_argument("--warmup", type=non_negative_int, default=DEFAULT_WARMUP,
                       help=f"untimed calls before timing each measurement (default {DEFAULT_WARMUP})")
    bench.add_argument("--repeats", type=_positive_int, default=DEFAULT_REPEATS,
                       help=f"timed repeats; the median is reported (default {DEFAULT_REPEATS})")
    bench.add_argument("--inner", type=_positive_int, default=DEFAULT_INNER,
                       help=f"operations per timed repeat between one pair of CUDA events (default {DEFAULT_INNER})")
    bench.add_argument("--copy-mib", type=_positive_int, default=None,
                       help="size of each copy buffer in MiB (default max(2 GiB, 8 x the GPU's L2), "
                            "capped by free memory)")
    bench.add_argument("--pattern-sides", type=_sides, default=list(DEFAULT_PATTERN_SIDES), metavar="S,S,...|none",
                       help="token-grid sides at which to measure the access-pattern bandwidths of eager "
                            "decomposed-rel-pos attention (outer add, permuted copy, bias add, fp32 casts and "
                            "softmax; llm_perf_opt.hardware.patterns), or 'none' to skip them (default "
                            f"{','.join(map(str, DEFAULT_PATTERN_SIDES))})")
    bench.add_argument("--gemm-workloads", type=_workloads, default=None, metavar="MODE:BATCH[:TOKENS],...|none",
                       help="time the GEMMs (shapes as the model calls them, queued behind other work) of the "
                            "analytic model of these workloads, standard page and prompt, eager attention, TOKENS "
                            f"new tokens (default {GEMM_WORKLOAD_NEW_TOKENS}; the decode steps' attention shapes "
                            "follow from it) (llm_perf_opt.hardware.gemms), or 'none' to skip them (default: every "
                            f"mode at batch {', '.join(map(str, DEFAULT_GEMM_BATCHES))})")
    # gemms and gap: measure one more figure and write it into an existing ceilings file
    edit = argparse.ArgumentParser(add_help=False, parents=[common])
    edit.add_argument("--ceilings", type=Path, required=True, metavar="FILE",
                      help="ceilings file of this GPU model (hw bench --out) to add the measurement to")
    edit.add_argument("--out", type=Path, required=True, metavar="FILE",
                      help="where to write the ceilings with it (.json or .yaml; may be --ceilings)")
    edit.add_argument("--device", type=non_negative_int, default=0, help="CUDA device index (default 0)")
    gemms = sub.add_parser("gemms", parents=[edit], help="add GEMM times to a ceilings file",
                           description="Time the GEMMs of the analytic model of the given workloads on the local "
                                       "GPU and write an existing ceilings file (hw bench --out) with them added; "
                                       "the other figures are kept as measured.")
    gemms.add_argument("--repeats", type=_positive_int, default=DEFAULT_REPEATS,
                       help=f"timed repeats per GEMM; the median is used (default {DEFAULT_REPEATS})")
    gemms.add_argument("--gemm-workloads", type=_workloads, default=None, metavar="MODE:BATCH[:TOKENS],...",
                       help="workloads whose GEMM shapes to time, TOKENS new tokens each (default "
                            f"{GEMM_WORKLOAD_NEW_TOKENS}; e.g. small:320:1024 for a long decode's attention) "
                            "(default: every mode at batch "
                            f"{', '.join(map(str, DEFAULT_GEMM_BATCHES))})")
    gap = sub.add_parser("gap", parents=[edit],
                         help="add the device's gaps between kernels (queued on a stream, replayed from a CUDA "
                              "graph) to a ceilings file",
                         description="Measure the local GPU's two gaps between kernels, each from a torch.profiler "
                                     "trace (next start minus previous end): between small kernels of mixed kinds "
                                     "(add, multiply, 64x64 matmul, softmax, copy) queued back to back on a stream "
                                     "behind matmuls, and between the same kernels replayed from one CUDA graph; "
                                     "write an existing ceilings file (hw bench --out) with both added; the "
                                     "other figures are kept as measured (when only the graph gap fails, the "
                                     "stream gap is written and the command fails in one line). The timeline model adds a gap per kernel "
                                     "on top of the kernels' durations.")
    gap.add_argument("--repeats", type=_positive_int, default=DEFAULT_REPEATS,
                     help="bursts of queued small kernels, and replays of the graph of them, traced; the median gap "
                          f"is used (default {DEFAULT_REPEATS})")
    probe = sub.add_parser("probe", help="this host's speed: the profiler's host-speed probes",
                           description="Measure this host's speed as the profiler's passes do (the probes a "
                                       "timeline calibration scales its host costs by): 'add', host us per tiny "
                                       "in-place add, and 'module', host us per aten call of a tiny decoder "
                                       "forward (packaged config, eager attention, grouped_mm experts). Give "
                                       "the median to what-if --host-probe-us with a calibration of the same "
                                       "probe kind.")
    probe.add_argument("--device", default=None, metavar="DEVICE",
                       help="torch device to launch on (default: the first CUDA device; 'cpu' times CPU dispatch, "
                            "which no GPU calibration uses)")
    probe.add_argument("--probes", type=_probe_kinds, default=["add", "module"], metavar="KIND,...",
                       help="probes to take: add, module or add,module (default add,module)")
    probe.add_argument("--samples", type=_positive_int, default=10,
                       help="samples per probe, each the median of --reps loops (default 10)")
    probe.add_argument("--reps", type=_positive_int, default=3,
                       help="loops (add) or forwards (module) per sample (default 3, as the profiler's passes)")
    probe.add_argument("--interval", type=_non_negative_float, default=0.5, metavar="S",
                       help="seconds between samples, to see the host's drift (default 0.5)")
    probe.add_argument("--decode-step", action="store_true",
                       help="also build the full model (random bf16 weights, ~7 GB of GPU memory, ~20 s) and time "
                            "--reps decode steps of a Base page and --reps SAM passes of a Tiny page right after "
                            "each module sample: their host us per launch over the module probe's us per call, "
                            "which calibrate --prior --host-speed needs (CUDA, with the module probe)")
    probe.add_argument("--out", type=Path, default=None, metavar="FILE", help="also write the samples as JSON to FILE")
    probe.add_argument("--json", action="store_true", help="print JSON instead of a table")
    probe.add_argument("--from", dest="from_files", type=Path, nargs="+", default=None, metavar="FILE",
                       help="measure nothing: read host-speed files written by --out (any machine) and print their "
                            "table, several pooled into one (every median over all their samples, as calibrate "
                            "--prior --host-speed FILE FILE ... pools them); --out writes the pooled file. "
                            "--device, --probes, --samples, --reps, --interval and --decode-step do not apply")


def _probe_kinds(text: str) -> list[str]:
    from llm_perf_opt.hardware.host_speed import PROBE_UNITS

    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in PROBE_UNITS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"probes must be among {', '.join(PROBE_UNITS)}, got {text!r}")
    return list(dict.fromkeys(kinds))


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


# ------------------------------------------------------------------------------------------ rendering


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _peak_tflops(spec: GpuSpec, dtype: DType) -> float | None:
    if dtype is DType.FP32:
        return spec.cuda_core_fp32_flops_per_s / TERA
    value = spec.tensor_flops_per_s.get(dtype)
    return None if value is None else value / TERA


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_list(catalog: GpuCatalog) -> str:
    """Text table of every entry (dense TFLOP/s, TB/s, GiB, SMs, L2 MiB)."""
    header = ["key", "bf16", "fp16", "fp8", "tf32", "fp32", "TB/s", "GiB", "SMs", "L2 MiB", "name"]
    rows = []
    for s in catalog.specs():
        rows.append([s.key, *(_fmt(_peak_tflops(s, d)) for d in (DType.BF16, DType.FP16, DType.FP8,
                                                                   DType.TF32, DType.FP32)),
                     _fmt(s.memory_bandwidth_bytes_per_s / TERA, 3), _fmt(s.memory_bytes / GIB, 0),
                     "-" if s.sm_count is None else str(s.sm_count),
                     "-" if s.l2_bytes is None else _fmt(s.l2_bytes / MIB, 0), s.display_name])
    return ("Dense peaks in TFLOP/s (tensor cores; fp32 = CUDA cores), FP32 accumulate.\n"
            + _table(header, rows))


def render_show(spec: GpuSpec) -> str:
    """Text view of one entry with the source of every number."""
    lines = [f"{spec.key}: {spec.display_name} ({spec.architecture})",
             f"  aliases:      {', '.join(spec.aliases) or '-'}",
             f"  driver names: {', '.join(spec.driver_names) or '-'}",
             f"  tensor peaks assume {spec.tensor_accumulate} accumulate; all FLOP rates dense: {spec.dense}"]
    if spec.notes:
        lines.append(f"  notes: {spec.notes}")
    lines.append("  numbers:")
    human = {
        "bf16_dense_tflops": _peak_tflops(spec, DType.BF16), "fp16_dense_tflops": _peak_tflops(spec, DType.FP16),
        "fp8_dense_tflops": _peak_tflops(spec, DType.FP8), "tf32_dense_tflops": _peak_tflops(spec, DType.TF32),
        "fp32_cuda_core_tflops": _peak_tflops(spec, DType.FP32),
        "memory_bandwidth_tb_s": spec.memory_bandwidth_bytes_per_s / TERA,
        "memory_gib": spec.memory_bytes / GIB,
        "sm_count": spec.sm_count, "l2_mib": None if spec.l2_bytes is None else spec.l2_bytes / MIB,
    }
    for name, src in spec.sources.items():
        value = human.get(name)
        extra = f" (printed {src.sparse_listed:g} with sparsity)" if src.sparse_listed is not None else ""
        lines.append(f"    {name:<22} {value:g}{extra}")
        lines.append(f"      source: {src.source.title} [{src.source.kind}] -- {src.table}")
    missing = [n for n in ("fp8_dense_tflops", "sm_count", "l2_mib") if n not in spec.sources]
    if missing:
        lines.append(f"  not catalogued: {', '.join(missing)}")
    if spec.driver_names_source is not None:
        lines.append(f"  driver names source: {spec.driver_names_source.source.title} -- "
                     f"{spec.driver_names_source.table}")
    return "\n".join(lines)


def render_detect(gpu: DetectedGpu) -> str:
    """Text view of a detection."""
    clocks = gpu.clocks
    lines = [f"device {gpu.index}: {gpu.name}",
             f"  memory:     {gpu.memory_total_bytes / GIB:.2f} GiB ({gpu.memory_total_bytes} bytes)",
             f"  SMs:        {gpu.sm_count}   compute capability {gpu.compute_capability}",
             f"  catalogue:  {gpu.catalog_key or 'not resolved: ' + str(gpu.catalog_error)}",
             f"  torch {gpu.torch_version}, CUDA runtime {gpu.cuda_runtime_version or '-'}, "
             f"driver {gpu.driver_version or '-'} (supports CUDA {gpu.cuda_driver_version or '-'})"]
    if clocks is not None:
        lines.append(f"  clocks MHz: SM max {clocks.sm_max_mhz or '-'} (now {clocks.sm_current_mhz or '-'}), "
                     f"memory max {clocks.memory_max_mhz or '-'} (now {clocks.memory_current_mhz or '-'}) "
                     f"via {gpu.driver_info_via}")
    else:
        lines.append(f"  clocks / driver version missing: {gpu.driver_info_missing_reason}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ commands


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _detect_or_fail(index: int, catalog: GpuCatalog, command: str) -> DetectedGpu:
    gpu = detect_gpu(index, catalog=catalog)
    if gpu is None:
        raise NoGpuError(f"no CUDA GPU visible (torch.cuda.is_available() is False); hw {command} needs one")
    return gpu


def _cmd_bench(args: argparse.Namespace, catalog: GpuCatalog) -> int:
    gpu = _detect_or_fail(args.device, catalog, "bench")
    spec = catalog.get(gpu.catalog_key) if gpu.catalog_key else None
    if spec is None:
        print(f"{PROG} bench: warning: {gpu.catalog_error}; measuring without datasheet ratios", file=sys.stderr)
    progress = None if args.json else (lambda line: print(line, flush=True))
    saved: list[Path] = []

    def keep(partial: MeasuredCeilings) -> None:
        # the ceilings measured before the access patterns are on disk if the patterns fail
        if args.out is not None and (args.pattern_sides or keys):
            saved.append(save_ceilings(attrs.evolve(partial, driver_version=gpu.driver_version), args.out))

    workloads, keys = _gemm_keys(args.gemm_workloads)
    try:
        ceilings = run_bench(spec=spec, device_index=args.device, dtypes=args.dtypes, matmul_size=args.size,
                             warmup=args.warmup, repeats=args.repeats, inner=args.inner,
                             copy_bytes=None if args.copy_mib is None else args.copy_mib * MIB,
                             pattern_sides=args.pattern_sides, progress=progress, checkpoint=keep,
                             gemm_keys=keys, gemm_workloads=workloads)
    except (UserError, KeyboardInterrupt) as exc:
        if isinstance(exc, GemmTimingStopped) and args.out is not None and exc.partial.gemm_times_ms:
            saved.append(save_ceilings(attrs.evolve(exc.partial, driver_version=gpu.driver_version), args.out))
        if not saved:
            raise
        note = f"; the ceilings measured before it are in {saved[-1]}"
        if isinstance(exc, KeyboardInterrupt):
            raise UserError(f"interrupted while measuring the access patterns or GEMMs{note}") from None
        raise UserError(f"{exc}{note}") from None
    ceilings = attrs.evolve(ceilings, driver_version=gpu.driver_version)
    if args.out is not None:
        save_ceilings(ceilings, args.out)
    ratios = ceilings.ratios_to(spec) if spec is not None else {}
    if args.json:
        _print_json({"ceilings": ceilings.as_dict(), "ratio_to_datasheet": ratios,
                     "out": None if args.out is None else str(args.out)})
        return 0
    rows = []
    for name, rate in ceilings.matmul_flops_per_s.items():
        sheet = spec.peak_flops_per_s(name) / TERA if spec else None
        rows.append([f"matmul {name} {args.size}^3", f"{rate / TERA:.1f} TFLOP/s",
                     "-" if sheet is None else f"{sheet:.1f} TFLOP/s", _fmt(ratios.get(name), 3)])
    sheet_bw = spec.memory_bandwidth_bytes_per_s / TERA if spec else None
    rows.append([f"copy {ceilings.method.copy_buffer_bytes / GIB:.2f} GiB (read+write)",
                 f"{ceilings.memory_bandwidth_bytes_per_s / TERA:.3f} TB/s",
                 "-" if sheet_bw is None else f"{sheet_bw:.3f} TB/s", _fmt(ratios.get("memory_bandwidth"), 3)])
    if ceilings.kernel_floor_s is not None:
        rows.append(["kernel floor (tiny kernels queued)", f"{ceilings.kernel_floor_s * 1e6:.2f} us/kernel", "-", "-"])
    if ceilings.kernel_gap_s is not None:
        rows.append(["kernel gap (queued, profiler trace)", f"{ceilings.kernel_gap_s * 1e6:.2f} us/kernel", "-", "-"])
    if ceilings.kernel_gap_graph_s is not None:
        rows.append(["kernel gap (CUDA graph replay, profiler trace)",
                     f"{ceilings.kernel_gap_graph_s * 1e6:.2f} us/kernel", "-", "-"])
    for key, ratio in ceilings.pattern_ratios().items():
        rows.append([f"pattern {key}", f"{ceilings.pattern_bandwidth_bytes_per_s[key] / TERA:.3f} TB/s", "-",
                     f"{ratio:.3f} of copy"])
    rows.extend(_gemm_rows(ceilings))
    print(f"{gpu.name} ({spec.key if spec else 'uncatalogued'}), torch {ceilings.torch_version}, "
          f"CUDA {ceilings.cuda_version}, driver {gpu.driver_version or '-'}")
    print(_table(["measurement", "measured", "datasheet", "ratio"], rows))
    if args.out is not None:
        print(f"ceilings written to {args.out}")
    return 0


def _gemm_rows(ceilings: MeasuredCeilings) -> list[list[str]]:
    rows = []
    for key, sec in ceilings.gemm_times_s().items():
        rate = gemm_flops(key) / sec
        rows.append([f"gemm {key}", f"{sec * 1e6:.2f} us/call", "-",
                     f"{rate / TERA:.1f} TFLOP/s" if rate else "-"])
    return rows


def _ceilings_of_this_gpu(args: argparse.Namespace, catalog: GpuCatalog, command: str) -> MeasuredCeilings:
    """--ceilings, refused in one line when it was measured on another GPU model than the local one."""
    base = load_ceilings(args.ceilings)
    gpu = _detect_or_fail(args.device, catalog, command)
    if base.gpu_key is not None and gpu.catalog_key != base.gpu_key:
        raise UserError(f"--ceilings {args.ceilings}: measured on {base.gpu_key!r}, this GPU is "
                        f"{gpu.catalog_key or gpu.name!r}")
    return base


def _cmd_gemms(args: argparse.Namespace, catalog: GpuCatalog) -> int:
    base = _ceilings_of_this_gpu(args, catalog, "gemms")
    workloads, keys = _gemm_keys(args.gemm_workloads)
    if not keys:
        raise UserError("hw gemms: no workload to time (give --gemm-workloads MODE:BATCH[:TOKENS],...)")
    import torch

    torch.cuda.set_device(args.device)
    progress = None if args.json else (lambda line: print(line, flush=True))
    try:
        ceilings = add_gemm_times(base, keys, workloads, device=f"cuda:{args.device}", repeats=args.repeats,
                                  progress=progress)
    except GemmTimingStopped as stop:
        if stop.partial.gemm_times_ms:
            save_ceilings(stop.partial, args.out)
            raise UserError(f"{stop}; the shapes timed before it are in {args.out}") from None
        raise
    save_ceilings(ceilings, args.out)
    if args.json:
        _print_json({"gemm_times_ms": {k: list(v) for k, v in ceilings.gemm_times_ms.items()},
                     "gemm_workloads": list(workloads), "out": str(args.out)})
        return 0
    print(_table(["measurement", "measured", "datasheet", "rate"], _gemm_rows(ceilings)))
    print(f"{len(keys)} GEMM shapes and calls of {len(workloads)} workloads timed; ceilings with them written to "
          f"{args.out}")
    return 0


def _cmd_gap(args: argparse.Namespace, catalog: GpuCatalog) -> int:
    base = _ceilings_of_this_gpu(args, catalog, "gap")
    import torch

    torch.cuda.set_device(args.device)
    device = f"cuda:{args.device}"
    try:
        gap_s, dur_s = measure_kernel_gap(device=device, repeats=args.repeats)
    except torch.cuda.OutOfMemoryError:
        raise UserError("out of device memory while measuring the kernel gap") from None
    try:
        graph_s, _graph_dur_s = measure_graph_kernel_gap(device=device, repeats=args.repeats)
    except (UserError, torch.cuda.OutOfMemoryError) as exc:  # the stream gap is kept on disk first
        save_ceilings(attrs.evolve(base, kernel_gap_s=gap_s, kernel_gap_duration_s=dur_s), args.out)
        why = str(exc) if isinstance(exc, UserError) else "out of device memory"
        raise UserError(f"{why}; the stream gap ({gap_s * 1e6:.2f} us) is written to {args.out} without the "
                        "CUDA-graph gap") from None
    ceilings = attrs.evolve(base, kernel_gap_s=gap_s, kernel_gap_duration_s=dur_s, kernel_gap_graph_s=graph_s)
    save_ceilings(ceilings, args.out)
    if args.json:
        _print_json({"kernel_gap_s": gap_s, "kernel_gap_duration_s": dur_s, "kernel_gap_graph_s": graph_s,
                     "out": str(args.out)})
        return 0
    print(f"kernel gap: {gap_s * 1e6:.2f} us between queued kernels ({dur_s * 1e6:.2f} us per small kernel), "
          f"{graph_s * 1e6:.2f} us between kernels replayed from a CUDA graph; ceilings with them written to "
          f"{args.out}")
    return 0


def render_probe(speed: Any) -> str:
    """Table of a HostSpeed: median, mean, spread per probe."""
    rows = []
    for kind, series in speed.probes.items():
        d = series.as_dict()
        rows.append([kind, f"{d['median_us']:.2f}", f"{d['mean_us']:.2f}", f"{d['min_us']:.2f}", f"{d['max_us']:.2f}",
                     str(len(series.samples_us)), series.unit])
    machine = "; ".join(x for x in (speed.gpu_uuid, speed.cpu_model) if x)
    head = (f"host probes on {speed.device} ({speed.device_name}; torch {speed.torch_version}"
            f"{'; ' + machine if machine else ''})")
    note = ("what-if --host-probe-us takes the median of the probe kind the calibration was fitted with "
            "(its host_probe field)")
    lines = [head, _table(["probe", "median us", "mean us", "min us", "max us", "samples", "unit"], rows), note]
    for kind, series in speed.probes.items():
        if series.us_per_launch is not None:
            lines.append(f"{kind}: a decode step ({series.decode_step_calls} aten calls, {series.decode_step_launches} "
                         f"launches) takes {series.decode_ratio:.3f} x the probe's us per call per launch "
                         f"(tiny forward: {series.aten_calls} calls, {series.device_launches} launches): "
                         f"{series.us_per_launch:.2f} host us per launch at the median (calibrate --prior "
                         "--host-speed scales it by each run's probe)")
        weight = series.view_call_weight
        if weight is not None:
            lines.append(f"{kind}: split over the two programs, an aten call that launches nothing costs {weight:.2f} "
                         "x one that launches")
        if series.sam_ratio is not None:
            lines.append(f"{kind}: a SAM pass on a {series.sam_mode} page ({series.sam_launches} launches, "
                         f"{series.sam_syncs} host syncs) takes {series.sam_ratio:.3f} x the probe's us per call "
                         f"per launch: {series.sam_ratio * series.median_us * (series.sam_launches or 0) / 1e3:.2f} "
                         "ms at the median")
    return "\n".join(lines)


def _probe_from_files(args: argparse.Namespace) -> int:
    """hw probe --from FILE...: the table (or JSON) of saved host-speed files, pooled; --out writes the pool."""
    from llm_perf_opt.hardware.host_speed import load_host_speed, pool_host_speeds

    measuring = [flag for flag, given in (("--device", args.device is not None),
                                          ("--probes", args.probes != ["add", "module"]),
                                          ("--samples", args.samples != 10), ("--reps", args.reps != 3),
                                          ("--interval", args.interval != 0.5),
                                          ("--decode-step", args.decode_step)) if given]
    if measuring:
        raise UserError(f"--from reads saved samples and measures nothing: drop {', '.join(measuring)}")
    speed = pool_host_speeds([(p, load_host_speed(p)) for p in args.from_files])
    if args.out is not None:
        _check_out(args.out)
        args.out.write_text(json.dumps(speed.as_dict(), indent=2) + "\n", encoding="utf-8")
    if args.json:
        _print_json(speed.as_dict())
        return 0
    if len(args.from_files) > 1:
        print(f"{len(args.from_files)} host-speed files pooled: " + ", ".join(map(str, args.from_files)))
    print(render_probe(speed))
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from llm_perf_opt.hardware.host_speed import measure_host_speed, resolve_device

    if args.from_files is not None:
        return _probe_from_files(args)
    device = resolve_device(args.device)

    def progress(done: int, total: int) -> None:
        if not args.json:
            print(f"\rsample {done}/{total}", end="\n" if done == total else "", flush=True)

    speed = measure_host_speed(device, kinds=args.probes, samples=args.samples, reps=args.reps,
                               interval_s=args.interval, decode_step=args.decode_step, progress=progress)
    if args.out is not None:
        args.out.write_text(json.dumps(speed.as_dict(), indent=2) + "\n", encoding="utf-8")
    if args.json:
        _print_json(speed.as_dict())
    else:
        print(render_probe(speed))
        if args.out is not None:
            print(f"wrote {args.out}")
    if speed.interrupted:
        print("hw probe: interrupted; the samples taken before it are above"
              + (f" and in {args.out}" if args.out is not None else ""), file=sys.stderr)
        return 130
    return 0


def _check_out(path: Path, suffixes: Sequence[str] = ()) -> None:
    """--out checked before any measurement: its suffix (when ``suffixes``) and a parent folder that can be made."""
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"--out {path}: must end in {', '.join(suffixes)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {path}: cannot create its folder ({exc.strerror or exc})") from exc
    if path.is_dir():
        raise UserError(f"--out {path}: is a folder, not a file")


def run(args: argparse.Namespace) -> int:
    """Run the hw subcommand in ``args``; returns the exit status."""
    catalog = load_catalog(getattr(args, "catalog", None))
    if getattr(args, "out", None) is not None:
        _check_out(args.out, (".json", ".yaml", ".yml") if args.hw_command in ("bench", "gemms", "gap") else ())
    if args.hw_command == "list":
        if args.json:
            _print_json([s.as_dict() for s in catalog.specs()])
        else:
            print(render_list(catalog))
        return 0
    if args.hw_command == "show":
        spec = catalog.get(args.name)
        if args.json:
            _print_json(spec.as_dict())
        else:
            print(render_show(spec))
        return 0
    if args.hw_command == "detect":
        gpu = _detect_or_fail(args.device, catalog, "detect")
        if args.out is not None:
            args.out.write_text(json.dumps(gpu.as_dict(), indent=2) + "\n", encoding="utf-8")
        if args.json:
            _print_json(gpu.as_dict())
        else:
            print(render_detect(gpu))
        return 0
    if args.hw_command == "bench":
        return _cmd_bench(args, catalog)
    if args.hw_command == "gemms":
        return _cmd_gemms(args, catalog)
    if args.hw_command == "probe":
        return _cmd_probe(args)
    if args.hw_command == "gap":
        return _cmd_gap(args, catalog)
    raise UserError(f"unknown hw command {args.hw_command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llm_perf_opt.runners.hw_cli``."""
    from llm_perf_opt.cli import CommandParser, run_guarded

    parser = CommandParser(prog=PROG, description=(__doc__ or "").strip().splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_guarded(lambda: run(args), PROG)


if __name__ == "__main__":
    sys.exit(main())
