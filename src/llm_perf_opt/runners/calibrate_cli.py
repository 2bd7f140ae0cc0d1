"""Fit per-category roofline efficiencies and a per-kernel launch (or host issue) cost from measured runs.

The fitted runs (--run, repeatable) and the held-out runs (--held-out) must
share one GPU and dtype. The calibration file (JSON) is keyed by the GPU
catalogue key and the software versions of the first fitted run; the
per-stage error before (pure roofline) and after (calibrated) is printed for
every run and stored in the file (``fit.before`` / ``fit.after``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attrs import evolve

from llm_perf_opt.analytic.calibration import (
    HOST_PROBES,
    TIME_MODELS,
    Calibration,
    SoftwareKey,
    StageError,
    save_calibration,
)
from llm_perf_opt.cli import CommandParser, run_guarded
from llm_perf_opt.compare.calibrate import (
    DEFAULT_SYNC_S,
    HOST_PROBE_EXPONENTS,
    REFERENCE_HOST_S_PER_KERNEL,
    WEAKLY,
    calibrate,
    calibrate_timeline,
    evaluate_prior,
    host_s_per_op_from_per_kernel,
    prior_calibration,
)
from llm_perf_opt.compare.runs import load_run
from llm_perf_opt.errors import UserError
from llm_perf_opt.vocab import DType


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `llm-perf-opt calibrate`."""
    parser.add_argument("--run", dest="runs", action="append", type=Path, default=[], metavar="RUN_DIR",
                        help="profiling run folder to fit on (repeat for several runs; at least one, except "
                             "for --prior --gpu)")
    parser.add_argument("--held-out", dest="held_out", action="append", type=Path, default=[], metavar="RUN_DIR",
                        help="run folder NOT used for fitting; its error is reported (repeatable)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="calibration JSON to write (e.g. calibrations/h100-sxm.json)")
    parser.add_argument("--prompt-text-tokens", type=int, default=None, metavar="N",
                        help="prompt tokens besides the image slots (BOS included); default: from each run's "
                             "prefill token counts")
    parser.add_argument("--no-operator-table", action="store_true",
                        help="fit on stage times only, ignoring per-stage per-category operator device times")
    parser.add_argument("--max-efficiency", type=float, default=1.0, metavar="F",
                        help="upper bound of every fitted efficiency, a fraction of the peaks (default 1.0: never "
                             "faster than them; above 1 lets a fit beat peaks that kernels can exceed, e.g. "
                             "measured ceilings)")
    parser.add_argument("--shared", action="store_true",
                        help="one compute and one bandwidth efficiency for all categories (3 parameters with the "
                             "launch cost; for fits on few stage times)")
    parser.add_argument("--per-stage-launch", action="store_true",
                        help="fit one launch cost per stage (absorbs kernel counts that are off by a stage-specific "
                             "factor, e.g. an eager-loop expert count against grouped-GEMM experts)")
    parser.add_argument("--no-launch", action="store_true",
                        help="do not fit a per-kernel launch cost (keep it 0)")
    parser.add_argument("--time-model", choices=TIME_MODELS, default="additive",
                        help="additive: stage time = roofline + kernels x launch cost, fitted on stage and device "
                             "times together; timeline: device efficiencies fitted on the operator-table device "
                             "times, then host seconds per kernel (per stage) and per host-device sync fitted on "
                             "the stage times through a simulated host/device timeline (needs CUDA runs with an "
                             "operator table; --per-stage-launch and --no-launch do not apply)")
    parser.add_argument("--host-sync-us", type=float, default=None, metavar="US",
                        help="timeline model: host microseconds per host-device sync, held fixed in the fit "
                             f"(default {DEFAULT_SYNC_S * 1e6:g}: the H200 trace's copy + sync calls)")
    parser.add_argument("--host-probe", choices=HOST_PROBES, default="add",
                        help="timeline model: the per-pass host-speed probe the host costs scale by between runs: "
                             "add (host_probe_us: us per tiny in-place add, default) or module "
                             "(host_module_probe_us: us per aten call of a tiny decoder forward on the model's "
                             "code path); runs without it are predicted unscaled")
    parser.add_argument("--host-probe-exponent", type=float, default=None, metavar="E",
                        help="timeline model: host costs scale as (run probe / fitted runs' mean probe) ** E "
                             "(default per probe: " + ", ".join(f"{k} {v:g}" for k, v in HOST_PROBE_EXPONENTS.items())
                             + "; 0 = no scaling)")
    parser.add_argument("--prior", action="store_true",
                        help="fit nothing: write the uncalibrated timeline model (roofline at the --ceilings "
                             "fractions of the datasheet peaks, --host-us-per-kernel host time per launch, "
                             "--host-sync-us per sync) and report its error on every --run and --held-out run")
    parser.add_argument("--gpu", default=None, metavar="KEY",
                        help="with --prior and no --run: the GPU catalogue key to write the prior for (a machine "
                             "with no run of this model yet; what-if and analyze take the file)")
    parser.add_argument("--dtype", default=None, choices=[d.value for d in DType],
                        help="with --prior and no --run: compute dtype of the prior (default bf16)")
    parser.add_argument("--ceilings", type=Path, default=None, metavar="FILE",
                        help="with --prior: measured ceilings (llm-perf-opt hw bench) whose fractions of the "
                             "datasheet peaks become the efficiencies (default: the datasheet peaks), with their "
                             "access-pattern bandwidths, kernel floor and gap and GEMM times when measured; with --time-model "
                             "timeline: that device model replaces the fitted category efficiencies (only the "
                             "per-stage device factors and the host terms are fitted)")
    parser.add_argument("--host-us-per-kernel", type=float, default=None, metavar="US",
                        help="with --prior: host microseconds per CUDA kernel of a decode step as the profiler "
                             "counts them (default "
                             f"{REFERENCE_HOST_S_PER_KERNEL * 1e6:.1f}: the reference eager baseline's 19.4 ms per "
                             "token over ~960 kernels); converted to the model's cost per dispatched op with the "
                             "runs' decode stage")
    parser.add_argument("--host-speed", type=Path, nargs="+", default=None, metavar="FILE",
                        help="with --prior: a host-speed file of the GPU host (llm-perf-opt hw probe --decode-step "
                             "--out FILE); its module probe median times its decode-step ratio (a real decode "
                             "step's host us per launch over the probe's us per call) replaces "
                             "--host-us-per-kernel, and the prior scales its host terms with each run's own "
                             "--host-probe kind (add by default) against that probe's median in FILE: a prior "
                             "that follows the host speed of every run, fitted on none. Several files (one GPU "
                             "model and torch build) pool their samples: every median, SAM's ratio included, "
                             "runs over all of them")
    parser.add_argument("--config", default=None, metavar="NAME",
                        help="model config to analyse instead of the runs' ('default', 'tiny' or a config.json path)")
    parser.add_argument("--catalog", type=Path, default=None, metavar="YAML",
                        help="extra GPU catalogue file layered over the packaged one")


def error_table(cal: Calibration) -> str:
    """Per-run, per-stage error before and after calibration, as text."""
    after = {(e.run_id, e.stage): e for e in cal.fit.after}
    lines = [f"{'run':<28} {'set':<8} {'stage':<12} {'measured ms':>12} {'roofline err':>13} {'calibrated err':>15}"]
    for b in cal.fit.before:
        a: StageError = after[(b.run_id, b.stage)]
        lines.append(f"{b.run_id:<28} {'held-out' if b.held_out else 'fit':<8} {b.stage:<12} {b.measured_ms:>12.3f} "
                     f"{b.relative_error:>+13.1%} {a.relative_error:>+15.1%}")
    return "\n".join(lines)


def rms(errors: Sequence[StageError]) -> float:
    """Root-mean-square relative error."""
    vals = [e.relative_error for e in errors if math.isfinite(e.relative_error)]
    return math.sqrt(sum(v * v for v in vals) / len(vals)) if vals else math.nan


#: prompt tokens besides the image slots of the prior's conversion workload (BOS + the default OCR prompt)
PRIOR_PROMPT_TOKENS = 9
#: the page size the prior's own workloads assume (an A4 page at 150 dpi, as llm_perf_opt.inputs.synthetic draws)
PRIOR_PAGE_PX = (1240, 1754)


def _device_prior(args: argparse.Namespace, runs: list[tuple[Any, Any]]) -> Calibration:
    """The device model of --ceilings for a timeline fit (efficiencies, access patterns, kernel floor and gap,
    GEMMs);
    UserError when --shared or --max-efficiency would have nothing to act on."""
    if args.shared or args.max_efficiency != 1.0:
        raise UserError("--ceilings fixes the device efficiencies of a timeline fit: drop --shared and "
                        "--max-efficiency")
    return _prior(args, runs, evaluate=False)


def _speed_label(paths: Sequence[Path]) -> str:
    """How errors name the --host-speed files: the file, or the count of files pooled."""
    return str(paths[0]) if len(paths) == 1 else f"({len(paths)} files pooled)"


def _host_speed_prior(paths: Sequence[Path], probe: str) -> tuple[Any, float]:
    """(HostSpeed pooled over ``paths``, host us per kernel) for --prior --host-speed: the module probe's us per
    device launch; UserError when the files cannot give it or lack the ``probe`` kind the runs are scaled by."""
    from llm_perf_opt.hardware.host_speed import load_host_speed, pool_host_speeds

    speed = pool_host_speeds([(p, load_host_speed(p)) for p in paths])
    label = _speed_label(paths)
    if speed.device_name == "cpu" or not speed.device.startswith("cuda"):
        raise UserError(f"--host-speed {label}: probed on {speed.device}, not a GPU (run llm-perf-opt hw probe on "
                        "the GPU host)")
    module = speed.probes.get("module")
    if module is None or module.us_per_launch is None:
        raise UserError(f"--host-speed {label}: no module probe with decode steps timed next to it; run "
                        "llm-perf-opt hw probe --decode-step on the GPU host")
    if probe not in speed.probes:
        raise UserError(f"--host-speed {label}: no {probe} probe to scale the runs by (--host-probe {probe})")
    return speed, module.us_per_launch


def pool_line(paths: Sequence[Path]) -> str:
    """One line giving each --host-speed file's decode and SAM ratios (module probe) and the pooled medians, so
    the spread between files is in view; '' for a single file."""
    from llm_perf_opt.hardware.host_speed import load_host_speed, pool_host_speeds

    if len(paths) < 2:
        return ""
    files = [(p, load_host_speed(p)) for p in paths]
    pooled = pool_host_speeds(files).probes.get("module")

    def ratios(name: str) -> str:
        values = [getattr(s.probes["module"], name) if "module" in s.probes else None for _, s in files]
        text = ", ".join("-" if v is None else f"{v:.3f}" for v in values)
        total = None if pooled is None else getattr(pooled, name)
        return f"{text} -> {'-' if total is None else f'{total:.3f}'}"

    return (f"pooled {len(files)} host-speed files ({sum(len(s.probes['module'].samples_us) for _, s in files if 'module' in s.probes)} "
            f"module samples); per file -> pooled: decode ratio {ratios('decode_ratio')}; SAM ratio {ratios('sam_ratio')}")


def machine_match_line(paths: Path | Sequence[Path], runs: Sequence[Any]) -> str:
    """One line saying on which machine(s) the host-speed file(s) at ``paths`` were probed (GPU UUID, CPU model)
    and which runs ran there: a host cost per op measured on another machine carries that host's speed ratios
    (SAM's over the module probe's differs from host to host), which no probe scaling removes."""
    from llm_perf_opt.hardware.host_speed import load_host_speed

    paths = [paths] if isinstance(paths, Path) else list(paths)
    speeds = [(p, load_host_speed(p)) for p in paths]
    known = list(dict.fromkeys(s.gpu_uuid for _, s in speeds if s.gpu_uuid is not None))
    blind = [p for p, s in speeds if s.gpu_uuid is None]
    if len(speeds) == 1:
        path, speed = speeds[0]
        if speed.gpu_uuid is None:
            return f"{path} records no GPU UUID (written before machines were recorded): its machine is unknown"
        where = f"{path} was probed on {speed.gpu_uuid}" + (f" ({speed.cpu_model})" if speed.cpu_model else "")
        there = "that machine"
    else:
        where = (f"the {len(speeds)} host-speed files were probed on {len(known)} known machine(s)"
                 + (f" ({', '.join(known)})" if known else "")
                 + (f", {len(blind)} of them on an unknown one" if blind else ""))
        if not known:
            return where
        there = "one of them"
    same = [r.run_id for r in runs if r.machine()[0] in known]
    unknown = [r.run_id for r in runs if r.machine()[0] is None]
    other = len(runs) - len(same) - len(unknown)
    parts = [f"{len(same)} of {len(runs)} runs ran on {there}"]
    if other:
        parts.append(f"{other} on another")
    if unknown:
        parts.append(f"{len(unknown)} record no GPU UUID")
    return f"{where}; " + ", ".join(parts)


def _sam_host_s_per_op(args: argparse.Namespace, config: Any, dtype: str, module: Any) -> float:
    """SAM's host seconds per dispatched op from a host-speed file's SAM pass: the pass's host time at the
    module probe's median (ratio x probe x launches) less the syncs the timeline charges on their own, over
    the ops the analytic SAM stage of that page issues (timeline_model.stage_host_work)."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.timeline_model import stage_host_work
    from llm_perf_opt.data.analytic import OCRWorkloadProfile
    from llm_perf_opt.vocab import Stage

    wl = OCRWorkloadProfile.create(profile_id="sam-pass", mode=module.sam_mode, image_width_px=PRIOR_PAGE_PX[0],
                                   image_height_px=PRIOR_PAGE_PX[1], prompt_text_tokens=PRIOR_PROMPT_TOKENS,
                                   max_new_tokens=1,
                                   dtype=dtype, attention="eager", experts="grouped_mm")
    ops, syncs = stage_host_work(AnalyticModel(config, wl).stages[Stage.VISION_SAM])
    pass_s = module.sam_ratio * module.median_us * 1e-6 * module.sam_launches
    host_s = pass_s - syncs * args.host_sync_us * 1e-6
    if ops <= 0 or host_s <= 0:
        raise UserError(f"--host-speed {_speed_label(args.host_speed)}: its SAM pass ({pass_s * 1e3:.2f} ms) leaves no host "
                        f"time beyond {syncs} syncs of {args.host_sync_us:g} us")
    return float(host_s / ops)


def _prior(args: argparse.Namespace, runs: list[tuple[Any, Any]], evaluate: bool = True) -> Calibration:
    """The --prior calibration for the runs' GPU and dtype (or --gpu / --dtype without runs), evaluated on
    every run given."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.data.analytic import OCRWorkloadProfile
    from llm_perf_opt.hardware import load_catalog, load_ceilings
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
    from llm_perf_opt.vocab import Stage

    if args.host_sync_us < 0:
        raise UserError(f"--host-sync-us must be >= 0, got {args.host_sync_us}")
    per_kernel_us = REFERENCE_HOST_S_PER_KERNEL * 1e6 if args.host_us_per_kernel is None else args.host_us_per_kernel
    if per_kernel_us < 0:
        raise UserError(f"--host-us-per-kernel must be >= 0, got {per_kernel_us}")
    catalog = load_catalog(args.catalog)
    speed = None
    if args.host_speed is not None:
        speed, per_kernel_us = _host_speed_prior(args.host_speed, args.host_probe)
    if runs:
        run0, rep = runs[0][0], runs[0][1][0][0]
        spec = catalog.get(run0.gpu_key or "")
        if args.gpu is not None and catalog.get(args.gpu).key != spec.key:
            raise UserError(f"--gpu {args.gpu}: the runs are on {spec.key!r}")
        dtype = str(run0.report.model.dtype)
        if args.dtype is not None and args.dtype != dtype:
            raise UserError(f"--dtype {args.dtype}: the runs are {dtype}")
        config = rep.model.config
        sw = run0.software()
        software = SoftwareKey(torch=sw["torch"], transformers=sw["transformers"], cuda=sw.get("cuda", ""))
    else:
        if args.gpu is None:
            raise UserError("calibrate --prior without --run needs --gpu KEY (a GPU catalogue key)")
        spec = catalog.get(args.gpu)
        dtype = args.dtype or "bf16"
        config = DeepseekOCRConfig.named(args.config or "default")
        software = SoftwareKey()
    # the decode stage that converts the per-kernel host cost: the step it was measured on (hw probe's decode
    # step and the reference baseline: one Base page of the default prompt, batch 1), whatever the runs'
    # batch (a batch-64 step has 64 times its per-row launches)
    wl = OCRWorkloadProfile.create(profile_id="prior", mode="base", image_width_px=PRIOR_PAGE_PX[0],
                                   image_height_px=PRIOR_PAGE_PX[1], prompt_text_tokens=PRIOR_PROMPT_TOKENS,
                                   max_new_tokens=64, dtype=dtype, attention="eager", experts="grouped_mm")
    model = AnalyticModel(config, wl)
    ce = be = 1.0
    ratios: dict[str, float] = {}
    floor = gap = 0.0
    graph_gap: float | None = None
    gemms: dict[str, float] = {}
    if args.ceilings is not None:
        ceilings = load_ceilings(args.ceilings)
        if ceilings.gpu_key != spec.key:
            raise UserError(f"--ceilings {args.ceilings}: measured on {ceilings.gpu_key or ceilings.device_name!r}, "
                            f"the {'runs are' if runs else 'prior is'} on {spec.key!r}")
        flops = ceilings.flops_per_s(dtype)
        if flops is None:
            raise UserError(f"--ceilings {args.ceilings}: no {dtype} matmul ceiling measured")
        ce = flops / spec.peak_flops_per_s(dtype)
        be = ceilings.memory_bandwidth_bytes_per_s / spec.memory_bandwidth_bytes_per_s
        ratios = ceilings.pattern_ratios()
        floor = ceilings.kernel_floor_s or 0.0
        gap = ceilings.kernel_gap_s or 0.0
        graph_gap = ceilings.kernel_gap_graph_s
        gemms = ceilings.gemm_times_s()
    per_op = host_s_per_op_from_per_kernel(per_kernel_us * 1e-6, model.stages[Stage.DECODE])
    prior = prior_calibration(spec.key, dtype, compute_efficiency=ce, bandwidth_efficiency=be,
                              host_s_per_kernel=per_op, sync_s=args.host_sync_us * 1e-6, software=software,
                              pattern_bandwidth_ratios=ratios, kernel_floor_s=floor, gemm_times_s=gemms,
                              kernel_gap_s=gap, kernel_gap_graph_s=graph_gap)
    if speed is not None:
        names = {c.key for c in catalog.candidates(speed.device_name)}
        if names and spec.key not in names:
            raise UserError(f"--host-speed {_speed_label(args.host_speed)}: probed on {speed.device_name!r}, the "
                            f"{'runs are' if runs else 'prior is'} on {spec.key!r}")
        exponent = (HOST_PROBE_EXPONENTS[args.host_probe] if args.host_probe_exponent is None
                    else args.host_probe_exponent)
        hosts = dict(prior.stage_host_s_per_kernel)
        module = speed.probes["module"]
        if module.sam_ratio is not None and module.sam_launches and module.sam_mode:
            hosts[Stage.VISION_SAM.value] = _sam_host_s_per_op(args, model.config, dtype, module)
        prior = evolve(prior, host_probe=args.host_probe, host_probe_us=speed.probes[args.host_probe].median_us,
                       host_probe_exponent=exponent, stage_host_s_per_kernel=hosts)
    return evaluate_prior(prior, runs) if runs and evaluate else prior


def run(args: argparse.Namespace) -> int:
    """Fit, save, print the error table."""
    from llm_perf_opt.runners.compare_cli import predictions_for_run, resolve_run_dir

    args = argparse.Namespace(**vars(args))  # the defaults filled in below stay out of the caller's namespace
    if args.max_efficiency <= 0:
        raise UserError(f"--max-efficiency must be > 0, got {args.max_efficiency}")
    if args.host_sync_us is not None and not (args.prior or args.time_model == "timeline"):
        raise UserError("--host-sync-us only applies with --time-model timeline or --prior")
    if args.host_sync_us is None:
        args.host_sync_us = DEFAULT_SYNC_S * 1e6
    if args.per_stage_launch and args.no_launch:
        raise UserError("--per-stage-launch fits a launch cost per stage and --no-launch fits none: give one")
    if not args.runs and not (args.prior and args.gpu):
        raise UserError("give at least one --run to fit (or --prior --gpu KEY for a prior without runs)")
    prior_only = [f for f, given in (("--gpu", args.gpu is not None), ("--dtype", args.dtype is not None),
                                     ("--host-us-per-kernel", args.host_us_per_kernel is not None)) if given]
    if prior_only and not args.prior:
        raise UserError(f"{', '.join(prior_only)} only appl{'y' if len(prior_only) > 1 else 'ies'} with --prior")
    if args.ceilings is not None and not (args.prior or args.time_model == "timeline"):
        raise UserError("--ceilings only applies with --prior or --time-model timeline")
    probe_flags = [f for f, given in (("--host-probe", args.host_probe != "add"),
                                      ("--host-probe-exponent", args.host_probe_exponent is not None)) if given]
    if probe_flags and not (args.prior and args.host_speed is not None) and (args.prior or args.time_model != "timeline"):
        raise UserError(f"{', '.join(probe_flags)} only appl{'y' if len(probe_flags) > 1 else 'ies'} with --time-model timeline (a fit) or --prior "
                        "--host-speed")
    if args.host_speed is not None and not args.prior:
        raise UserError("--host-speed only applies with --prior")
    if args.host_speed is not None and args.host_us_per_kernel is not None:
        raise UserError("--host-speed gives the host cost per kernel: drop --host-us-per-kernel")
    fit_only = [f for f, given in (("--time-model timeline", args.time_model != "additive"), ("--shared", args.shared),
                                   ("--per-stage-launch", args.per_stage_launch), ("--no-launch", args.no_launch),
                                   ("--no-operator-table", args.no_operator_table),
                                   ("--max-efficiency", args.max_efficiency != 1.0)) if given]
    if fit_only and args.prior:
        raise UserError(f"--prior fits nothing: drop {', '.join(fit_only)}")
    fit_runs = []
    for d in args.runs:
        r = load_run(resolve_run_dir(d))
        fit_runs.append((r, predictions_for_run(r, prompt_text_tokens=args.prompt_text_tokens,
                                                catalog=args.catalog, config=args.config)[0]))
    held = []
    for d in args.held_out:
        r = load_run(resolve_run_dir(d))
        held.append((r, predictions_for_run(r, prompt_text_tokens=args.prompt_text_tokens, catalog=args.catalog,
                                            config=args.config)[0]))
    if args.prior:
        cal = _prior(args, [*fit_runs, *held])
        if not fit_runs and not held:
            path = save_calibration(cal, args.out)
            print(f"prior for {cal.gpu_key} {cal.dtype} (nothing fitted, no run): "
                  f"{cal.default_compute_efficiency:.3f} of the datasheet FLOP rate, "
                  f"{cal.default_bandwidth_efficiency:.3f} of its bandwidth, "
                  f"{cal.host_s_per_kernel('decode') * 1e6:.1f} us host time per dispatched op")
            print(f"wrote {path}")
            return 0
    elif args.time_model == "timeline":
        if args.no_operator_table or args.per_stage_launch or args.no_launch:
            raise UserError("--time-model timeline fits on the operator table and has no launch cost: "
                            "drop --no-operator-table, --per-stage-launch and --no-launch")
        if args.host_sync_us < 0:
            raise UserError(f"--host-sync-us must be >= 0, got {args.host_sync_us}")
        prior = _device_prior(args, fit_runs) if args.ceilings is not None else None
        cal = calibrate_timeline(fit_runs, held, max_efficiency=args.max_efficiency, shared=args.shared,
                                 sync_s=args.host_sync_us * 1e-6, device_prior=prior, host_probe=args.host_probe,
                                 host_probe_exponent=args.host_probe_exponent)
    else:
        cal = calibrate(fit_runs, held, use_operator_table=not args.no_operator_table,
                        max_efficiency=args.max_efficiency, fit_launch=not args.no_launch, shared=args.shared,
                        per_stage_launch=args.per_stage_launch)
    path = save_calibration(cal, args.out)
    print(cal.describe())
    cats = sorted(set(cal.compute_efficiencies) | set(cal.bandwidth_efficiencies))
    if cats:
        print(f"{'category':<24} {'compute eff':>12} {'bandwidth eff':>14}")
        for c in cats:
            print(f"{c:<24} {cal.compute_efficiency(c):>12.3f} {cal.bandwidth_efficiency(c):>14.3f}")
    weak = [u for u in cal.fit.unidentified if WEAKLY in u]
    unconstrained = [u for u in cal.fit.unidentified if WEAKLY not in u]
    if args.prior:  # nothing was fitted: the entries say where the values come from
        for u in unconstrained:
            print(f"note: {u}")
    elif unconstrained:
        print("not constrained by the data (left at the fit's starting value: the prior's, else 1.0 for an "
              "efficiency and 0 for a time): " + ", ".join(unconstrained))
    for u in weak:
        print("weakly constrained by the data (fitted, uncertain): " + u)
    print(error_table(cal))
    fit_b = [e for e in cal.fit.before if not e.held_out]
    fit_a = [e for e in cal.fit.after if not e.held_out]
    if args.prior:
        print(f"prior (nothing fitted): {cal.default_compute_efficiency:.3f} of the datasheet FLOP rate, "
              f"{cal.default_bandwidth_efficiency:.3f} of its bandwidth, "
              f"{cal.host_s_per_kernel('decode') * 1e6:.1f} us host time per dispatched op, "
              f"{cal.host_sync_s * 1e6:.1f} us per sync")
        if args.host_speed is not None:
            if len(args.host_speed) > 1:
                print(pool_line(args.host_speed))
            print(f"host costs from {' + '.join(map(str, args.host_speed))} at its {cal.host_probe} probe of {cal.host_probe_us:.2f} us "
                  f"(SAM {cal.host_s_per_kernel('vision.sam') * 1e6:.1f} us per op), scaled by each run's own "
                  f"{cal.host_probe} probe")
            print(machine_match_line(args.host_speed, [r for r, _ in [*fit_runs, *held]]))
    if fit_b:
        print(f"rms stage error on fitted runs: {rms(fit_b):.1%} -> {rms(fit_a):.1%}")
    if held:
        hb = [e for e in cal.fit.before if e.held_out]
        ha = [e for e in cal.fit.after if e.held_out]
        print(f"rms stage error on held-out runs: {rms(hb):.1%} -> {rms(ha):.1%}")
    print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m llm_perf_opt.runners.calibrate_cli`."""
    parser = CommandParser(prog="llm-perf-opt calibrate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_guarded(lambda: run(args), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
