"""Fit a Calibration from measured runs and report the error before, after and on held-out runs.

Observations per run (compare/runs.py conventions):

- each measured stage (vision.sam, vision.clip, projector, language-model
  prefill, decode): mean wall time per pass from the CUDA-event timers, which
  includes per-kernel launch gaps (``include_launch=True``);
- when the run folder has an operator table, each (stage, category) self
  device time per pass (``include_launch=False``: kernels only).

Cells are the analytic report's leaf x category work (compare/analytic.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from attrs import evolve

from llm_perf_opt.analytic.base import BaseLayer
from llm_perf_opt.analytic.calibration import (
    PURE_ROOFLINE,
    Calibration,
    EfficiencyModel,
    FitSummary,
    SoftwareKey,
    StageError,
)
from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.analytic.timeline_model import (
    CUDA_LAUNCH_HOST_WEIGHT,
    PassBlocks,
    pass_blocks,
    run_timeline,
)
from llm_perf_opt.compare.analytic import category_folding, report_cells
from llm_perf_opt.compare.fit import Observation, WorkCell, fit_efficiencies, predict
from llm_perf_opt.compare.runs import MeasuredRun
from llm_perf_opt.data.analytic import AnalyticModelReport
from llm_perf_opt.errors import UserError
from llm_perf_opt.vocab import Stage

#: analytic predictions of one run: (report, image count) per workload group
Predictions = Sequence[tuple[AnalyticModelReport, int]]
#: how to get them for a run (the CLI analyses the run's workloads)
PredictFn = Callable[[MeasuredRun], Predictions]


def run_cells(run: MeasuredRun, predictions: Predictions) -> list[WorkCell]:
    """Cells of a run: each workload group's cells weighted by its share of the images."""
    total = sum(w for _, w in predictions)
    out: list[WorkCell] = []
    for rep, w in predictions:
        f = w / total
        for c in report_cells(rep, run.run_id):
            out.append(WorkCell(run_id=c.run_id, stage=c.stage, category=c.category, compute_s=c.compute_s * f,
                                memory_s=c.memory_s * f, kernels=c.kernels * f, flops=c.flops * f,
                                io_bytes=c.io_bytes * f))
    return out


def measured_stage_ms(run: MeasuredRun) -> dict[str, float]:
    """Stage -> measured ms per pass (prefill = language-model prefill); only measured stages."""
    out: dict[str, float] = {}
    for stage in Stage:
        v = run.lm_prefill_ms() if stage is Stage.PREFILL else run.stage_mean_ms(stage)
        if v is not None and v > 0:
            out[stage.value] = v
    return out


def run_observations(run: MeasuredRun, cells: Sequence[WorkCell] = (), *, use_operator_table: bool = True
                     ) -> list[Observation]:
    """Stage wall times and (if present) per-stage, per-category device times of one run.

    A measured category also covers the analytic categories folded into it
    (compare.analytic.category_folding, decided from ``cells``).
    """
    obs = [Observation(run_id=run.run_id, stage=s, measured_s=ms / 1e3) for s, ms in measured_stage_ms(run).items()]
    if use_operator_table and run.operator_table is not None and run.operator_table.basis == "cuda":
        table = run.operator_table
        fold = category_folding({c.category for c in cells}, table.category_per_pass())
        other_decode = table.decode_new_tokens not in (None, run.report.meta.max_new_tokens)
        for stage, cats in table.per_pass().items():
            if stage not in {s.value for s in Stage}:
                continue
            if stage == Stage.DECODE.value and other_decode:
                continue  # the profiler pass decoded another number of tokens than the timed passes
            for cat, ms in cats.items():
                if ms > 0:
                    covered = {cat} | {a for a, m in fold.items() if m == cat}
                    obs.append(Observation(run_id=run.run_id, stage=stage, categories=covered, measured_s=ms / 1e3,
                                           include_launch=False, weight=0.5))
    return obs


def stage_errors(run: MeasuredRun, cells: Sequence[WorkCell], eff: EfficiencyModel, *, held_out: bool
                 ) -> list[StageError]:
    """Per-stage predicted vs measured under ``eff`` for one run."""
    out = []
    for stage, ms in measured_stage_ms(run).items():
        pred = sum(c.time_s(eff) for c in cells if c.stage == stage) * 1e3
        out.append(StageError(run_id=run.run_id, stage=stage, measured_ms=ms, predicted_ms=pred, held_out=held_out))
    return out


def _run_blocks(predictions: Predictions, device: Calibration) -> list[tuple[PassBlocks, float]]:
    """Timeline blocks of each workload group of a run under the device model, with the group's weight."""
    total = sum(w for _, w in predictions)
    out = []
    for rep, w in predictions:
        model = AnalyticModel(rep.model.config, rep.workload)
        out.append((pass_blocks(model.stages, model.shape.decode_forwards, rep.peaks, device,
                                kernel_floor_s=device.kernel_floor_s, device_scale=device.stage_device_scale,
                                call_gap_s=device.kernel_gap_s, decode_segments=model.decode_segment_steps()),
                    w / total))
    return out


def _timeline_ms(blocks: list[tuple[PassBlocks, float]], host: dict[str, float], sync_s: float,
                 gap_s: float = 0.0) -> dict[str, float]:
    """Stage -> ms per pass, the groups' timelines weighted by their share of the images (``gap_s``: device
    seconds between queued kernels)."""
    out: dict[str, float] = {}
    for b, f in blocks:
        for stage, sec in run_timeline(b, host, sync_s, gap_s).stage_s.items():
            out[stage] = out.get(stage, 0.0) + sec * 1e3 * f
    return out


def _golden(f: Callable[[float], float], lo: float, hi: float, iters: int = 60) -> float:
    """Minimiser of a unimodal f on [lo, hi] (golden-section search)."""
    g = (5 ** 0.5 - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2


#: search range of the timeline model's host cost per kernel (s)
HOST_S_PER_KERNEL_MAX = 1e-3
#: default host cost of one host-device sync in the SAM rel-pos lookup (s): the index copy call plus the
#: stream sync call when the device is idle, 0.015-0.025 ms + 0.007-0.012 ms on the H200 trace
#: (reports/profile/h200-timeline/find-syncs.txt, calls that did not wait)
DEFAULT_SYNC_S = 30e-6


def fit_host_terms(runs: Sequence[tuple[dict[str, float], list[tuple[PassBlocks, float]], float]], *,
                   sync_s: float = 0.0, sweeps: int = 6, gap_s: float = 0.0) -> tuple[dict[str, float], list[str]]:
    """Host seconds per kernel per stage and seconds per sync that best fit measured stage times.

    runs: (measured stage -> ms, timeline blocks, host-speed factor) per fitted run;
    the factor multiplies every host term in that run (its probe over the
    reference probe; 1.0 without probes). sync_s: host seconds per sync, held
    fixed (every SAM pass has the same syncs per kernel, so stage times cannot
    tell a sync from a kernel; the cost is measured on a trace instead). gap_s:
    device seconds between queued kernels (a device term, not scaled by host speed).
    Minimises the sum of squared relative stage errors by coordinate descent
    (golden-section search per stage; a stage's time depends mostly on its own
    host cost, so a few sweeps converge). Returns (host s/kernel per stage at
    the reference speed, stages the data did not constrain).
    """
    stages = [st.value for st in Stage]
    measured = {s for m, _, _ in runs for s in m}
    # start: every stage host bound (measured ms / kernels), a mean for stages without a measurement
    start: dict[str, list[float]] = {}
    for m, bl, speed in runs:
        for stage, ms in m.items():
            k = sum(f * sum(x.kernels for x in b.stages.get(stage, ())) * (b.decode_forwards if stage == "decode"
                                                                             else 1) for b, f in bl)
            if k > 0:
                start.setdefault(stage, []).append(ms / 1e3 / k / speed)
    host = {s: sum(v) / len(v) for s, v in start.items()}
    default = sum(host.values()) / len(host) if host else 0.0
    for s in stages:
        host.setdefault(s, default)

    def objective(h: dict[str, float], sy: float) -> float:
        err = 0.0
        for m, bl, speed in runs:
            pred = _timeline_ms(bl, {k: v * speed for k, v in h.items()}, sy * speed, gap_s)
            for stage, ms in m.items():
                err += ((pred.get(stage, 0.0) - ms) / ms) ** 2
        return err

    free = [s for s in stages if s in measured and s in start]
    def along(stage: str) -> Callable[[float], float]:
        return lambda v: objective({**host, stage: v}, sync_s)

    for _ in range(sweeps):
        for s in free:
            host[s] = _golden(along(s), 0.0, HOST_S_PER_KERNEL_MAX)
    unidentified = [f"host_s_per_kernel[{s}]" for s in stages if s not in free]
    for s in free:
        moved = host_sensitivity(runs, host, s, sync_s=sync_s, gap_s=gap_s)
        if moved < WEAK_HOST_SENSITIVITY:
            unidentified.append(f"host_s_per_kernel[{s}]{WEAKLY}{HOST_SENSITIVITY_STEP:g}x or 1/"
                                f"{HOST_SENSITIVITY_STEP:g}x moves the fitted runs' {s} by at most {moved:.0%}, "
                                f"against up to 50% where the host sets the pace (their device hides it; fit a "
                                f"run whose {s} is host-bound to pin it)")
    return {s: host[s] for s in stages}, unidentified


#: what follows a parameter's name in ``fit.unidentified`` when the data constrain it only weakly (it was
#: fitted; the text after it says why)
WEAKLY = " weakly: "
#: factor by which :func:`host_sensitivity` moves one stage's host cost
HOST_SENSITIVITY_STEP = 1.5
#: a fitted host cost whose stage moves by less than this (relative) on every fitted run when the cost is
#: scaled by HOST_SENSITIVITY_STEP either way is reported as weakly identified: a host-bound stage moves by
#: 33-50%, a stage whose device hides the host by ~0. On the H200 (docs/results-h200.md section 15) the
#: Base b1 + Gundam b1 fits moved SAM by 17-23%, and their SAM host cost ranged 13.7-35.9 us/kernel by session
WEAK_HOST_SENSITIVITY = 0.25


def host_sensitivity(runs: Sequence[tuple[dict[str, float], list[tuple[PassBlocks, float]], float]],
                     host: dict[str, float], stage: str, *, sync_s: float, gap_s: float = 0.0) -> float:
    """Largest relative change of ``stage``'s modelled time over ``runs`` (as :func:`fit_host_terms` takes
    them) when its host cost is multiplied or divided by ``HOST_SENSITIVITY_STEP``, the others held."""
    largest = 0.0
    for m, bl, speed in runs:
        if stage not in m:
            continue
        def at(h: dict[str, float], bl: list[tuple[PassBlocks, float]] = bl, speed: float = speed) -> float:
            return _timeline_ms(bl, {k: v * speed for k, v in h.items()}, sync_s * speed, gap_s).get(stage, 0.0)
        base = at(host)
        if base <= 0:
            continue
        for f in (HOST_SENSITIVITY_STEP, 1.0 / HOST_SENSITIVITY_STEP):
            largest = max(largest, abs(at({**host, stage: host[stage] * f}) - base) / base)
    return largest


#: host costs scale in proportion to the host probe: both are host seconds per eagerly issued op.
#: Measured on the 15 probed H200 Base/Gundam/Small/Large/Tiny b1 runs (scripts/analytical/host_figures.py
#: probe, docs/results-h200.md section 9): run means of decode time against the probe give a log-log slope
#: of 1.20 (correlation 0.93); within a run the per-pass probe is mostly noise (correlation 0.30 over 132
#: passes), which biases a within-run least-squares slope towards 0 (0.28; reduced major axis: 0.95)
HOST_PROBE_EXPONENT = 1.0
#: default exponent per host probe (llm_perf_opt.analytic.calibration.HOST_PROBES). The module probe's is 1
#: as well: fitted on one H200 session and evaluated on another (scripts/analytical/probe_choice.sh, results-h200
#: section 12), exponent 1 and 0.64 (its between-run slope) both miss more stages than the add_ probe does
HOST_PROBE_EXPONENTS: dict[str, float] = {"add": HOST_PROBE_EXPONENT, "module": 1.0}


def timeline_stage_errors(run: MeasuredRun, blocks: list[tuple[PassBlocks, float]], cal: Calibration, *,
                          held_out: bool) -> list[StageError]:
    """Per-stage predicted (timeline model, at the run's host speed when it has a probe) vs measured."""
    cal = cal.at_host_speed(run.probe_us(cal.host_probe))
    host = {st.value: cal.host_s_per_kernel(st.value) for st in Stage}
    pred = _timeline_ms(blocks, host, cal.host_sync_s, cal.kernel_gap_s)
    return [StageError(run_id=run.run_id, stage=stage, measured_ms=ms, predicted_ms=pred.get(stage, 0.0),
                       held_out=held_out) for stage, ms in measured_stage_ms(run).items()]


def calibrate_timeline(
    fit_runs: Sequence[tuple[MeasuredRun, Predictions]],
    held_out: Sequence[tuple[MeasuredRun, Predictions]] = (),
    *,
    max_efficiency: float = 1.0,
    shared: bool = False,
    per_stage_device: bool = True,
    sync_s: float = DEFAULT_SYNC_S,
    device_prior: Calibration | None = None,
    host_probe: str = "add",
    host_probe_exponent: float | None = None,
) -> Calibration:
    """Fit the timeline model: the device side (efficiencies, kernel floor) on the operator-table device
    times, then the host side (s/kernel per stage, s/sync) on the stage times through the simulated pass.

    per_stage_device: each stage's device time is also scaled by measured / modelled device time of
    the fitted runs (the same kernel category runs at different efficiencies in SAM and in decode).
    When every fitted run has the host-speed probe ``host_probe`` ('add': passes.jsonl host_probe_us,
    'module': host_module_probe_us; each pass at the mean of its probes before and after it where both
    were recorded, runs.run_pass_probe), host costs are fitted relative to it, scaled by
    (probe / reference) ** exponent (``host_probe_exponent``, default HOST_PROBE_EXPONENTS[host_probe]), and
    the calibration keeps the fitted runs' mean probe as its reference.
    sync_s: host seconds per host-device sync (held fixed, see fit_host_terms).
    device_prior: a device model measured on the hardware (:func:`prior_calibration` from hw bench
    ceilings: efficiencies, access patterns, kernel floor) used instead of fitting category efficiencies;
    only the per-stage device factors are fitted, as the fitted runs' operator-table device time / the
    prior's block device time.
    UserError when a fitted run has no CUDA operator table.
    """
    gpu_key, dtype = _check_runs(fit_runs, held_out)
    if device_prior is not None:
        return _timeline_on_prior(fit_runs, held_out, device_prior, sync_s=sync_s, host_probe=host_probe,
                                  host_probe_exponent=host_probe_exponent)
    cells: list[WorkCell] = []
    dev_obs: list[Observation] = []
    for run, preds in fit_runs:
        rc = run_cells(run, preds)
        cells.extend(rc)
        run_dev = [o for o in run_observations(run, rc) if not o.include_launch]
        if not run_dev:
            raise UserError(f"calibrate --time-model timeline: run {run.run_id} has no CUDA operator table "
                            "(per-stage device times); profile it on a GPU with the operator table enabled")
        dev_obs.extend(run_dev)
    result = fit_efficiencies(cells, dev_obs, max_efficiency=max_efficiency, fit_launch=True, shared=shared)
    # per-stage device factor: measured device time / modelled device time, summed over the fitted runs
    dev_model = evolve(result.model, launch_overhead_s=0.0, stage_launch=None)
    scale: dict[str, float] = {}
    if per_stage_device:
        meas: dict[str, float] = {}
        mod: dict[str, float] = {}
        for o in dev_obs:
            if o.stage is None:
                continue
            meas[o.stage] = meas.get(o.stage, 0.0) + o.measured_s
            mod[o.stage] = mod.get(o.stage, 0.0) + predict(cells, o, dev_model)
        scale = {st: meas[st] / mod[st] for st in meas if mod.get(st, 0.0) > 0}
    sw = fit_runs[0][0].software()
    device = Calibration(
        gpu_key=gpu_key, dtype=dtype,
        software=SoftwareKey(torch=sw["torch"], transformers=sw["transformers"], cuda=sw.get("cuda", "")),
        compute_efficiencies=dict(result.compute_efficiencies),
        bandwidth_efficiencies=dict(result.bandwidth_efficiencies),
        stage_device_scale=scale, launch_overhead_s=0.0, kernel_floor_s=result.kernel_floor_s,
        created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    unidentified = tuple(u for u in result.unidentified if not u.startswith("launch_overhead_s"))
    return _fit_host_side(fit_runs, held_out, device, sync_s=sync_s, observations=len(dev_obs),
                          iterations=result.iterations, unidentified=unidentified, host_probe=host_probe,
                          host_probe_exponent=host_probe_exponent)


def _fit_host_side(fit_runs: Sequence[tuple[MeasuredRun, Predictions]],
                   held_out: Sequence[tuple[MeasuredRun, Predictions]], device: Calibration, *, sync_s: float,
                   observations: int, iterations: int, unidentified: tuple[str, ...], host_probe: str = "add",
                   host_probe_exponent: float | None = None) -> Calibration:
    """The host side of a timeline fit on top of the ``device`` model: host s/kernel per stage (relative to
    the fitted runs' host-speed probe, in proportion to it), then the errors of every run."""
    per_run = [(run, _run_blocks(preds, device), False) for run, preds in fit_runs]
    per_run += [(run, _run_blocks(preds, device), True) for run, preds in held_out]
    if host_probe not in HOST_PROBE_EXPONENTS:
        raise UserError(f"calibrate: host probe must be one of {', '.join(HOST_PROBE_EXPONENTS)}, got {host_probe!r}")
    exponent = HOST_PROBE_EXPONENTS[host_probe] if host_probe_exponent is None else host_probe_exponent
    if not (exponent >= 0 and math.isfinite(exponent)):
        raise UserError(f"calibrate: host probe exponent must be a finite number >= 0, got {exponent}")
    probes = [run.probe_us(host_probe) for run, _ in fit_runs]
    missing = [run.run_id for (run, _), p in zip(fit_runs, probes, strict=True) if not p]
    if missing and (host_probe != "add" or host_probe_exponent is not None):
        # asked for by name: scaling by a probe the runs lack would silently do nothing
        raise UserError(f"calibrate: fitted run(s) {', '.join(missing)} recorded no {host_probe} host probe "
                        f"({'host_probe_us' if host_probe == 'add' else 'host_module_probe_us'} in passes.jsonl)")
    ref = sum(p for p in probes if p) / len(probes) if all(probes) else 0.0
    host, host_unidentified = fit_host_terms(
        [(measured_stage_ms(run), bl, ((run.probe_us(host_probe) or ref) / ref) ** exponent if ref else 1.0)
         for run, bl, is_held in per_run if not is_held], sync_s=sync_s, gap_s=device.kernel_gap_s)
    draft = evolve(device, time_model="timeline", stage_host_s_per_kernel=host, host_sync_s=sync_s,
                   host_probe_us=ref, host_probe_exponent=exponent, host_probe=host_probe)
    before: list[StageError] = []
    after: list[StageError] = []
    all_runs = {r.run_id: preds for r, preds in [*fit_runs, *held_out]}
    for run, bl, is_held in per_run:
        before.extend(stage_errors(run, run_cells(run, all_runs[run.run_id]), PURE_ROOFLINE, held_out=is_held))
        after.extend(timeline_stage_errors(run, bl, draft, held_out=is_held))
    return evolve(draft, fit=FitSummary(
        fitted_runs=[r.run_id for r, _ in fit_runs], held_out_runs=[r.run_id for r, _ in held_out],
        observations=observations + sum(len(measured_stage_ms(r)) for r, _ in fit_runs),
        iterations=iterations, before=before, after=after, unidentified=(*unidentified, *host_unidentified)))


def _stage_device_ms(blocks: list[tuple[PassBlocks, float]]) -> dict[str, float]:
    """Stage -> modelled device ms per pass of a run's blocks (decode: every forward, by its segments where
    the blocks hold them, as the timeline runs it)."""
    out: dict[str, float] = {}
    for b, f in blocks:
        for stage, seq in b.stages.items():
            runs = (b.decode_segments if stage == Stage.DECODE.value and b.decode_segments
                    else ((seq, b.decode_forwards if stage == Stage.DECODE.value else 1),))
            out[stage] = out.get(stage, 0.0) + sum(sum(x.device_s for x in s) * n for s, n in runs) * 1e3 * f
    return out


def _timeline_on_prior(fit_runs: Sequence[tuple[MeasuredRun, Predictions]],
                       held_out: Sequence[tuple[MeasuredRun, Predictions]], prior: Calibration, *,
                       sync_s: float, host_probe: str = "add", host_probe_exponent: float | None = None
                       ) -> Calibration:
    """calibrate_timeline with the device side taken from ``prior`` (see there)."""
    gpu_key, dtype = _check_runs(fit_runs, held_out)
    if (gpu_key, dtype) != (prior.gpu_key, prior.dtype):
        raise UserError(f"calibrate: the runs are {gpu_key}/{dtype}, the device prior is for "
                        f"{prior.gpu_key}/{prior.dtype}")
    base = evolve(prior, stage_device_scale={}, fit=FitSummary())
    meas: dict[str, float] = {}
    mod: dict[str, float] = {}
    observations = 0
    for run, preds in fit_runs:
        # the operator table's device times per stage, as the category fit reads them (a decode profiled
        # over another number of tokens than the timed passes is left out)
        device_ms: dict[str, float] = {}
        for o in run_observations(run):
            if not o.include_launch and o.stage is not None:
                device_ms[o.stage] = device_ms.get(o.stage, 0.0) + o.measured_s * 1e3
        if not device_ms:
            raise UserError(f"calibrate --time-model timeline: run {run.run_id} has no CUDA operator table "
                            "(per-stage device times); profile it on a GPU with the operator table enabled")
        modelled = _stage_device_ms(_run_blocks(preds, base))
        for stage, ms in device_ms.items():
            if modelled.get(stage, 0.0) > 0:
                meas[stage] = meas.get(stage, 0.0) + ms
                mod[stage] = mod.get(stage, 0.0) + modelled[stage]
                observations += 1
    scale = {st: meas[st] / mod[st] for st in meas if meas[st] > 0}
    sw = fit_runs[0][0].software()
    device = evolve(base, software=SoftwareKey(torch=sw["torch"], transformers=sw["transformers"],
                                               cuda=sw.get("cuda", "")),
                    stage_device_scale=scale, created_utc=datetime.now(UTC).isoformat(timespec="seconds"))
    return _fit_host_side(fit_runs, held_out, device, sync_s=sync_s, observations=observations, iterations=0,
                          unidentified=("device efficiencies: measured ceilings (hw bench), not fitted",),
                          host_probe=host_probe, host_probe_exponent=host_probe_exponent)


def _check_runs(fit_runs: Sequence[tuple[MeasuredRun, Predictions]],
                held_out: Sequence[tuple[MeasuredRun, Predictions]]) -> tuple[str, str]:
    """(GPU key, dtype) shared by all runs; UserError for no runs, mixed GPUs/dtypes or a run given twice."""
    if not fit_runs:
        raise UserError("calibrate: give at least one run to fit")
    keys = {(r.gpu_key, str(r.report.model.dtype)) for r, _ in [*fit_runs, *held_out]}
    if len(keys) != 1:
        raise UserError(f"calibrate: runs mix GPUs/dtypes {sorted(map(str, keys))}; calibrate one GPU and dtype at a time")
    gpu_key, dtype = next(iter(keys))
    if gpu_key is None:
        raise UserError(f"calibrate: run {fit_runs[0][0].run_id} has no GPU catalogue key (not a catalogued GPU)")
    ids = [r.run_id for r, _ in [*fit_runs, *held_out]]
    if len(set(ids)) != len(ids):
        raise UserError(f"calibrate: a run is given twice ({', '.join(ids)})")
    return gpu_key, dtype


def calibrate(
    fit_runs: Sequence[tuple[MeasuredRun, Predictions]],
    held_out: Sequence[tuple[MeasuredRun, Predictions]] = (),
    *,
    use_operator_table: bool = True,
    max_efficiency: float = 1.0,
    fit_launch: bool = True,
    shared: bool = False,
    per_stage_launch: bool = False,
) -> Calibration:
    """Fit efficiencies on ``fit_runs``; evaluate on them and on ``held_out`` (the additive model).

    All runs must share one GPU key and dtype (the calibration's key):
    UserError otherwise.
    """
    gpu_key, dtype = _check_runs(fit_runs, held_out)
    cells: list[WorkCell] = []
    obs: list[Observation] = []
    per_run: list[tuple[MeasuredRun, list[WorkCell], bool]] = []
    for run, preds in fit_runs:
        rc = run_cells(run, preds)
        cells.extend(rc)
        obs.extend(run_observations(run, rc, use_operator_table=use_operator_table))
        per_run.append((run, rc, False))
    for run, preds in held_out:
        per_run.append((run, run_cells(run, preds), True))
    result = fit_efficiencies(cells, obs, max_efficiency=max_efficiency, fit_launch=fit_launch, shared=shared,
                              per_stage_launch=per_stage_launch)
    fitted = result.model
    before: list[StageError] = []
    after: list[StageError] = []
    for run, rc, is_held in per_run:
        before.extend(stage_errors(run, rc, PURE_ROOFLINE, held_out=is_held))
        after.extend(stage_errors(run, rc, fitted, held_out=is_held))
    sw = fit_runs[0][0].software()
    return Calibration(
        gpu_key=gpu_key, dtype=dtype,
        software=SoftwareKey(torch=sw["torch"], transformers=sw["transformers"], cuda=sw.get("cuda", "")),
        compute_efficiencies=dict(result.compute_efficiencies),
        bandwidth_efficiencies=dict(result.bandwidth_efficiencies),
        launch_overhead_s=result.launch_overhead_s, kernel_floor_s=result.kernel_floor_s,
        stage_launch_overhead_s=dict(result.stage_launch_overhead_s),
        fit=FitSummary(fitted_runs=[r.run_id for r, _ in fit_runs], held_out_runs=[r.run_id for r, _ in held_out],
                       observations=result.observations, iterations=result.iterations, before=before, after=after,
                       unidentified=result.unidentified),
        created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
    )


#: host seconds to issue one CUDA kernel from eager PyTorch + transformers, known before any run of this
#: model: the reference baseline decoded 19.4 ms per token with about 960 kernels per token on the lent H100
#: (shared reference gpu-measurements.md, transformers' DeepSeek-OCR-2, torch 2.11, transformers 5.17)
REFERENCE_HOST_S_PER_KERNEL = 19.4e-3 / 960


def host_s_per_op_from_per_kernel(per_kernel_s: float, decode: BaseLayer) -> float:
    """Host seconds per dispatched op of the timeline model from host seconds per CUDA kernel as a profiler
    counts them in a decode step: the model charges a launch made inside another aten call
    CUDA_LAUNCH_HOST_WEIGHT of an op and does not charge the host discount D of bare tensor calls
    (BaseLayer.light_op), so the same step time spread over K kernels of which K_c are such launches is
    per_kernel * K / (K - (1 - w) K_c - D) per op (``decode``: the analytic decode stage)."""
    k = decode.forward_kernel_launches()
    kc = decode.forward_inner_launches()
    weighted = k - (1.0 - CUDA_LAUNCH_HOST_WEIGHT) * kc - decode.forward_host_discount()
    return per_kernel_s * k / weighted if weighted > 0 else per_kernel_s


def prior_calibration(gpu_key: str, dtype: str, *, compute_efficiency: float = 1.0,
                      bandwidth_efficiency: float = 1.0, host_s_per_kernel: float = REFERENCE_HOST_S_PER_KERNEL,
                      sync_s: float = DEFAULT_SYNC_S, software: SoftwareKey | None = None,
                      pattern_bandwidth_ratios: Mapping[str, float] | None = None,
                      kernel_floor_s: float = 0.0, gemm_times_s: Mapping[str, float] | None = None,
                      kernel_gap_s: float = 0.0, kernel_gap_graph_s: float | None = None) -> Calibration:
    """A timeline calibration fitted on nothing: the roofline at the given fractions of the datasheet peaks
    (e.g. measured ceilings / datasheet) plus ``host_s_per_kernel`` seconds of host time per launch in every
    stage and ``sync_s`` per host-device sync. The uncalibrated prediction of a host-bound eager run.
    ``pattern_bandwidth_ratios``: access pattern -> measured bandwidth / copy bandwidth (hw bench), for the
    bytes the model moves in those patterns; ``kernel_floor_s``: device seconds per kernel on top of the
    roofline (hw bench's tiny-kernel floor); ``gemm_times_s``: GEMM key -> measured device seconds per call
    (hw bench, llm_perf_opt.hardware.gemms); ``kernel_gap_s``: device seconds between kernels queued back to
    back (hw gap); ``kernel_gap_graph_s``: the same for kernels replayed from a CUDA graph (hw gap; None: not
    measured)."""
    for name, value in (("compute_efficiency", compute_efficiency), ("bandwidth_efficiency", bandwidth_efficiency)):
        if not (0 < value <= 1.5 and math.isfinite(value)):
            raise UserError(f"prior calibration: {name} must be in (0, 1.5], got {value}")
    if not (host_s_per_kernel >= 0 and math.isfinite(host_s_per_kernel)):
        raise UserError(f"prior calibration: host seconds per kernel must be >= 0, got {host_s_per_kernel}")
    if not (kernel_floor_s >= 0 and math.isfinite(kernel_floor_s)):
        raise UserError(f"prior calibration: kernel floor must be >= 0 s, got {kernel_floor_s}")
    if not (kernel_gap_s >= 0 and math.isfinite(kernel_gap_s)):
        raise UserError(f"prior calibration: kernel gap must be >= 0 s, got {kernel_gap_s}")
    if kernel_gap_graph_s is not None and not (kernel_gap_graph_s >= 0 and math.isfinite(kernel_gap_graph_s)):
        raise UserError(f"prior calibration: CUDA-graph kernel gap must be >= 0 s, got {kernel_gap_graph_s}")
    return Calibration(
        gpu_key=gpu_key, dtype=dtype, software=software or SoftwareKey(),
        default_compute_efficiency=compute_efficiency, default_bandwidth_efficiency=bandwidth_efficiency,
        time_model="timeline", stage_host_s_per_kernel={st.value: host_s_per_kernel for st in Stage},
        host_sync_s=sync_s, created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        pattern_bandwidth_ratios=dict(pattern_bandwidth_ratios or {}), kernel_floor_s=kernel_floor_s,
        gemm_times_s=dict(gemm_times_s or {}), kernel_gap_s=kernel_gap_s, kernel_gap_graph_s=kernel_gap_graph_s,
        fit=FitSummary(unidentified=("prior: nothing fitted",)),
    )


def evaluate_prior(prior: Calibration, runs: Sequence[tuple[MeasuredRun, Predictions]]) -> Calibration:
    """``prior`` with its error on ``runs`` (all held out) in ``fit.before`` (pure roofline) and ``fit.after``."""
    if not runs:
        raise UserError("calibrate --prior: give at least one run to evaluate the prior on")
    gpu_key, dtype = _check_runs(runs, ())
    if (gpu_key, dtype) != (prior.gpu_key, prior.dtype):
        raise UserError(f"calibrate --prior: the runs are {gpu_key}/{dtype}, the prior is for "
                        f"{prior.gpu_key}/{prior.dtype}")
    before: list[StageError] = []
    after: list[StageError] = []
    for run, preds in runs:
        before.extend(stage_errors(run, run_cells(run, preds), PURE_ROOFLINE, held_out=True))
        after.extend(timeline_stage_errors(run, _run_blocks(preds, prior), prior, held_out=True))
    return evolve(prior, fit=evolve(prior.fit, held_out_runs=[r.run_id for r, _ in runs], before=before,
                                    after=after))
