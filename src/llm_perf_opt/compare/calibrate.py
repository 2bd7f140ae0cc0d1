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

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from llm_perf_opt.analytic.calibration import (
    PURE_ROOFLINE,
    Calibration,
    EfficiencyModel,
    FitSummary,
    SoftwareKey,
    StageError,
)
from llm_perf_opt.compare.analytic import category_folding, report_cells
from llm_perf_opt.compare.fit import Observation, WorkCell, fit_efficiencies
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
    """Fit efficiencies on ``fit_runs``; evaluate on them and on ``held_out``.

    All runs must share one GPU key and dtype (the calibration's key):
    UserError otherwise.
    """
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
