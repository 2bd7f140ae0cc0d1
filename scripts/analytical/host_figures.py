#!/usr/bin/env python
"""Figures about host and device time that docs/results-h200.md quotes, from committed files (CPU only).

    python scripts/analytical/host_figures.py census CENSUS.json [--workload base:1 ...]
        per stage: CUDA runtime launch calls and their host us per launch, host us per kernel of the stage
    python scripts/analytical/host_figures.py probe RUN_DIR [RUN_DIR ...]
        per run: mean host probe and decode ms per pass; slope and correlation of log(decode) on log(probe)
        between the run means and over all passes pooled
        (--when before|after|bracket: the probe before each pass, after it, or the mean of the two; the default,
        run, is what compare takes: the bracket where a pass has both; --probe module)
    python scripts/analytical/host_figures.py passes RUN_DIR [RUN_DIR ...] [--stage vision.sam] [--when ...]
        per run: the stage's pass-to-pass coefficient of variation; over all passes, each run divided by its
        own means: correlation of the stage with the module probe of its pass, and with the pass's decode
    python scripts/analytical/host_figures.py exponents --calibration CAL RUN_DIR [RUN_DIR ...]
        a timeline calibration on other runs with its fitted probe exponent, with 1 and with 0
    python scripts/analytical/host_figures.py launches tests/data/census/census-h200-stages.json
        per workload and stage: launches counted by the census (GEMM memsets apart) and by the analytic model
    python scripts/analytical/host_figures.py prior CAL.json [CAL.json ...]
        per stage: stages of the evaluated runs within 25% and the rms error of each (prior) calibration
    python scripts/analytical/host_figures.py memory RUN_DIR [RUN_DIR ...]
        per run: its largest per-pass peak device memory next to the analytic footprint of its workload
    python scripts/analytical/host_figures.py rows CAL.json [CAL.json ...] [--new-tokens 64]
        per prior calibration file (prior_host_speed.sh): the decode cost of one batch row per step from each
        mode's b1 and b4 runs, measured and predicted, and the medians over all files
    python scripts/analytical/host_figures.py device CENSUS.json --calibration CAL [--workload base:1 ...]
        per workload and stage: the census kernels' device ms next to the timeline model's device ms
    python scripts/analytical/host_figures.py table COMPARE_DIR
        the per-run, per-stage error table of a compare_calibrate.sh folder (every calibration file in it)
    python scripts/analytical/host_figures.py cross SET_DIR
        per run of a folder of calibrated compares (compare_cli --calibration): the stage errors
    python scripts/analytical/host_figures.py moved OLD_COMPARE_ROOT NEW_COMPARE_ROOT [--min 0.005]
        every compare.json under both roots: the stage ratios (predicted / measured, calibrated / measured)
        that moved by at least --min, largest first, and the largest move left out
    python scripts/analytical/host_figures.py batch-gap COMPARE_ROOT
        per cross-session set: the calibrated prefill error of each batch > 1 run minus that of the same
        mode's b1 run; over every compare.json of a batch > 1 run: mean and rms calibrated prefill error
    python scripts/analytical/host_figures.py kernels CENSUS_DETAIL.json --workload base:4 --stage prefill \
        [--op aten::sort ...] [--shape '[6768,' ...]
        the census kernel groups of a stage by aten op and input-shape text: device ms per group, per op, total
    python scripts/analytical/host_figures.py graph GRAPH_DECODE.json --calibration CAL
        per record of scripts/gpu/graph_decode.py: the graph-replayed decode step next to the timeline model's
        step with no host cost (what-if --host-probe-us 0), the eager step next to the model at its probe
    python scripts/analytical/host_figures.py steps RUN_DIR [RUN_DIR ...] --calibration CAL [--window 64]
        per run: the decode step's ms at the start and the end of the decode and its slope per 1,000 KV
        positions, measured next to the timeline model's (and the allocator's decode cudaMalloc calls per forward)
    python scripts/analytical/host_figures.py backlog RUN_DIR [RUN_DIR ...] --calibration CAL [--stage projector]
        per run: the timeline model's device backlog at the end of the stage before STAGE and its STAGE time,
        next to the measured STAGE ms of each pass (the stage before it in brackets)
    python scripts/analytical/host_figures.py segments --calibration CAL [--modes small,base,gundam] \
        [--batches 256,...] [--tokens 1024] [--ngram 0] [--groups 4,8,16]
        per workload: the timeline model's decode with every forward at its own KV length, and the error of
        the mean step alone and of each number of groups of forwards against it
    python scripts/analytical/host_figures.py tie-host CAL --stage vision.sam --to decode --like CAL2 --out NEW
        a timeline calibration with one stage's host cost per kernel set to its ratio to another stage in CAL2
        (e.g. a stage the fitted runs left device-bound, tied as another session's fit had it)
    python scripts/analytical/host_figures.py rates CENSUS_DETAIL.json --ceilings FILE --workload base:1
        per kernel group of a census with --detail that runs a measured access pattern: device ms, bytes,
        achieved TB/s next to the bench's rate for that pattern
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from attrs import evolve

from llm_perf_opt.analytic.calibration import load_calibration, save_calibration
from llm_perf_opt.cli import CommandParser, non_negative_int
from llm_perf_opt.compare.runs import PROBE_WHEN, load_run, probe_decode_pairs, probe_of
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


#: --when choices: "run" is the probe compare takes (the bracket when the pass has both, else the one before)
WHEN_CHOICES = ("run", *PROBE_WHEN)


def probe(runs: Sequence[Path], which: str = "add", when: str = "run", per_pass: bool = False) -> list[str]:
    """Mean probe and decode per run; log-log slopes of decode time on the probe between run means, over
    all passes pooled and within runs (least squares and reduced major axis). ``which``: 'add' (the tiny
    in-place add, host_probe_us) or 'module' (the tiny decoder forward, host_module_probe_us); ``when``:
    the probe compare takes ('run'), the one before each pass, after it, or their mean ('bracket');
    ``per_pass``: also each ok pass's probe and decode ms per forward, and that ms in probe calls."""
    lines = [f"{'run':<36} {'probe us/op':>11} {'decode ms/pass':>14} {'passes':>6}"]
    means: list[tuple[float, float]] = []
    pooled: list[tuple[float, float]] = []
    centred: list[tuple[float, float]] = []
    for d in runs:
        run = load_run(d)
        _, pair_tuple = probe_decode_pairs(_passes(d), which, when)
        pairs = list(pair_tuple)
        if not pairs:
            raise UserError(f"{d}: no pass has both a host probe ({which}, taken: {when}) and a decode time")
        p = sum(a for a, _ in pairs) / len(pairs)
        t = sum(b for _, b in pairs) / len(pairs)
        means.append((p, t))
        pooled.extend(pairs)
        if len(pairs) >= 2:
            lp = sum(math.log(a) for a, _ in pairs) / len(pairs)
            lt = sum(math.log(b) for _, b in pairs) / len(pairs)
            centred.extend((math.log(a) - lp, math.log(b) - lt) for a, b in pairs)
        lines.append(f"{run.run_id:<36} {p:>11.2f} {t:>14.1f} {len(pairs):>6}")
        if per_pass:
            for i, rec in enumerate(_passes(d)):
                v, ms = probe_of(rec, which, when), (rec.get("stage_ms") or {}).get("decode")
                fw = rec.get("decode_forwards")
                if v and ms and fw:
                    lines.append(f"  pass {i}: probe {v:.2f} us, decode {ms / fw:.2f} ms per forward = "
                                 f"{ms / fw * 1e3 / v:,.0f} probe calls")
    if len(means) >= 2:
        s, r = _slope([math.log(p) for p, _ in means], [math.log(t) for _, t in means])
        lines.append(f"between run means: slope {s:.2f}, correlation {r:.2f} ({len(means)} runs)")
    s, r = _slope([math.log(p) for p, _ in pooled], [math.log(t) for _, t in pooled])
    lines.append(f"all passes pooled: slope {s:.2f}, correlation {r:.2f} ({len(pooled)} passes)")
    if len(centred) >= 3:
        s, r = _slope([x for x, _ in centred], [y for _, y in centred])
        lines.append(f"within runs (each centred on its means): slope {s:.2f}, correlation {r:.2f}, "
                     f"reduced-major-axis slope {s / r:.2f} ({len(centred)} passes)")
    return lines


def _passes(run_dir: Path) -> list[dict[str, Any]]:
    """The ok passes of a run folder's passes.jsonl (the folder or its torch_profiler/ child)."""
    for path in (run_dir / "passes.jsonl", run_dir / "torch_profiler" / "passes.jsonl"):
        if path.is_file():
            try:
                rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise UserError(f"{path}: not readable JSON lines ({exc})") from None
            return [r for r in rows if isinstance(r, dict) and r.get("status", "ok") == "ok"]
    raise UserError(f"{run_dir}: no passes.jsonl (a profiling run folder)")


def passes(runs: Sequence[Path], stage: str = "vision.sam", when: str = "run") -> list[str]:
    """Per run, the stage's ms per pass (mean, coefficient of variation); over the passes of every run, each
    divided by its run's mean: the correlation of the stage with the module probe taken ``when`` (run: as
    compare takes it; before: host_module_probe_us; after: host_module_probe_after_us; bracket: their mean)
    and with the same pass's decode ms (a long stage, which averages the host's speed over seconds)."""
    lines = [f"{'run':<36} {stage + ' ms':>14} {'CV':>6} {'probe us':>9} {'passes':>6}"]
    rel: list[tuple[float, float, float]] = []
    for d in runs:
        rows = [r for r in _passes(d) if probe_of(r, "module", when) and isinstance(r.get("stage_ms"), dict)
                and stage in r["stage_ms"] and "decode" in r["stage_ms"]]
        if len(rows) < 2:
            raise UserError(f"{d}: fewer than 2 passes with {stage}, decode and a module probe (taken: {when})")
        st_ms = [float(r["stage_ms"][stage]) for r in rows]
        dec = [float(r["stage_ms"]["decode"]) for r in rows]
        pr = [cast(float, probe_of(r, "module", when)) for r in rows]
        ms, md, mp = statistics.fmean(st_ms), statistics.fmean(dec), statistics.fmean(pr)
        rel.extend((a / ms, b / md, c / mp) for a, b, c in zip(st_ms, dec, pr, strict=True))
        lines.append(f"{d.name:<36} {ms:>14.2f} {statistics.stdev(st_ms) / ms:>6.2f} {mp:>9.2f} {len(rows):>6}")
    if len(rel) >= 3:
        a, b, c = ([x[i] for x in rel] for i in range(3))
        lines.append(f"within runs ({len(rel)} passes): {stage} with the module probe {statistics.correlation(a, c):.2f}, "
                     f"with the pass's decode {statistics.correlation(a, b):.2f}; decode with the probe "
                     f"{statistics.correlation(b, c):.2f}")
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
    from llm_perf_opt.vocab import Stage

    try:
        raw = json.loads(path.read_text())
        # the census's decode pass: its token picks per forward and n-gram size set the ban's launches
        data, census_pass = raw["workloads"], _census_pass(raw)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a census stage summary ({exc})") from exc
    lines = [f"{'workload':<10} {'stage':<12} {'census':>7} {'gemm memsets':>12} {'analytic':>9}"]
    for key, wl_data in data.items():
        model = _census_pages(key, config, **census_pass)
        for stage in Stage:
            row = wl_data["stages"].get(stage.value)
            if row is None:
                continue
            if not isinstance(row, dict) or not {"kernels", "gemm_memsets"} <= set(row):
                raise UserError(f"{path}: {key} {stage.value} has no 'kernels'/'gemm_memsets' (a census stage "
                                "summary such as tests/data/census/census-h200-stages.json, not a full census)")
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


def memory(runs: Sequence[Path], config: str) -> list[str]:
    """Per run folder: its largest per-pass peak (max_memory_allocated) next to the analytic footprint of its
    workload (its device peak: weights + the largest stage's activations and the KV cache live in it; the largest
    of its workload groups)."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.report import memory_footprint
    from llm_perf_opt.compare.runs import run_workloads
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig

    cfg = DeepseekOCRConfig.named(config)
    lines = [f"{'run':<45} {'peak GB':>8} {'footprint GB':>12} {'error':>7}"]
    for folder in runs:
        run = load_run(folder)
        peak = run.report.peak_memory_bytes
        if not peak:
            raise UserError(f"{folder}: the run recorded no peak memory (a CPU run?)")
        pred = max(memory_footprint(AnalyticModel(cfg, wl), None).total_bytes for wl, _ in run_workloads(run))
        lines.append(f"{run.run_id:<45} {peak / 1e9:>8.3f} {pred / 1e9:>12.3f} {pred / peak - 1:>+7.1%}")
    return lines


def rows(paths: Sequence[Path], new_tokens: int) -> list[str]:
    """Per calibration file (calibrate --prior on run sets): for each mode with a b1 and a b4 run, the decode
    cost of one batch row per step, (b4 - b1) / 3 / new_tokens, measured and predicted (us); then the medians."""
    if new_tokens < 1:
        raise UserError(f"--new-tokens {new_tokens}: must be >= 1")
    lines = [f"{'calibration':<40} {'mode':<7} {'measured us':>11} {'predicted us':>12}"]
    meas: list[float] = []
    pred: list[float] = []
    for p in paths:
        cal = load_calibration(p)
        dec: dict[tuple[str, int], tuple[float, float]] = {}
        for e in cal.fit.after:
            m = re.match(r"[a-z0-9]+-([a-z]+)-b(\d+)-", e.run_id)
            if e.stage == "decode" and m:
                dec[(m.group(1), int(m.group(2)))] = (e.measured_ms, e.predicted_ms)
        for mode in sorted({k[0] for k in dec}):
            if (mode, 1) in dec and (mode, 4) in dec:
                (m1, p1), (m4, p4) = dec[(mode, 1)], dec[(mode, 4)]
                meas.append((m4 - m1) / 3 / new_tokens * 1e3)
                pred.append((p4 - p1) / 3 / new_tokens * 1e3)
                lines.append(f"{str(p)[-40:]:<40} {mode:<7} {meas[-1]:>11.1f} {pred[-1]:>12.1f}")
    if not meas:
        raise UserError("no calibration file holds a b1 and a b4 decode of one mode")
    lines.append(f"median of {len(meas)} pairs: {statistics.median(meas):.0f} us measured, "
                 f"{statistics.median(pred):.0f} us predicted per row and step")
    return lines


def _census_pages(key: str, config: str, attention: str = "eager", experts: str = "grouped_mm",
                  new_tokens: int = 64, ngram: int | None = None) -> Any:
    """The analytic model of a census workload 'mode:batch' (synthetic pages, as the census ran), at the
    pass's ``new_tokens`` (its token picks per decode forward carry the n-gram ban) and n-gram size ``ngram``
    (None: the profiler's default)."""
    from llm_perf_opt.analytic.gemm_shapes import parse_workload
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.data.analytic import OCRWorkloadProfile
    from llm_perf_opt.inputs.synthetic import synthetic_pages
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
    from llm_perf_opt.vocab import DEFAULT_NO_REPEAT_NGRAM

    mode, batch = parse_workload(key)
    page = synthetic_pages(batch)[0]
    wl = OCRWorkloadProfile.create(profile_id=key, mode=mode, image_width_px=page.width,
                                   image_height_px=page.height, prompt_text_tokens=9, max_new_tokens=new_tokens,
                                   batch_size=batch, attention=attention, experts=experts,
                                   no_repeat_ngram_size=DEFAULT_NO_REPEAT_NGRAM if ngram is None else ngram)
    return AnalyticModel(DeepseekOCRConfig.named(config), wl)


def _census_pass(raw: dict[str, Any]) -> dict[str, Any]:
    """The decode pass a kernel census ran (kernel_census.py records both; a file without them: 4 new tokens,
    the ban at the default) as :func:`_census_pages` keywords; ValueError on values that are not counts."""
    new_tokens, ngram = raw.get("new_tokens", 4), raw.get("no_repeat_ngram_size")
    if not isinstance(new_tokens, int) or new_tokens < 1 or not (ngram is None or isinstance(ngram, int) and ngram >= 0):
        raise ValueError(f"new_tokens {new_tokens!r} / no_repeat_ngram_size {ngram!r} are not counts")
    return {"new_tokens": new_tokens, "ngram": ngram}


def device(path: Path, cal_path: Path, workloads: Sequence[str] | None, config: str) -> list[str]:
    """Per workload and stage: device ms of the census kernels (decode: per forward) and of the timeline
    model's blocks under the calibration (device factors included)."""
    from llm_perf_opt.analytic.roofline import RooflinePeaks
    from llm_perf_opt.analytic.timeline_model import pass_blocks
    from llm_perf_opt.hardware import effective_peaks, load_catalog
    from llm_perf_opt.vocab import parse_dtype

    try:
        raw = json.loads(path.read_text())
        data, census_pass = raw["workloads"], _census_pass(raw)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a kernel census ({exc})") from exc
    cal = load_calibration(cal_path)
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get(cal.gpu_key)), parse_dtype(cal.dtype))
    stages = ("vision.sam", "vision.clip", "prefill", "decode")
    lines = [f"{'workload':<10} " + " ".join(f"{s + ' census/model ms':>34}" for s in stages)]
    for key in workloads or list(data):
        if key not in data:
            raise UserError(f"{path}: no workload {key!r} (has {', '.join(data)})")
        model = _census_pages(key, config, **census_pass)
        # device time only, per forward: the mean step's (device work is linear in the KV length, and the
        # census's few forwards span a few positions), no groups of forwards needed
        blocks = pass_blocks(model.stages, model.shape.decode_forwards, peaks, cal,
                             kernel_floor_s=cal.kernel_floor_s, device_scale=cal.stage_device_scale,
                             call_gap_s=cal.kernel_gap_s)
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


#: a stage counts as matched when its error is within this, or within SEM_FACTOR standard errors of the
#: measured mean (the measurement cannot tell the two apart)
GOAL = 0.10
SEM_FACTOR = 2.0


def _stage_sem(stage: dict[str, Any]) -> float | None:
    """Standard error of a compare.json stage's measured mean relative to it (measured_std_ms /
    sqrt(samples) / measured_ms); None with fewer than 2 samples or no std."""
    n, mean, std = stage.get("samples") or 0, stage.get("measured_ms") or 0.0, stage.get("measured_std_ms")
    return float(std) / math.sqrt(n) / float(mean) if n >= 2 and mean > 0 and std is not None else None


def _sems(folder: Path) -> dict[tuple[str, str], float]:
    """(run id, stage) -> :func:`_stage_sem` of each ``<run>/compare/compare.json`` under ``folder``."""
    out: dict[tuple[str, str], float] = {}
    for path in sorted(folder.glob("*/compare/compare.json")):
        for s in json.loads(path.read_text())["stages"]:
            sem = _stage_sem(s)
            if sem is not None:
                out[(path.parent.parent.name, s["stage"])] = sem
    return out


def _matched(err: float, sem: float | None) -> bool:
    return abs(err) <= max(GOAL, SEM_FACTOR * (sem or 0.0))


def _summary(errs: Sequence[tuple[str, float, float | None]]) -> str:
    """'N of M within 10% (rms), K within 10% or 2 standard errors' over (stage, error, sem) rows."""
    return (f"{sum(abs(e) <= GOAL for _, e, _ in errs)} of {len(errs)} within 10% (rms "
            f"{_rms([e for _, e, _ in errs]):.1%}), {sum(_matched(e, m) for _, e, m in errs)} within 10% "
            f"or {SEM_FACTOR:g} standard errors of the measured mean")


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
    sems = _sems(folder)
    lines = ["| run | set | stage | measured ms | sem | roofline (uncalibrated) | "
             + " | ".join(label for _, label in order) + " |", "|---|---|---|---:|---:|---:|" + "---:|" * len(order)]
    after = {label: {(e.run_id, e.stage): e for e in c.fit.after} for label, c in cals.items()}
    held: list[tuple[str, float, float | None]] = []
    for b in timeline.fit.before:
        sem = sems.get((b.run_id, b.stage))
        row = [b.run_id, "held-out" if b.held_out else "fit", b.stage, f"{b.measured_ms:.2f}",
               "-" if sem is None else f"{sem:.1%}", f"{_stage_err(b):+.1%}"]
        for _, label in order:
            e = after[label].get((b.run_id, b.stage))
            row.append("-" if e is None else f"{_stage_err(e):+.1%}")
        lines.append("| " + " | ".join(row) + " |")
        if b.held_out:
            held.append((b.stage, _stage_err(after["timeline"][(b.run_id, b.stage)]), sem))
    lines.append("")
    lines.append(f"timeline, held-out stages: {_summary(held)}")
    lines.append("sem: standard error of the measured mean (std / sqrt(samples)) relative to it")
    return lines


def cross(folder: Path) -> list[str]:
    """Per run folder under ``folder`` (compare/compare.json with a calibration): calibrated stage errors,
    then rms and stages within 10% with and without the projector."""
    lines = ["| run | " + " | ".join(STAGES) + " |", "|---|" + "---:|" * len(STAGES)]
    errs: list[tuple[str, float, float | None]] = []
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
            sem = _stage_sem(s)
            errs.append((st, e, sem))
            row.append(f"{e:+.1%}" + ("" if sem is None else f" (sem {sem:.1%})"))
        lines.append(f"| {cmp_path.parent.parent.name} | " + " | ".join(row) + " |")
    if not errs:
        raise UserError(f"{folder}: no */compare/compare.json with calibrated stages")
    rest = [x for x in errs if x[0] != "projector"]
    lines += ["", f"all stages: {_summary(errs)}", f"without the projector: {_summary(rest)}",
              "sem: standard error of the measured mean (std / sqrt(samples)) relative to it"]
    return lines


def _compares(root: Path) -> dict[str, dict[str, Any]]:
    """Relative path -> stages by name of every compare.json under ``root``."""
    out = {}
    for path in sorted(root.glob("**/compare.json")):
        data = json.loads(path.read_text())
        out[str(path.relative_to(root))] = {s["stage"]: s for s in data["stages"]}
    if not out:
        raise UserError(f"{root}: no compare.json under it")
    return out


def moved(old_root: Path, new_root: Path, least: float) -> list[str]:
    """Stage ratios of the compare.json files under both roots that moved by at least ``least``."""
    old, new = _compares(old_root), _compares(new_root)
    moves: list[tuple[float, str, str, str, float, float]] = []
    for rel in sorted(set(old) & set(new)):
        for stage, s in new[rel].items():
            for key in ("ratio", "calibrated_ratio"):
                a, b = old[rel].get(stage, {}).get(key), s.get(key)
                if a is not None and b is not None:
                    moves.append((abs(b - a), rel.removesuffix("/compare/compare.json"), stage, key, a, b))
    moves.sort(reverse=True)
    shown = [m for m in moves if m[0] >= least]
    lines = [f"{len(set(old) & set(new))} compare.json in both roots, {len(moves)} stage ratios; "
             f"{len(shown)} moved by >= {least:g}:"]
    lines += [f"  {rel} {stage} {key}: {a:.3f} -> {b:.3f}" for _, rel, stage, key, a, b in shown]
    rest = moves[len(shown):]
    if rest:
        _, rel, stage, key, a, b = rest[0]
        lines.append(f"largest move left out: {rel} {stage} {key}: {a:.3f} -> {b:.3f}")
    return lines


#: a range counts as queued when the device was still busy with earlier work at its host start and the host
#: left it with work still queued, by at least these margins (ms)
QUEUED_START_MS, QUEUED_END_MS = 0.3, 0.05


def gaps(runs: Sequence[Path], ceilings: Path | None, compare_root: Path | None = None,
         timed_stage: str = "vision.clip") -> list[str]:
    """Device time between kernels of the stage ranges the host stayed ahead of, from the runs' profiled-pass
    timelines (torch_profiler/timeline.json): (device span - kernel time) / (kernels - 1), next to the bench's
    gaps (queued on a stream, replayed from a CUDA graph); with ``compare_root``, the same from the timed passes of ``timed_stage`` in the Base b4
    comparisons under it (device-bound there: CLIP and the projector run behind SAM's backlog)."""
    lines = [f"{'run':36s} {'stage':12s} {'kernels':>8s} {'span ms':>9s} {'busy ms':>9s} {'gap us/kernel':>14s}"]
    found: list[float] = []
    for run in runs:
        if not run.is_dir():
            raise UserError(f"{run}: no such run folder")
        path = run / "timeline.json" if (run / "timeline.json").is_file() else run / "torch_profiler" / "timeline.json"
        if not path.is_file():
            lines.append(f"{run.name}: skipped, no timeline.json (profiled before the runner wrote one)")
            continue
        try:
            ranges = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: unreadable timeline.json ({exc})") from None
        for r in ranges:
            if "start_backlog_ms" not in r or r.get("kernels", 0) < 4 or r.get("sync_ms", 0.0) > 0:
                continue
            if r["start_backlog_ms"] < QUEUED_START_MS or r["end_backlog_ms"] < QUEUED_END_MS:
                continue
            gap_us = (r["device_span_ms"] - r["device_busy_ms"]) / (r["kernels"] - 1) * 1e3
            found.append(gap_us)
            name = run.name if run.name != "torch_profiler" else run.parent.name
            lines.append(f"{name:36s} {r['stage']:12s} {r['kernels']:8.0f} {r['device_span_ms']:9.3f} "
                         f"{r['device_busy_ms']:9.3f} {gap_us:14.2f}")
    if not found:
        lines.append(f"no range without syncs whose host stayed ahead (backlog >= {QUEUED_START_MS} ms at the start "
                     f"and >= {QUEUED_END_MS} ms at the end)")
    else:
        lines.append(f"{len(found)} queued ranges: median {statistics.median(found):.2f} us between kernels")
    if compare_root is not None:
        lines.append(f"timed passes, {timed_stage} of the Base b4 runs under {compare_root}: "
                     "(measured - kernel time) / (kernels - 1)")
        for rel, stages in _compares(compare_root).items():
            st = stages.get(timed_stage)
            if "base-b4-" not in rel or not st or not st.get("measured_device_ms") or not st.get("measured_kernels"):
                continue
            per = (st["measured_ms"] - st["measured_device_ms"]) / (st["measured_kernels"] - 1) * 1e3
            lines.append(f"  {rel.removesuffix('/compare/compare.json')}: {st['measured_ms']:.3f} ms measured, "
                         f"{st['measured_device_ms']:.3f} ms of kernels, {per:.2f} us per kernel")
    if ceilings is not None:
        from llm_perf_opt.hardware.bench import load_ceilings

        c = load_ceilings(ceilings)
        lines.append("bench (hw gap): " + (f"{c.kernel_gap_s * 1e6:.2f} us between queued small kernels"
                                           if c.kernel_gap_s is not None else "not measured")
                     + (f", {c.kernel_gap_graph_s * 1e6:.2f} us replayed from a CUDA graph"
                        if c.kernel_gap_graph_s is not None else ""))
    return lines


def graph(path: Path, cal_path: Path, config: str, kernels: int = 0) -> list[str]:
    """Per record of scripts/gpu/graph_decode.py: the graph-replayed decode step (no host in the way) next to
    the timeline model's step at the same KV length with no host cost (what-if --host-probe-us 0), and the
    eager step next to the model at the record's own add_ probe; with ``kernels``, the trace's kernels of
    most time per step (records from before graph_decode.py listed them have none)."""
    from llm_perf_opt.analytic.calibration import CalibrationError, efficiency_for_stage
    from llm_perf_opt.analytic.roofline import RooflinePeaks
    from llm_perf_opt.analytic.timeline_model import simulate_pass, stage_blocks
    from llm_perf_opt.hardware import effective_peaks, load_catalog
    from llm_perf_opt.vocab import Stage, parse_dtype

    try:
        records = json.loads(path.read_text())["records"]
        if not isinstance(records, list):
            raise TypeError("records is not a list")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a graph_decode.py result ({exc})") from None
    cal = load_calibration(cal_path)
    try:
        free = cal.for_host_probe(0.0)
    except CalibrationError as exc:
        raise UserError(f"{cal_path}: {exc}") from None
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get(cal.gpu_key)), parse_dtype(cal.dtype))
    eff = efficiency_for_stage(cal, Stage.DECODE.value)
    scale = cal.stage_device_scale.get(Stage.DECODE.value, 1.0)
    lines = [f"{'workload':<16} {'kv':>5} {'kernels meas/model':>18} {'kernel ms meas/model':>21} "
             f"{'graph ms':>9} {'model no host':>14} {'eager ms':>9} {'probe us':>8} {'model at probe':>15}"]
    for rec in records:
        try:
            key, attn, kv = f"{rec['mode']}:{rec['batch']}", str(rec["attention"]), int(rec["kv_len"])
            eager_ms = float(rec["eager_ms"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: a record lacks mode, batch, attention, kv_len or eager_ms ({exc})") from None
        ngram = rec.get("no_repeat_ngram_size")  # records before it was an option ran the default
        model = _census_pages(key, config, attn, str(rec.get("experts", "grouped_mm")),
                              ngram=ngram if isinstance(ngram, int) and ngram >= 0 else None)
        if model.shape.prefill_tokens != rec.get("prompt_length"):
            raise UserError(f"{path}: {key} prompt of {rec.get('prompt_length')} tokens, the model's "
                            f"{model.shape.prefill_tokens}: not the same workload")
        step = {Stage.DECODE: model.decode_step(kv)}
        blocks = stage_blocks(step[Stage.DECODE], peaks, eff, kernel_floor_s=cal.kernel_floor_s,
                              call_gap_s=cal.kernel_gap_s)
        k_model = sum(b.kernels for b in blocks)
        dev_ms = sum(b.device_s for b in blocks) * scale * 1e3
        no_host_ms = simulate_pass(step, 1, peaks, free).decode_forward_s * 1e3
        probe = rec.get("host_probe_add_us")
        at_probe = "-"
        if probe and cal.host_probe_us > 0 and cal.host_probe == "add":  # the records carry the add_ probe
            at_probe_ms = simulate_pass(step, 1, peaks, cal.for_host_probe(float(probe))).decode_forward_s * 1e3
            at_probe = f"{at_probe_ms:7.3f} ({at_probe_ms / eager_ms - 1:+.0%})"
        tr = rec.get("graph_trace") or rec.get("eager_trace") or {}
        if "graph_ms" in rec:
            graph_cell = f"{rec['graph_ms']:9.3f} {no_host_ms:7.3f} ({no_host_ms / rec['graph_ms'] - 1:+.0%})"
        else:
            graph_cell = f"{'failed':>9} {no_host_ms:7.3f}{'':8}"
        kern_ms = f"{tr.get('kernel_sum_ms', 0.0):.3f} / {dev_ms:.3f}"
        lines.append(f"{key + ' ' + attn:<16} {kv:>5} {tr.get('kernels', 0):>8.0f} / {k_model:<7.0f} {kern_ms:>21} "
                     f"{graph_cell} {eager_ms:9.3f} {probe or 0:8.2f} {at_probe:>15}")
        if "graph_error" in rec:
            lines.append(f"  capture failed: {rec['graph_error']}")
        for top in (tr.get("top") or [])[:max(0, kernels)]:
            lines.append(f"  {top['ms']:8.3f} ms {top['launches']:5.0f} launches  {str(top['name'])[:90]}")
    graph_gap = f"{free.stage_gap_s(Stage.DECODE.value) * 1e6:.2f} us" + ("" if cal.kernel_gap_graph_s is not None else " (no graph gap measured)")
    lines.append(f"gap between kernels: {cal.kernel_gap_s * 1e6:.2f} us on a stream, {graph_gap} with no host; "
                 f"decode device factor {scale:g}; "
                 "kernels and kernel ms measured from the replays' trace (the eager step's when the capture failed)")
    return lines


def steps(runs: Sequence[Path], cal_path: Path, config: str, window: int = 64) -> list[str]:
    """Per run: its decode step time against the KV length, measured (each forward's median over the passes)
    next to the timeline model's step at the same lengths under the calibration at the run's own host probe:
    the means of the first and last ``window`` forwards, the growth between them and the slope in ms per
    1,000 positions (measured: least squares over every forward; model: through the two windows). With the
    caching allocator's counters recorded (passes.jsonl), also its cudaMalloc calls in the decode per forward."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.timeline_model import simulate_pass
    from llm_perf_opt.compare.fit import line_fit
    from llm_perf_opt.compare.runs import run_workloads
    from llm_perf_opt.vocab import Stage

    if window < 1:
        raise UserError(f"--window {window}: must be >= 1")
    cal, peaks, cfg = _timeline_setup(cal_path, config)
    lines = [f"{'run':<42} {'fwd':>5} {'kv':>11} {'measured ms first/last':>22} {'growth':>7} {'ms/1k':>6} "
             f"{'model ms first/last':>19} {'growth':>7} {'ms/1k':>6} {'mallocs/fwd':>11}"]
    for d in runs:
        rows = [r for r in _passes(d) if r.get("decode_forwards") and isinstance(r.get("decode_step_ms"), list)]
        try:
            seqs = [[float(x) for x in r["decode_step_ms"][: int(r["decode_forwards"])]] for r in rows]
            allocs = [float(r["decode_device_allocs"]) / int(r["decode_forwards"]) for r in rows
                      if r.get("decode_device_allocs") is not None]
        except (TypeError, ValueError) as exc:
            raise UserError(f"{d}: passes.jsonl: decode_step_ms, decode_forwards or decode_device_allocs is not "
                            f"numbers ({exc})") from None
        forwards = min((len(x) for x in seqs), default=0)
        if forwards < 2:
            raise UserError(f"{d}: no pass with per-step decode times over 2 or more forwards (passes.jsonl)")
        med = [statistics.median(x[j] for x in seqs) for j in range(forwards)]
        run = load_run(d)
        host = cal.at_host_speed(run.probe_us(cal.host_probe))
        models = [(AnalyticModel(cfg, wl), w) for wl, w in run_workloads(run)]
        total_w = sum(w for _, w in models)
        shape = models[0][0].shape
        if shape.decode_forwards != forwards:
            raise UserError(f"{d}: its passes hold {forwards} timed decode forwards, its workload has "
                            f"{shape.decode_forwards} (a run that stopped at EOS has no fixed step count)")
        w_n = min(window, forwards // 2)
        first_j, last_j = (w_n - 1) / 2, forwards - 1 - (w_n - 1) / 2  # window centres, in forwards

        kv = [shape.decode_kv_len(j) for j in range(forwards)]
        m_first, m_last = statistics.fmean(med[:w_n]), statistics.fmean(med[-w_n:])
        p_first, p_last = (sum(w * simulate_pass({Stage.DECODE: m.decode_step(m.shape.decode_kv_len(0) + j)}, 16,
                                                 peaks, host).decode_forward_s * 1e3 for m, w in models) / total_w
                           for j in (first_j, last_j))
        slope = line_fit(kv, med)[1] * 1e3
        p_slope = (p_last - p_first) / (last_j - first_j) * 1e3 if last_j > first_j else 0.0
        alloc_cell = f"{statistics.fmean(allocs):11.2f}" if allocs else f"{'-':>11}"
        lines.append(f"{d.name[-42:]:<42} {forwards:>5} {kv[0]:>5}-{kv[-1]:<5} {m_first:>10.2f} / {m_last:<9.2f} "
                     f"{m_last / m_first - 1:>+7.1%} {slope:>6.2f} {p_first:>8.2f} / {p_last:<8.2f} "
                     f"{p_last / p_first - 1:>+7.1%} {p_slope:>6.2f} {alloc_cell}")
    lines.append(f"windows of {window} forwards (at most half the decode); model: {cal_path.name} at each run's "
                 f"{cal.host_probe} probe; measured per forward: the median over the passes")
    return lines


def backlog(runs: Sequence[Path], cal_path: Path, config: str, stage: str = "projector") -> list[str]:
    """Per run: the timeline model's device backlog at the end of the stage before ``stage`` (ms; 0 or a
    few microseconds: the device was waiting for the host, so ``stage``'s host work is not hidden) and its ``stage`` time, under the
    calibration at the run's own host probe, next to the measured ``stage`` ms of each pass with the stage
    before it in brackets. A short stage after a host-bound one is either its kernels alone (the earlier
    stage's queued kernels hide its host work) or its host time, pass by pass."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.timeline_model import simulate_pass
    from llm_perf_opt.compare.runs import run_workloads
    from llm_perf_opt.vocab import Stage

    order = [st.value for st in Stage]
    if stage not in order or order.index(stage) == 0:
        raise UserError(f"--stage {stage!r}: one of {', '.join(order[1:])} (a stage with one before it)")
    before = order[order.index(stage) - 1]
    cal, peaks, cfg = _timeline_setup(cal_path, config)
    width = max(len(d.name) for d in runs)
    lines = [f"{'run':<{width}} {before + ' end backlog ms':>26} {stage + ' ms':>16}  measured {stage} ms per pass "
             f"({before} ms)"]
    for d in runs:
        rows = [r for r in _passes(d) if isinstance(r.get("stage_ms"), dict) and stage in r["stage_ms"]
                and before in r["stage_ms"]]
        if not rows:
            raise UserError(f"{d}: no pass with {stage} and {before} times (passes.jsonl stage_ms)")
        try:
            cells = [f"{float(r['stage_ms'][stage]):.3f}({float(r['stage_ms'][before]):.2f})" for r in rows]
        except (TypeError, ValueError) as exc:
            raise UserError(f"{d}: passes.jsonl: stage_ms holds a value that is not a number ({exc})") from None
        run = load_run(d)
        host = cal.at_host_speed(run.probe_us(cal.host_probe))
        weighted = [(AnalyticModel(cfg, wl), w) for wl, w in run_workloads(run)]
        total_w = sum(w for _, w in weighted)
        sims = [(simulate_pass(m.stages, m.shape.decode_forwards, peaks, host,
                               decode_segments=m.decode_segment_steps()), w) for m, w in weighted]
        lag = sum(w * sim.stage_end_backlog_s[before] for sim, w in sims) / total_w * 1e3
        pred = sum(w * sim.stage_s[stage] for sim, w in sims) / total_w * 1e3
        lines.append(f"{d.name:<{width}} {lag:>+26.3f} {pred:>16.3f}  {' '.join(cells)}")
    lines.append(f"model: {cal_path.name} at each run's {cal.host_probe} probe; backlog: device clock minus host "
                 f"clock when {before}'s last kernel is issued")
    return lines


def levels(runs: Sequence[Path], window: int = 8) -> list[str]:
    """Per pass of each run: the median decode step (ms) of each window of ``window`` consecutive forwards, the
    ratio of the largest such median to the smallest, and the module probe (us) before and after the pass.
    Host speed that changes within a pass shows as steps between levels; a pass's median step then depends on
    the share of its forwards at each level rather than on its workload."""
    if window < 1:
        raise UserError(f"--window {window}: must be >= 1")
    width = max(len(d.name) for d in runs)
    left_out: list[str] = []
    lines = [f"{'run':<{width}} {'pass':>4} {'probe us before/after':>21} {'max/min':>7}  "
             f"median ms per {window} forwards"]
    for d in runs:
        every = _passes(d)
        rows = [r for r in every if r.get("decode_forwards") and isinstance(r.get("decode_step_ms"), list)
                and r["decode_step_ms"]]
        if not rows:
            raise UserError(f"{d}: no pass with per-step decode times (passes.jsonl)")
        if len(rows) < len(every):
            left_out.append(f"{d.name}: {len(every) - len(rows)} pass(es) without per-step decode times left out")
        for r in rows:
            try:
                steps_ms = [float(x) for x in r["decode_step_ms"][: int(r["decode_forwards"])]]
                probes = [r.get(k) for k in ("host_module_probe_us", "host_module_probe_after_us")]
                cells = [f"{float(x):.1f}" if x is not None else "-" for x in probes]
            except (TypeError, ValueError) as exc:
                raise UserError(f"{d}: passes.jsonl: decode_step_ms, decode_forwards or a probe is not numbers "
                                f"({exc})") from None
            meds = [statistics.median(steps_ms[i:i + window]) for i in range(0, len(steps_ms), window)]
            spread = max(meds) / min(meds) if min(meds) > 0 else float("nan")
            lines.append(f"{d.name:<{width}} {r.get('pass_index', '-'):>4} {cells[0]:>10} / {cells[1]:<8} "
                         f"{spread:>7.2f}  {' '.join(f'{m:.1f}' for m in meds)}")
    lines += left_out
    lines.append(f"each pass's decode forwards in windows of {window} (the last may be shorter); probe: the module probe "
                 "(us per aten call of a tiny decoder forward) before and after the pass")
    return lines


def _timeline_setup(cal_path: Path, config: str) -> tuple[Any, Any, Any]:
    """(timeline calibration, its GPU's catalogue peaks at its dtype, model config ``config``); UserError for
    a calibration that is not a timeline one."""
    from llm_perf_opt.analytic.roofline import RooflinePeaks
    from llm_perf_opt.hardware import effective_peaks, load_catalog
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
    from llm_perf_opt.vocab import parse_dtype

    cal = load_calibration(cal_path)
    if not cal.timeline:
        raise UserError(f"{cal_path}: not a timeline calibration (calibrate --time-model timeline or --prior)")
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get(cal.gpu_key)), parse_dtype(cal.dtype))
    return cal, peaks, DeepseekOCRConfig.named(config)


def _decode_ms(model: Any, peaks: Any, cal: Any, segs: Any) -> float:
    """The timeline model's decode stage in ms: the mean step, or ``segs`` (step, forwards) groups."""
    from llm_perf_opt.analytic.timeline_model import simulate_pass
    from llm_perf_opt.vocab import Stage

    return simulate_pass({Stage.DECODE: model.stages[Stage.DECODE]}, model.shape.decode_forwards, peaks, cal,
                         decode_segments=segs).stage_s[Stage.DECODE.value] * 1e3


def segments(cal_path: Path, modes: Sequence[str], batches: Sequence[int], tokens: int, ngram: int,
             groups: Sequence[int], config: str) -> list[str]:
    """Per workload (the standard workload at each mode and batch, ``tokens`` new tokens, n-gram ban
    ``ngram``): the timeline model's decode with every forward at its own KV length, and the error against
    it of the mean step alone and of each number of ``groups`` of forwards (AnalyticModel.decode_segments)."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.timeline_model import simulate_pass
    from llm_perf_opt.analytic.workloads import get_profile, with_overrides
    from llm_perf_opt.vocab import Stage

    if tokens < 2 or ngram < 0 or any(b < 1 for b in batches) or any(g < 1 for g in groups):
        raise UserError("segments: --tokens must be >= 2, --ngram >= 0, --batches and --groups >= 1")
    cal, peaks, cfg = _timeline_setup(cal_path, config)
    lines = [f"{'mode':<7} {'batch':>5} {'every fwd ms':>12} {'ms/token first-last':>20} {'mean step':>9} "
             + " ".join(f"{f'{g} groups':>9}" for g in groups)]
    worst = dict.fromkeys(groups, 0.0)
    for mode in modes:
        for batch in batches:
            wl = with_overrides(get_profile("dsocr-standard-v1"), mode=mode, batch_size=batch,
                                max_new_tokens=tokens, no_repeat_ngram_size=ngram)
            m = AnalyticModel(cfg, wl)
            n = m.shape.decode_forwards
            each = m.decode_segment_steps(n)
            every = _decode_ms(m, peaks, cal, each)
            ends = [simulate_pass({Stage.DECODE: step}, 16, peaks, cal).decode_forward_s * 1e3
                    for step, _ in (each[0], each[-1])]
            cells = []
            for g in groups:
                err = _decode_ms(m, peaks, cal, m.decode_segment_steps(g)) / every - 1
                worst[g] = max(worst[g], abs(err))
                cells.append(f"{err:>+9.2%}")
            lines.append(f"{mode:<7} {batch:>5} {every:>12.1f} {ends[0]:>9.2f}-{ends[1]:<10.2f} "
                         f"{_decode_ms(m, peaks, cal, ()) / every - 1:>+9.2%} " + " ".join(cells))
    lines.append("largest |error|: " + ", ".join(f"{g} groups {worst[g]:.2%}" for g in groups)
                 + f"; {cal_path.name}, {tokens} new tokens, n-gram ban {ngram}")
    return lines


def _batch_of(rel: str) -> tuple[str, str, int] | None:
    """(set folder, mode, batch) of a compare.json path ``<set>/.../h200-<mode>-b<N>-<stamp>/compare/...``."""
    m = re.search(r"^([^/]+)/(?:.*/)?[a-z0-9]+-([a-z]+)-b(\d+)-[0-9TZ]+/", rel)
    return None if m is None else (m.group(1), m.group(2), int(m.group(3)))


def batch_gap(root: Path) -> list[str]:
    """Calibrated prefill error of batch > 1 runs, against the same set's b1 run of the mode and overall."""
    lines = []
    errs: list[float] = []
    by_set: dict[tuple[str, str, int], float] = {}
    for rel, stages in _compares(root).items():
        key = _batch_of(rel)
        ratio = stages.get("prefill", {}).get("calibrated_ratio")
        if key is None or ratio is None:
            continue
        if key[2] > 1:
            errs.append(ratio - 1.0)
        if key[0].startswith("cross-session"):
            by_set[key] = ratio - 1.0
    for (folder, mode, batch), e in sorted(by_set.items()):
        b1 = by_set.get((folder, mode, 1))
        if batch > 1 and b1 is not None:
            lines.append(f"{folder} {mode} b{batch}: prefill {e:+.1%}, b1 {b1:+.1%}, gap {e - b1:+.1%}")
    if not errs:
        raise UserError(f"{root}: no calibrated prefill of a batch > 1 run")
    lines.append(f"every batch > 1 run ({len(errs)}): calibrated prefill error mean {sum(errs) / len(errs):+.1%}, "
                 f"rms {_rms(errs):.1%}")
    return lines


def _pattern_of(op: str, callers: str, shapes: list[Any], kernel: str) -> tuple[str, int] | None:
    """(access-pattern key, bytes per call) of one census kernel group, None when it runs no measured
    pattern. The groups are recognised by operator, callers and input shapes as SAM dispatches them."""
    from llm_perf_opt.hardware.patterns import UPLOAD_PATCH, pattern_bytes, pattern_key

    dims = [list(x) for x in shapes if isinstance(x, list) and x]
    if not dims:
        return None
    a = dims[0]
    sq = math.isqrt(a[-1]) if len(a) == 3 else 0
    square = len(a) == 3 and a[1] == a[2] and sq * sq == a[2]
    if op == "aten::add" and len(dims) == 2 and len(a) == 5 and a[4] == 1 and dims[1][3] == 1:
        return pattern_key("outer_add", a[1]), pattern_bytes("outer_add", a[0], a[1])
    if op == "aten::add" and len(dims) == 2 and dims[0] == dims[1] and square:
        return pattern_key("bias_add", sq), pattern_bytes("bias_add", a[0], sq)
    if op == "aten::add" and len(dims) == 2 and dims[0] == dims[1] and len(a) == 4 and a[1] == a[2]:
        return pattern_key("transposed_add", a[1]), pattern_bytes("transposed_add", a[0], a[1], channels=a[3])
    if op == "aten::_softmax" and square:
        return pattern_key("softmax_fp32", sq), pattern_bytes("softmax_fp32", a[0], sq)
    if op == "aten::cudnn_convolution" and len(a) == 4 and a[1] == 3 and len(dims) > 1:
        side = a[2] // UPLOAD_PATCH
        return pattern_key("patch_conv", side), pattern_bytes("patch_conv", a[0], side, channels=dims[1][0])
    if op != "aten::copy_":
        return None
    if kernel.startswith("Memcpy HtoD") and len(a) == 4 and a[1] == 3:
        side = a[2] // UPLOAD_PATCH
        return pattern_key("h2d_pageable", side), pattern_bytes("h2d_pageable", a[0], side)
    if square and callers.endswith("aten::softmax"):
        return pattern_key("cast_up", sq), pattern_bytes("cast_up", a[0], sq)
    if square and callers == "aten::_to_copy <- aten::to":
        return pattern_key("cast_down", sq), pattern_bytes("cast_down", a[0], sq)
    if len(a) == 5 and callers.endswith("aten::reshape_as") and len(set(a[1:])) == 1:
        return pattern_key("permuted_copy", a[1]), pattern_bytes("permuted_copy", a[0], a[1])
    if len(a) == 4 and a[1] == a[2] and "native_layer_norm" in callers:
        return pattern_key("transposed_copy", a[1]), pattern_bytes("transposed_copy", a[0], a[1], channels=a[3])
    if len(a) == 5 and a[0] == 3 and callers == "aten::clone <- aten::reshape" and math.isqrt(a[3]) ** 2 == a[3]:
        return pattern_key("head_split", math.isqrt(a[3])), 2 * 2 * math.prod(a)
    return None


def _census_detail(path: Path, workload: str, stage: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(workloads of a kernel census, the kernel groups of ``workload``'s ``stage``); UserError naming what
    is missing."""
    try:
        data = json.loads(path.read_text())["workloads"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a kernel census ({exc})") from exc
    if workload not in data:
        raise UserError(f"{path}: no workload {workload!r} (has {', '.join(data)})")
    detail = data[workload].get("kernel_detail", {}).get(stage)
    if detail is None:
        raise UserError(f"{path}: no kernel detail for {workload} {stage} (kernel_census.py --detail {stage})")
    return data, detail


def kernels(path: Path, workload: str, stage: str, ops: Sequence[str], shapes: Sequence[str]) -> list[str]:
    """The kernel groups of ``stage`` in a census with --detail whose aten op is one of ``ops`` (all when
    empty) and whose input shapes contain one of ``shapes`` (all when empty), spaces ignored: device ms and
    launches per group and summed per op, with the total."""
    _, detail = _census_detail(path, workload, stage)
    wanted = [x.replace(" ", "") for x in shapes]
    rows = [r for r in detail if (not ops or r["op"] in ops)
            and (not wanted or any(w in str(r["input_shapes"]).replace(" ", "") for w in wanted))]
    if not rows:
        raise UserError(f"{path}: no kernel group of {workload} {stage} matches the ops and shapes given")
    lines = [f"{'device ms':>9} {'launches':>8}  op / input shapes / kernel"]
    per_op: dict[str, float] = {}
    for r in sorted(rows, key=lambda r: -float(r["device_us"])):
        per_op[r["op"]] = per_op.get(r["op"], 0.0) + float(r["device_us"])
        lines.append(f"{float(r['device_us']) / 1e3:9.3f} {r['launches']:8d}  {r['op']} {r['input_shapes']} "
                     f"{str(r['kernel'])[:50]}")
    lines.append("per op: " + ", ".join(f"{op} {us / 1e3:.3f}" for op, us in
                                        sorted(per_op.items(), key=lambda kv: -kv[1])))
    lines.append(f"total {sum(per_op.values()) / 1e3:.3f} ms over {len(rows)} groups")
    return lines


def tie_host(cal_path: Path, stage: str, to: str, like_path: Path, out: Path) -> list[str]:
    """Write ``cal_path`` to ``out`` with host s/kernel of ``stage`` = that of ``to`` times their ratio in
    ``like_path`` (both timeline calibrations); one line saying what moved."""
    if stage == to:
        raise UserError(f"tie-host: --stage and --to are both {stage}; tie a stage to another one")
    cal, like = load_calibration(cal_path), load_calibration(like_path)
    for c, path in ((cal, cal_path), (like, like_path)):
        if c.time_model != "timeline":
            raise UserError(f"{path}: not a timeline calibration (time_model {c.time_model!r})")
        for st in (stage, to):
            if c.stage_host_s_per_kernel.get(st, 0.0) <= 0:
                raise UserError(f"{path}: no host cost per kernel for stage {st!r}")
    ratio = like.stage_host_s_per_kernel[stage] / like.stage_host_s_per_kernel[to]
    before = cal.stage_host_s_per_kernel[stage]
    tied = cal.stage_host_s_per_kernel[to] * ratio
    save_calibration(evolve(cal, stage_host_s_per_kernel={**cal.stage_host_s_per_kernel, stage: tied}), out)
    return [f"{stage}: {before * 1e6:.1f} -> {tied * 1e6:.1f} us/kernel ({ratio:.3f} x {to}, "
            f"the ratio in {like_path.name}); wrote {out}"]


def rates(path: Path, ceilings_path: Path, workload: str, stage: str) -> list[str]:
    """Per kernel group of ``stage`` in a census with --detail that runs a measured access pattern: calls,
    device ms, bytes and achieved TB/s, next to the bench's TB/s for that pattern (nearest side)."""
    import ast

    from llm_perf_opt.hardware import load_ceilings
    from llm_perf_opt.hardware.patterns import pattern_ratio

    data, detail = _census_detail(path, workload, stage)
    ceilings = load_ceilings(ceilings_path)
    bw = ceilings.memory_bandwidth_bytes_per_s
    lines = [f"{'pattern':<20} {'calls':>5} {'device ms':>9} {'GB':>8} {'TB/s':>7} {'bench TB/s':>10}  operator / callers"]
    matched = 0.0
    for g in detail:
        try:
            shapes = ast.literal_eval(g["input_shapes"])
        except (ValueError, SyntaxError):
            continue  # shapes cut at the census's 160 characters
        found = _pattern_of(g["op"], g["callers"], shapes, g["kernel"])
        if found is None:
            continue
        key, per_call = found
        ms = g["device_us"] / 1e3
        nbytes = per_call * g["launches"]
        bench = pattern_ratio(ceilings.pattern_ratios(), key) * bw if ceilings.pattern_bandwidth_bytes_per_s else 0.0
        matched += ms
        lines.append(f"{key:<20} {g['launches']:>5} {ms:>9.2f} {nbytes / 1e9:>8.3f} {nbytes / ms / 1e9:>7.3f} "
                     f"{bench / 1e12:>10.3f}  {g['op']} <- {g['callers'] or '(stage)'}")
    total = sum(float(r.get("self_device_us", 0.0)) for r in data[workload]["stages"].get(stage, {}).values()) / 1e3
    lines.append(f"matched groups: {matched:.2f} of the stage's {total:.2f} device ms")
    return lines


def _gemm_dims(op: str, shapes: list[Any]) -> tuple[int, int, int, int] | None:
    """(batch, M, N, K) of a census GEMM group from its input shapes (addmm, mm, bmm, baddbmm)."""
    dims = [list(x) for x in shapes if isinstance(x, list)]
    try:
        if op == "aten::addmm":
            (m, k), (_, n) = dims[1], dims[2]
            return 1, m, n, k
        if op == "aten::mm":
            (m, k), (_, n) = dims[0], dims[1]
            return 1, m, n, k
        if op == "aten::bmm":
            (b, m, k), (_, _, n) = dims[0], dims[1]
            return b, m, n, k
        if op == "aten::baddbmm":
            (b, m, k), (_, _, n) = dims[1], dims[2]
            return b, m, n, k
    except (IndexError, ValueError):
        return None
    return None


def leaves(cal_path: Path, workload: str, stage: str, config: str) -> list[str]:
    """Device ms of the timeline model per analytic layer class in one stage of a census workload (synthetic
    pages as the census ran; decode: one forward), under the calibration's device model, largest first."""
    from collections import defaultdict

    from llm_perf_opt.analytic.roofline import RooflinePeaks
    from llm_perf_opt.analytic.timeline_model import _own_device_s
    from llm_perf_opt.hardware import effective_peaks, load_catalog
    from llm_perf_opt.vocab import parse_dtype

    cal = load_calibration(cal_path)
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get(cal.gpu_key)), parse_dtype(cal.dtype))
    model = _census_pages(workload, config)
    roots = {st.value: root for st, root in model.stages.items()}
    if stage not in roots:
        raise UserError(f"stage {stage!r} not in the model (has {', '.join(roots)})")
    ms: dict[str, float] = defaultdict(float)
    calls: dict[str, float] = defaultdict(float)

    def walk(node: Any, mult: float) -> None:
        m = mult * node.count
        if node.ops:
            ms[node.module_type] += _own_device_s(node, peaks, cal, cal.kernel_floor_s, cal.kernel_gap_s) * m * 1e3
            calls[node.module_type] += m
        for child in node.children:
            walk(child, m)

    walk(roots[stage], 1.0)
    lines = [f"{'layer class':<20} {'calls':>6} {'device ms':>10}"]
    lines += [f"{k:<20} {calls[k]:>6g} {v:>10.3f}" for k, v in sorted(ms.items(), key=lambda kv: -kv[1])]
    lines.append(f"total {sum(ms.values()):.3f} ms ({workload} {stage}; device factors not applied)")
    return lines


def gemms(path: Path, ceilings_path: Path, workload: str, stage: str) -> list[str]:
    """Per GEMM kernel group of ``stage`` in a census with --detail: shape, calls, device us per call and
    achieved TFLOP/s, next to the roofline at the bench's measured matmul and copy ceilings plus its
    kernel floor (what the section-8 device model charged a GEMM of that shape) and to the bench's time
    for exactly that shape when the ceilings have it."""
    import ast

    from llm_perf_opt.hardware import load_ceilings
    from llm_perf_opt.hardware.gemms import gemm_key

    data, detail = _census_detail(path, workload, stage)
    c = load_ceilings(ceilings_path)
    floor = c.kernel_floor_s or 0.0
    mm_rate = c.flops_per_s("bf16")
    if not mm_rate:
        raise UserError(f"{ceilings_path}: no bf16 matmul ceiling")
    bench_s = c.gemm_times_s()
    lines = [f"{'operator':<14} {'batch x M x N x K':<22} {'calls':>5} {'us/call':>8} {'TFLOP/s':>8} "
             f"{'model us':>8} {'model/meas':>10} {'bench us':>8} {'bench/meas':>10}  kernel"]
    meas_ms = model_ms = bench_ms = bench_meas_ms = 0.0
    for g in sorted(detail, key=lambda g: -float(g["device_us"])):
        try:
            shapes = ast.literal_eval(g["input_shapes"])
        except (ValueError, SyntaxError):
            continue  # shapes cut at the census's 160 characters
        found = _gemm_dims(g["op"], shapes)
        if found is None or not g["kernel"] or g["kernel"].startswith("Memset"):  # the op's workspace memsets
            continue
        b, m, n, k = found
        flops = 2.0 * b * m * n * k
        nbytes = 2.0 * b * (m * k + k * n + m * n)  # bf16 operands and result
        per_call = float(g["device_us"]) / g["launches"]
        model = (max(flops / mm_rate, nbytes / c.memory_bandwidth_bytes_per_s) + floor) * 1e6
        meas_ms += float(g["device_us"]) / 1e3
        model_ms += model * g["launches"] / 1e3
        # the census's input shapes do not tell q @ k^T from p @ v (the transposed view is a stride): a bmm
        # takes the timed shape of either kind
        kinds = {"aten::addmm": ("linear_bias",), "aten::mm": ("linear",)}.get(g["op"], ("bmm_nt", "bmm_nn"))
        timed = [bench_s[key] for key in (gemm_key(kd, b, m, n, k) for kd in kinds) if key in bench_s]
        bench = min(timed) * 1e6 if timed else None
        if bench is not None:
            bench_ms += bench * g["launches"] / 1e3
            bench_meas_ms += float(g["device_us"]) / 1e3
        lines.append(f"{g['op'].removeprefix('aten::'):<14} {f'{b}x{m}x{n}x{k}':<22} {g['launches']:>5} "
                     f"{per_call:>8.2f} {flops / per_call / 1e6:>8.1f} {model:>8.2f} {model / per_call:>10.2f} "
                     f"{'-' if bench is None else f'{bench:.2f}':>8} "
                     f"{'-' if bench is None else f'{bench / per_call:.2f}':>10}  {g['kernel'][:48]}")
    if not meas_ms:
        raise UserError(f"{path}: no GEMM kernel group in {workload} {stage}")
    total = sum(float(r.get("self_device_us", 0.0)) for r in data[workload]["stages"].get(stage, {}).values()) / 1e3
    lines.append(f"GEMMs: {meas_ms:.2f} of the stage's {total:.2f} device ms; the roofline at the measured ceilings "
                 f"+ {floor * 1e6:.2f} us floor gives {model_ms:.2f} ms ({model_ms / meas_ms - 1:+.0%}); "
                 f"bf16 matmul ceiling {mm_rate / 1e12:.1f} TFLOP/s")
    if bench_meas_ms:
        lines.append(f"bench GEMM times: {bench_ms:.2f} ms for the {bench_meas_ms:.2f} ms of GEMMs with a timed "
                     f"shape ({bench_ms / bench_meas_ms - 1:+.0%})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = CommandParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("census", help="host time per launch call and per kernel from a kernel census")
    p.add_argument("file", type=Path, help="census JSON (scripts/gpu/kernel_census.py)")
    p.add_argument("--workload", action="append", default=None, metavar="MODE:BATCH", help="only these workloads")
    p = sub.add_parser("probe", help="decode time against the host probe over runs")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="profiling run folders with probed passes")
    p.add_argument("--probe", choices=("add", "module"), default="add",
                   help="add: us per tiny in-place add (host_probe_us, default); module: us per aten call of a "
                        "tiny decoder forward on the model's own code path (host_module_probe_us)")
    p.add_argument("--when", choices=WHEN_CHOICES, default="run",
                   help="run (default): the probe compare takes, the mean of the probes before and after each "
                        "pass where both were recorded, else the one before; before, after or bracket (their "
                        "mean): that probe alone")
    p.add_argument("--per-pass", action="store_true",
                   help="also list each pass: its probe, decode ms per forward and that in probe calls")
    p = sub.add_parser("passes", help="a stage's pass-to-pass spread and what it follows within runs")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="profiling run folders (passes.jsonl)")
    p.add_argument("--stage", default="vision.sam", help="stage range of passes.jsonl (default vision.sam)")
    p.add_argument("--when", choices=WHEN_CHOICES, default="run",
                   help="the module probe as compare takes it (run, default), before each pass, after it, or "
                        "their mean (bracket)")
    p = sub.add_parser("exponents", help="a timeline calibration on runs at its probe exponent, 1 and 0")
    p.add_argument("--calibration", type=Path, required=True, metavar="FILE", help="timeline calibration JSON")
    p.add_argument("--config", default="default", metavar="NAME", help="model config to analyse (default default)")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="profiling run folders")
    p = sub.add_parser("launches", help="census launches per stage next to the analytic model's")
    p.add_argument("file", type=Path, help="census stage summary (tests/data/census/census-h200-stages.json)")
    p.add_argument("--config", default="default", metavar="NAME", help="model config to analyse (default default)")
    p = sub.add_parser("prior", help="stages within 25%% per calibration file (its evaluated runs)")
    p.add_argument("files", type=Path, nargs="+", metavar="CAL", help="calibration JSON with fit.after errors")
    p = sub.add_parser("memory", help="each run's peak device memory next to the analytic footprint")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="run folders (llm-perf-opt profile)")
    p.add_argument("--config", default="default", help="model config of the runs (default: the official one)")
    p = sub.add_parser("rows", help="decode cost of a batch row per step from b1/b4 pairs, measured and predicted")
    p.add_argument("files", type=Path, nargs="+", metavar="CAL", help="calibrate --prior JSON with fit.after errors")
    p.add_argument("--new-tokens", type=int, default=64, help="decode steps of the runs (default 64)")
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
    p = sub.add_parser("moved", help="stage ratios that moved between two trees of compare.json files")
    p.add_argument("old", type=Path, help="compare root before, e.g. a worktree's reports/compare")
    p.add_argument("new", type=Path, help="compare root after, e.g. reports/compare")
    p.add_argument("--min", type=float, default=0.005, help="smallest move to list (ratio units; default 0.005)")
    p = sub.add_parser("batch-gap", help="calibrated prefill error of batch > 1 runs against their b1 runs")
    p.add_argument("root", type=Path, help="compare root, e.g. reports/compare")
    p = sub.add_parser("gaps", help="device time between kernels of the stage ranges the host stayed ahead of")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="profiling run folders (timeline.json)")
    p.add_argument("--ceilings", type=Path, default=None, metavar="FILE", help="hw bench ceilings with kernel_gap_s")
    p.add_argument("--compare", type=Path, default=None, metavar="ROOT",
                   help="also the timed passes' (measured - kernel time) / (kernels - 1) of --stage in the Base b4 "
                        "compare.json files under ROOT (e.g. reports/compare)")
    p.add_argument("--stage", default="vision.clip", help="stage for --compare (default vision.clip)")
    p = sub.add_parser("graph", help="graph-replayed decode steps next to the model's step with no host cost")
    p.add_argument("file", type=Path, help="records of scripts/gpu/graph_decode.py --out")
    p.add_argument("--calibration", type=Path, required=True, metavar="FILE",
                   help="timeline calibration (its device model and gaps; with an add_ host probe, also the "
                        "model at each record's probe)")
    p.add_argument("--config", default="default", metavar="NAME", help="model config to analyse (default default)")
    p.add_argument("--kernels", type=non_negative_int, default=0, metavar="N",
                   help="also each record's N kernels of most time per step, from its trace (the replays', else "
                        "the eager step's), as graph_decode.py lists them (default 0: none)")
    p = sub.add_parser("steps", help="decode step time against the KV length, measured and modelled, per run")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="profiling run folders (passes.jsonl)")
    p.add_argument("--calibration", type=Path, required=True, metavar="FILE",
                   help="timeline calibration (e.g. calibrate --prior) whose model is set next to the runs")
    p.add_argument("--config", default="default", metavar="NAME", help="model config to analyse (default default)")
    p.add_argument("--window", type=int, default=64, metavar="N",
                   help="forwards averaged at the start and at the end of the decode (default 64)")
    p = sub.add_parser("backlog", help="the model's device backlog before a stage next to that stage's time in "
                                       "each measured pass (hidden host work or not)")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="profiling run folders (passes.jsonl)")
    p.add_argument("--calibration", type=Path, required=True, metavar="FILE",
                   help="timeline calibration (e.g. calibrate --prior) whose model is set next to the runs")
    p.add_argument("--config", default="default", metavar="NAME", help="model config to analyse (default default)")
    p.add_argument("--stage", default="projector", metavar="STAGE",
                   help="the stage whose passes are listed, with the one before it (default projector)")
    p = sub.add_parser("levels", help="each pass's decode steps by windows of forwards: host-speed levels in a pass")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="profiling run folders (passes.jsonl)")
    p.add_argument("--window", type=int, default=8, metavar="N",
                   help="consecutive decode forwards per window (default 8)")
    p = sub.add_parser("segments", help="the timeline model's decode by groups of forwards against every forward")
    p.add_argument("--calibration", type=Path, required=True, metavar="FILE", help="timeline calibration JSON")
    p.add_argument("--modes", default="small,base,gundam", help="comma-separated modes (default small,base,gundam)")
    p.add_argument("--batches", default="256,320,384,448,512,640,768",
                   help="comma-separated batch sizes (default 256,320,384,448,512,640,768)")
    p.add_argument("--tokens", type=int, default=1024, help="new tokens per page (default 1024)")
    p.add_argument("--ngram", type=int, default=0, help="n-gram ban size (default 0: off)")
    p.add_argument("--groups", default="4,8,16", help="comma-separated numbers of groups (default 4,8,16)")
    p.add_argument("--config", default="default", metavar="NAME", help="model config to analyse (default default)")
    p = sub.add_parser("tie-host", help="a timeline calibration with one stage's host cost tied to another's")
    p.add_argument("calibration", type=Path, metavar="CAL", help="timeline calibration JSON to change")
    p.add_argument("--stage", required=True, choices=STAGES, help="the stage whose host cost per kernel is set")
    p.add_argument("--to", required=True, choices=STAGES, help="the stage it is tied to")
    p.add_argument("--like", type=Path, required=True, metavar="CAL2",
                   help="timeline calibration whose ratio of the two stages' host costs is used")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the new calibration")
    p = sub.add_parser("rates", help="achieved rate of the census kernel groups that run a measured access pattern")
    p.add_argument("file", type=Path, help="census JSON written with --detail (scripts/gpu/kernel_census.py)")
    p.add_argument("--ceilings", type=Path, required=True, metavar="FILE", help="hw bench ceilings with patterns")
    p.add_argument("--workload", default="base:1", metavar="MODE:BATCH", help="census workload (default base:1)")
    p.add_argument("--stage", default="vision.sam", help="stage with kernel detail (default vision.sam)")
    p = sub.add_parser("kernels", help="census kernel groups of a stage by aten op and input shape, with sums")
    p.add_argument("file", type=Path, help="census JSON written with --detail (scripts/gpu/kernel_census.py)")
    p.add_argument("--workload", default="base:1", metavar="MODE:BATCH", help="census workload (default base:1)")
    p.add_argument("--stage", default="prefill", help="stage with kernel detail (default prefill)")
    p.add_argument("--op", action="append", default=[], metavar="ATEN_OP",
                   help="keep groups of this aten op (repeatable; default all), e.g. aten::sort")
    p.add_argument("--shape", action="append", default=[], metavar="TEXT",
                   help="keep groups whose input shapes contain TEXT, spaces ignored (repeatable; default all), "
                        "e.g. '[6768,'")
    p = sub.add_parser("leaves", help="the timeline model's device ms per analytic layer class of a stage")
    p.add_argument("--calibration", type=Path, required=True, metavar="FILE",
                   help="calibration whose device model to use (e.g. a prior with measured GEMM times)")
    p.add_argument("--workload", default="base:1", metavar="MODE:BATCH", help="workload as the census ran it "
                   "(default base:1)")
    p.add_argument("--stage", default="prefill", help="model stage (default prefill; decode: one forward)")
    p.add_argument("--config", default="default", metavar="NAME", help="model config to analyse (default default)")
    p = sub.add_parser("gemms", help="achieved TFLOP/s of the census GEMM groups next to the roofline's")
    p.add_argument("file", type=Path, help="census JSON written with --detail (scripts/gpu/kernel_census.py)")
    p.add_argument("--ceilings", type=Path, required=True, metavar="FILE", help="hw bench ceilings")
    p.add_argument("--workload", default="base:1", metavar="MODE:BATCH", help="census workload (default base:1)")
    p.add_argument("--stage", default="vision.clip", help="stage with kernel detail (default vision.clip)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "census":
            lines = census(args.file, args.workload)
        elif args.cmd == "probe":
            lines = probe(args.runs, args.probe, args.when, args.per_pass)
        elif args.cmd == "passes":
            lines = passes(args.runs, args.stage, args.when)
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
        elif args.cmd == "moved":
            lines = moved(args.old, args.new, args.min)
        elif args.cmd == "batch-gap":
            lines = batch_gap(args.root)
        elif args.cmd == "gaps":
            lines = gaps(args.runs, args.ceilings, args.compare, args.stage)
        elif args.cmd == "graph":
            lines = graph(args.file, args.calibration, args.config, kernels=args.kernels)
        elif args.cmd == "steps":
            lines = steps(args.runs, args.calibration, args.config, args.window)
        elif args.cmd == "levels":
            lines = levels(args.runs, args.window)
        elif args.cmd == "backlog":
            lines = backlog(args.runs, args.calibration, args.config, args.stage)
        elif args.cmd == "segments":
            try:
                batches, groups = ([int(x) for x in v.split(",") if x] for v in (args.batches, args.groups))
            except ValueError:
                raise UserError(f"segments: --batches {args.batches!r} / --groups {args.groups!r}: "
                                "comma-separated whole numbers") from None
            lines = segments(args.calibration, [x for x in args.modes.split(",") if x], batches, args.tokens,
                             args.ngram, groups, args.config)
        elif args.cmd == "tie-host":
            lines = tie_host(args.calibration, args.stage, args.to, args.like, args.out)
        elif args.cmd == "rates":
            lines = rates(args.file, args.ceilings, args.workload, args.stage)
        elif args.cmd == "kernels":
            lines = kernels(args.file, args.workload, args.stage, args.op, args.shape)
        elif args.cmd == "leaves":
            lines = leaves(args.calibration, args.workload, args.stage, args.config)
        elif args.cmd == "memory":
            lines = memory(args.runs, args.config)
        elif args.cmd == "rows":
            lines = rows(args.files, args.new_tokens)
        elif args.cmd == "gemms":
            lines = gemms(args.file, args.ceilings, args.workload, args.stage)
        else:
            lines = prior(args.files)
    except UserError as exc:
        print(f"host_figures.py: {exc}", file=sys.stderr)
        return 2
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:  # the reader stopped early (| head): what it took is what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
