#!/usr/bin/env python
"""Figures about host and device time that docs/results-h200.md quotes, from committed files (CPU only).

    python scripts/analytical/host_figures.py census CENSUS.json [--workload base:1 ...]
        per stage: CUDA runtime launch calls and their host us per launch, host us per kernel of the stage
    python scripts/analytical/host_figures.py probe RUN_DIR [RUN_DIR ...]
        per run: mean host probe and decode ms per pass; slope and correlation of log(decode) on log(probe)
        between the run means and over all passes pooled
    python scripts/analytical/host_figures.py exponents --calibration CAL RUN_DIR [RUN_DIR ...]
        a timeline calibration on other runs with its fitted probe exponent, with 1 and with 0
    python scripts/analytical/host_figures.py launches tests/data/census/census-h200-stages.json
        per workload and stage: launches counted by the census (GEMM memsets apart) and by the analytic model
    python scripts/analytical/host_figures.py prior CAL.json [CAL.json ...]
        per stage: stages of the evaluated runs within 25% and the rms error of each (prior) calibration
    python scripts/analytical/host_figures.py device CENSUS.json --calibration CAL [--workload base:1 ...]
        per workload and stage: the census kernels' device ms next to the timeline model's device ms
    python scripts/analytical/host_figures.py table COMPARE_DIR
        the per-run, per-stage error table of a compare_calibrate.sh folder (every calibration file in it)
    python scripts/analytical/host_figures.py cross SET_DIR
        per run of a folder of calibrated compares (compare_cli --calibration): the stage errors
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attrs import evolve

from llm_perf_opt.analytic.calibration import load_calibration
from llm_perf_opt.compare.runs import load_run
from llm_perf_opt.errors import UserError

#: CUDA runtime calls that launch device work (kernels, memsets, copies)
LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaMemsetAsync",
                "cudaMemcpyAsync")
STAGES = ("vision.sam", "vision.clip", "projector", "prefill", "decode")


def _rms(xs: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in xs) / len(xs)) if xs else math.nan


def _slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(slope, correlation) of ys on xs; UserError when xs do not vary."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        raise UserError("probe: the host probe (or decode time) does not vary over these runs")
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return sxy / sxx, sxy / math.sqrt(sxx * syy)


def census(path: Path, workloads: Sequence[str] | None) -> list[str]:
    """Per workload and stage: launch calls, host us per launch call, host us per kernel (syncs excluded)."""
    try:
        data = json.loads(path.read_text())["workloads"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a kernel census file ({exc})") from exc
    lines = [f"{'workload':<10} {'stage':<12} {'kernels':>8} {'launch calls':>12} {'us/launch call':>15} "
             f"{'host us/kernel':>15} {'host ms':>8}"]
    for key in workloads or list(data):
        if key not in data:
            raise UserError(f"{path}: no workload {key!r} (has {', '.join(data)})")
        for stage in STAGES:
            ops: dict[str, Any] = data[key]["stages"].get(stage, {})
            kernels = sum(r["kernels"] for r in ops.values())
            host = sum(r["self_cpu_us"] for op, r in ops.items() if "Synchronize" not in op)
            calls = sum(r["calls"] for op, r in ops.items() if op in LAUNCH_CALLS)
            call_us = sum(r["self_cpu_us"] for op, r in ops.items() if op in LAUNCH_CALLS)
            lines.append(f"{key:<10} {stage:<12} {kernels:>8.0f} {calls:>12.0f} "
                         f"{call_us / calls if calls else math.nan:>15.1f} "
                         f"{host / kernels if kernels else math.nan:>15.1f} {host / 1e3:>8.2f}")
    return lines


def probe(runs: Sequence[Path]) -> list[str]:
    """Mean probe and decode per run; between-run and pooled log-log slopes."""
    lines = [f"{'run':<36} {'probe us/op':>11} {'decode ms/pass':>14} {'passes':>6}"]
    means: list[tuple[float, float]] = []
    pooled: list[tuple[float, float]] = []
    for d in runs:
        run = load_run(d)
        pairs = list(run.probe_decode)
        if not pairs:
            raise UserError(f"{d}: no pass has both a host probe and a decode time")
        p = sum(a for a, _ in pairs) / len(pairs)
        t = sum(b for _, b in pairs) / len(pairs)
        means.append((p, t))
        pooled.extend(pairs)
        lines.append(f"{run.run_id:<36} {p:>11.2f} {t:>14.1f} {len(pairs):>6}")
    if len(means) >= 2:
        s, r = _slope([math.log(p) for p, _ in means], [math.log(t) for _, t in means])
        lines.append(f"between run means: slope {s:.2f}, correlation {r:.2f} ({len(means)} runs)")
    s, r = _slope([math.log(p) for p, _ in pooled], [math.log(t) for _, t in pooled])
    lines.append(f"all passes pooled: slope {s:.2f}, correlation {r:.2f} ({len(pooled)} passes)")
    return lines


def exponents(cal_path: Path, runs: Sequence[Path], config: str | None) -> list[str]:
    """Calibrated error of ``cal_path`` on ``runs`` at its own probe exponent, at 1 and at 0."""
    from llm_perf_opt.runners.compare_cli import build_comparison

    cal = load_calibration(cal_path)
    if not cal.timeline:
        raise UserError(f"{cal_path}: not a timeline calibration (no host-speed probe exponent)")
    loaded = [load_run(d) for d in runs]
    lines = []
    for label, e in ((f"fitted e = {cal.host_probe_exponent:.2f}", cal.host_probe_exponent), ("e = 1", 1.0),
                     ("e = 0", 0.0)):
        errs: list[tuple[str, float]] = []
        for run in loaded:
            cmp, _ = build_comparison(run, calibration=evolve(cal, host_probe_exponent=e), config=config)
            errs += [(s.stage, s.calibrated_ratio - 1.0) for s in cmp.stages if s.calibrated_ratio is not None]
        rest = [x for st, x in errs if st != "projector"]
        lines.append(f"{label:<16} within 10%: {sum(abs(x) <= 0.1 for _, x in errs)}/{len(errs)}; without the "
                     f"projector: rms {_rms(rest):.1%}, within 10% {sum(abs(x) <= 0.1 for x in rest)}/{len(rest)}")
    return lines


def launches(path: Path, config: str) -> list[str]:
    """Census launches per workload and stage next to the analytic model's (synthetic pages as the census)."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.data.analytic import OCRWorkloadProfile
    from llm_perf_opt.inputs.synthetic import synthetic_pages
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
    from llm_perf_opt.vocab import Stage

    try:
        data = json.loads(path.read_text())["workloads"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a census stage summary ({exc})") from exc
    cfg = DeepseekOCRConfig.named(config)
    lines = [f"{'workload':<10} {'stage':<12} {'census':>7} {'gemm memsets':>12} {'analytic':>9}"]
    for key, wl_data in data.items():
        mode, _, batch = key.partition(":")
        page = synthetic_pages(int(batch))[0]
        wl = OCRWorkloadProfile.create(profile_id=key, mode=mode, image_width_px=page.width,
                                       image_height_px=page.height, prompt_text_tokens=9, max_new_tokens=64,
                                       batch_size=int(batch), attention="eager", experts="grouped_mm")
        model = AnalyticModel(cfg, wl)
        for stage in Stage:
            row = wl_data["stages"].get(stage.value)
            if row is None:
                continue
            lines.append(f"{key:<10} {stage.value:<12} {row['kernels']:>7.0f} {row['gemm_memsets']:>12.0f} "
                         f"{model.stages[stage].forward_kernel_launches():>9.0f}")
    return lines


def prior(paths: Sequence[Path]) -> list[str]:
    """Per calibration file and stage: evaluated stages within 25% (rms), and over all files."""
    lines = [f"{'calibration':<60} " + " ".join(f"{s:>14}" for s in STAGES)]
    total: dict[str, list[float]] = {s: [] for s in STAGES}

    def row(name: str, errs: dict[str, list[float]]) -> str:
        return f"{name:<60} " + " ".join(
            f"{sum(abs(x) <= 0.25 for x in errs[s])}/{len(errs[s])} ({_rms(errs[s]):.0%})".rjust(14) for s in STAGES)

    for p in paths:
        cal = load_calibration(p)
        if not cal.fit.after:
            raise UserError(f"{p}: the calibration holds no evaluated run (calibrate --prior --run ...)")
        errs: dict[str, list[float]] = {s: [] for s in STAGES}
        for e in cal.fit.after:
            if e.stage in errs:
                errs[e.stage].append(e.relative_error)
                total[e.stage].append(e.relative_error)
        lines.append(row(str(p)[-60:], errs))
    if len(paths) > 1:
        lines.append(row("all", total))
    return lines


def _census_pages(key: str, config: str) -> Any:
    """The analytic model of a census workload 'mode:batch' (synthetic pages, as the census ran)."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.data.analytic import OCRWorkloadProfile
    from llm_perf_opt.inputs.synthetic import synthetic_pages
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig

    mode, _, batch = key.partition(":")
    page = synthetic_pages(int(batch))[0]
    wl = OCRWorkloadProfile.create(profile_id=key, mode=mode, image_width_px=page.width,
                                   image_height_px=page.height, prompt_text_tokens=9, max_new_tokens=64,
                                   batch_size=int(batch), attention="eager", experts="grouped_mm")
    return AnalyticModel(DeepseekOCRConfig.named(config), wl)


def device(path: Path, cal_path: Path, workloads: Sequence[str] | None, config: str) -> list[str]:
    """Per workload and stage: device ms of the census kernels (decode: per forward) and of the timeline
    model's blocks under the calibration (device factors included)."""
    from llm_perf_opt.analytic.roofline import RooflinePeaks
    from llm_perf_opt.analytic.timeline_model import pass_blocks
    from llm_perf_opt.hardware import effective_peaks, load_catalog
    from llm_perf_opt.vocab import parse_dtype

    try:
        data = json.loads(path.read_text())["workloads"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a kernel census ({exc})") from exc
    cal = load_calibration(cal_path)
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get(cal.gpu_key)), parse_dtype(cal.dtype))
    stages = ("vision.sam", "vision.clip", "prefill", "decode")
    lines = [f"{'workload':<10} " + " ".join(f"{s + ' census/model ms':>34}" for s in stages)]
    for key in workloads or list(data):
        if key not in data:
            raise UserError(f"{path}: no workload {key!r} (has {', '.join(data)})")
        model = _census_pages(key, config)
        blocks = pass_blocks(model.stages, model.shape.decode_forwards, peaks, cal,
                             kernel_floor_s=cal.kernel_floor_s, device_scale=cal.stage_device_scale)
        cells = []
        for st in stages:
            ops = data[key]["stages"].get(st, {})
            census_ms = sum(float(r.get("self_device_us", 0.0)) for r in ops.values()) / 1e3
            model_ms = sum(b.device_s for b in blocks.stages.get(st, [])) * 1e3
            err = f"{model_ms / census_ms - 1:+.0%}" if census_ms else "-"
            cells.append(f"{census_ms:9.2f} / {model_ms:9.2f} ({err:>5})".rjust(34))
        lines.append(f"{key:<10} " + " ".join(cells))
    return lines


def _stage_err(e: Any) -> float:
    return float(e.relative_error)


def table(folder: Path) -> list[str]:
    """The error table of a compare_calibrate.sh output folder: measured ms, then the error of the pure
    roofline and of each calibration file (prior, timeline, additive variants) per run and stage."""
    order = [("-prior", "prior (uncalibrated timeline)"), ("-timeline", "timeline"), ("", "per-stage launch"),
             ("-shared", "shared efficiency"), ("-one-launch", "one launch cost")]
    found = sorted(folder.glob("calibration-*-timeline.json"))
    if not found:
        raise UserError(f"{folder}: no calibration-*-timeline.json (a compare_calibrate.sh output folder?)")
    base = found[0].name[: -len("-timeline.json")]
    cals = {}
    for suffix, label in order:
        path = folder / f"{base}{suffix}.json"
        if not path.is_file():
            raise UserError(f"{folder}: {path.name} missing (a compare_calibrate.sh output folder?)")
        cals[label] = load_calibration(path)
    timeline = cals["timeline"]
    lines = ["| run | set | stage | measured ms | roofline (uncalibrated) | "
             + " | ".join(label for _, label in order) + " |", "|---|---|---|---:|---:|" + "---:|" * len(order)]
    after = {label: {(e.run_id, e.stage): e for e in c.fit.after} for label, c in cals.items()}
    held: list[float] = []
    within = 0
    for b in timeline.fit.before:
        row = [b.run_id, "held-out" if b.held_out else "fit", b.stage, f"{b.measured_ms:.2f}",
               f"{_stage_err(b):+.1%}"]
        for _, label in order:
            e = after[label].get((b.run_id, b.stage))
            row.append("-" if e is None else f"{_stage_err(e):+.1%}")
        lines.append("| " + " | ".join(row) + " |")
        if b.held_out:
            t = _stage_err(after["timeline"][(b.run_id, b.stage)])
            held.append(t)
            within += abs(t) <= 0.10
    lines.append("")
    lines.append(f"timeline, held-out stages: rms {_rms(held):.1%}, {within} of {len(held)} within 10%")
    return lines


def cross(folder: Path) -> list[str]:
    """Per run folder under ``folder`` (compare/compare.json with a calibration): calibrated stage errors,
    then rms and stages within 10% with and without the projector."""
    lines = ["| run | " + " | ".join(STAGES) + " |", "|---|" + "---:|" * len(STAGES)]
    errs: list[tuple[str, float]] = []
    for cmp_path in sorted(folder.glob("*/compare/compare.json")):
        data = json.loads(cmp_path.read_text())
        by_stage = {s["stage"]: s for s in data["stages"]}
        row = []
        for st in STAGES:
            s = by_stage.get(st)
            if s is None or s.get("calibrated_ratio") is None:
                row.append("-")
                continue
            e = float(s["calibrated_ratio"]) - 1.0
            errs.append((st, e))
            row.append(f"{e:+.1%}")
        lines.append(f"| {cmp_path.parent.parent.name} | " + " | ".join(row) + " |")
    if not errs:
        raise UserError(f"{folder}: no */compare/compare.json with calibrated stages")
    rest = [e for st, e in errs if st != "projector"]
    lines += ["", f"{sum(abs(e) <= 0.10 for _, e in errs)} of {len(errs)} stages within 10% (rms "
              f"{_rms([e for _, e in errs]):.1%}); without the projector {sum(abs(e) <= 0.10 for e in rest)} of "
              f"{len(rest)} (rms {_rms(rest):.1%})"]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("census", help="host time per launch call and per kernel from a kernel census")
    p.add_argument("file", type=Path, help="census JSON (scripts/gpu/kernel_census.py)")
    p.add_argument("--workload", action="append", default=None, metavar="MODE:BATCH", help="only these workloads")
    p = sub.add_parser("probe", help="decode time against the host probe over runs")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="profiling run folders with probed passes")
    p = sub.add_parser("exponents", help="a timeline calibration on runs at its probe exponent, 1 and 0")
    p.add_argument("--calibration", type=Path, required=True, metavar="FILE", help="timeline calibration JSON")
    p.add_argument("--config", default="default", metavar="NAME", help="model config to analyse (default default)")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="profiling run folders")
    p = sub.add_parser("launches", help="census launches per stage next to the analytic model's")
    p.add_argument("file", type=Path, help="census stage summary (tests/data/census/census-h200-stages.json)")
    p.add_argument("--config", default="default", metavar="NAME", help="model config to analyse (default default)")
    p = sub.add_parser("prior", help="stages within 25% per calibration file (its evaluated runs)")
    p.add_argument("files", type=Path, nargs="+", metavar="CAL", help="calibration JSON with fit.after errors")
    p = sub.add_parser("device", help="census device ms per stage next to the timeline model's")
    p.add_argument("file", type=Path, help="census JSON (scripts/gpu/kernel_census.py)")
    p.add_argument("--calibration", type=Path, required=True, metavar="FILE",
                   help="calibration whose device model to use (e.g. a prior with access patterns)")
    p.add_argument("--workload", action="append", default=None, metavar="MODE:BATCH", help="only these workloads")
    p.add_argument("--config", default="default", metavar="NAME", help="model config to analyse (default default)")
    p = sub.add_parser("table", help="per-run, per-stage error table of a compare_calibrate.sh folder")
    p.add_argument("folder", type=Path, help="e.g. reports/compare/compare-h200")
    p = sub.add_parser("cross", help="calibrated stage errors of the runs of a cross-session folder")
    p.add_argument("folder", type=Path, help="e.g. reports/compare/cross-session-h200-20261202T142808Z")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "census":
            lines = census(args.file, args.workload)
        elif args.cmd == "probe":
            lines = probe(args.runs)
        elif args.cmd == "launches":
            lines = launches(args.file, args.config)
        elif args.cmd == "exponents":
            lines = exponents(args.calibration, args.runs, args.config)
        elif args.cmd == "device":
            lines = device(args.file, args.calibration, args.workload, args.config)
        elif args.cmd == "table":
            lines = table(args.folder)
        elif args.cmd == "cross":
            lines = cross(args.folder)
        else:
            lines = prior(args.files)
    except UserError as exc:
        print(f"host_figures.py: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
