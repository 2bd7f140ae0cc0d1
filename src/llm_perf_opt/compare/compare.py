"""Join a measured run with the analytic prediction of its exact workload.

Ratios are predicted / measured (1.0 = exact, > 1 = the model is pessimistic).
Stage rows follow :class:`llm_perf_opt.vocab.Stage`; the measured ``prefill``
row is the language-model prefill (the timer's prefill range minus the
vision ranges it encloses, see compare/runs.py), as in the analytic model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attrs import define, field

from llm_perf_opt.analytic.calibration import PURE_ROOFLINE, Calibration, SoftwareKey, check_applies
from llm_perf_opt.analytic.workloads import request_shape
from llm_perf_opt.compare.analytic import (
    STAGE_ORDER,
    category_folding,
    category_times_ms,
    check_same_model,
    check_same_workload,
    ratio,
    report_cells,
    stage_times_ms,
)
from llm_perf_opt.compare.runs import MeasuredRun
from llm_perf_opt.data.analytic import AnalyticModelReport, OCRWorkloadProfile
from llm_perf_opt.errors import UserError
from llm_perf_opt.vocab import Stage

#: Schema version of compare.json files.
COMPARE_SCHEMA = "llm-perf-opt.compare/1"


@define(kw_only=True)
class StageComparison:
    """Predicted vs measured time of one stage (per pass: the whole batch)."""

    stage: str = field(metadata={"help": "Stage string"})
    measured_ms: float | None = field(metadata={"help": "mean measured ms per pass (null: not measured)"})
    measured_std_ms: float | None = field(metadata={"help": "std of the measured ms"})
    samples: int = field(metadata={"help": "measured samples behind the mean"})
    predicted_ms: float = field(metadata={"help": "analytic roofline ms (as in the report)"})
    ratio: float | None = field(metadata={"help": "predicted_ms / measured_ms"})
    calibrated_ms: float | None = field(default=None, metadata={"help": "calibrated prediction, ms"})
    calibrated_ratio: float | None = field(default=None, metadata={"help": "calibrated_ms / measured_ms"})
    flops: float = field(default=0.0, metadata={"help": "analytic FLOPs of the stage (tensor + CUDA core)"})
    io_bytes: float = field(default=0.0, metadata={"help": "analytic bytes moved"})
    arithmetic_intensity_flops_per_byte: float = field(default=0.0, metadata={"help": "flops / io_bytes"})
    achieved_flops_per_s: float | None = field(default=None, metadata={"help": "flops / measured seconds"})
    predicted_kernels: float = field(
        default=0.0, metadata={"help": "analytic kernel launches per pass (decode: per decoder forward)"})
    measured_kernels: float | None = field(
        default=None, metadata={"help": "kernels the profiler saw per pass (decode: per forward); null: not recorded"})
    measured_device_ms: float | None = field(
        default=None, metadata={"help": "kernel time of the stage per pass from the profiler pass (decode scaled to "
                                        "the timed passes' forwards); null without a CUDA operator table"})
    device_ratio: float | None = field(
        default=None, metadata={"help": "predicted_ms / measured_device_ms: the roofline against device time only"})


@define(kw_only=True)
class CategoryComparison:
    """Predicted vs measured time of one operator category, all stages of one pass."""

    category: str = field(metadata={"help": "OperatorCategory string"})
    measured_ms: float | None = field(metadata={"help": "self device ms per pass (operator table), null if absent"})
    measured_share: float | None = field(metadata={"help": "fraction of the measured operator time"})
    predicted_ms: float = field(metadata={"help": "roofline ms without launch cost"})
    predicted_share: float = field(metadata={"help": "fraction of the predicted category time"})
    ratio: float | None = field(metadata={"help": "predicted_ms / measured_ms (null without absolute times)"})
    share_ratio: float | None = field(metadata={"help": "predicted_share / measured_share"})
    calibrated_ms: float | None = field(default=None, metadata={"help": "calibrated roofline ms"})
    flops: float = field(default=0.0, metadata={"help": "analytic FLOPs"})
    io_bytes: float = field(default=0.0, metadata={"help": "analytic bytes moved"})


@define(kw_only=True)
class TotalComparison:
    """Whole pass and decode per-token comparison."""

    measured_total_ms: float | None = field(metadata={"help": "measured prefill (vision incl.) + decode, ms"})
    predicted_total_ms: float = field(metadata={"help": "analytic total of all stages, ms"})
    ratio: float | None = field(metadata={"help": "predicted_total_ms / measured_total_ms"})
    calibrated_total_ms: float | None = field(default=None, metadata={"help": "calibrated total, ms"})
    calibrated_ratio: float | None = field(default=None)
    measured_decode_per_token_ms: float | None = field(
        default=None, metadata={"help": "ms per decoder forward: decode ms / (new tokens - 1), whole batch"})
    predicted_decode_per_token_ms: float = field(
        default=0.0, metadata={"help": "analytic ms of one decoder forward at the mean KV length"})
    decode_per_token_ratio: float | None = field(default=None)
    calibrated_decode_per_token_ms: float | None = field(default=None)
    measured_decode_tokens: float | None = field(default=None, metadata={"help": "mean new tokens per sequence"})
    predicted_decode_tokens: int = field(default=0, metadata={"help": "new tokens per sequence (analytic)"})


@define(kw_only=True)
class Comparison:
    """compare.json: one run against the analytic model of its workload."""

    schema_version: str = field(default=COMPARE_SCHEMA)
    run_id: str
    analytic_report_ids: list[str]
    gpu_key: str
    model_config: str
    workloads: list[dict[str, Any]] = field(metadata={"help": "workloads compared, with image counts"})
    software: dict[str, str]
    efficiency: str = field(metadata={"help": "'pure roofline' or the calibration's description"})
    stages: list[StageComparison]
    categories: list[CategoryComparison]
    totals: TotalComparison
    category_basis: str = field(metadata={"help": "'cuda', 'cpu' or 'share-only' (no operator table file)"})
    peak_tensor_core_flops_per_s: float
    memory_bytes_per_s: float
    notes: list[str] = field(factory=list)
    generated_at: str = field(factory=lambda: datetime.now(UTC).isoformat())


def _weighted(values: Sequence[tuple[float, int]]) -> float:
    total = sum(w for _, w in values)
    return math.fsum(v * w for v, w in values) / total


def compare_run(
    run: MeasuredRun,
    predictions: Sequence[tuple[AnalyticModelReport, int]],
    *,
    calibration: Calibration | None = None,
    workloads: Sequence[OCRWorkloadProfile] | None = None,
    catalog: Path | None = None,
    config: str | None = None,
) -> Comparison:
    """Compare ``run`` with analytic reports of its workloads (report, image count) pairs.

    When ``workloads`` (the run's, same order) is given each report is checked
    against it first: MismatchError names the first differing field.
    """
    if not predictions:
        raise UserError(f"{run.run_id}: no analytic prediction to compare with")
    meta = run.report.meta
    notes: list[str] = []
    for i, (rep, _) in enumerate(predictions):
        check_same_model(rep, config or run.report.model.config_origin, where=f"analytic report {rep.report_id}")
        if workloads is not None:
            check_same_workload(rep, workloads[i], meta.gpu_key, where=f"analytic report {rep.report_id}")
    gpu_key = predictions[0][0].gpu_key
    if calibration is not None:
        sw = run.software()
        software = SoftwareKey(torch=sw["torch"], transformers=sw["transformers"], cuda=sw.get("cuda", ""))
        notes.extend(check_applies(calibration, gpu_key, software, dtype=str(predictions[0][0].workload.dtype)))
        notes.append("calibrated category times use the leaf x category work with the calibration "
                     "(decode steps summed before the max); calibrated stage times rerun the analytic model")
    for rep, _ in predictions:
        if rep.peaks.efficiencies or rep.peaks.launch_overhead_ms:
            notes.append(f"report {rep.report_id} was computed with efficiencies/launch cost "
                         f"(source: {rep.peaks.source_ref}); 'predicted' uses them as reported")

    # Predicted per stage: the report's own totals (weighted over workload groups).
    def pred_stage(stage: str) -> float:
        vals = []
        for rep, w in predictions:
            tot = rep.stage_totals.get(Stage(stage))
            vals.append((tot.time_ms if tot else 0.0, w))
        return _weighted(vals)

    def work(stage: str, attr: str) -> float:
        vals = []
        for rep, w in predictions:
            tot = rep.stage_totals.get(Stage(stage))
            vals.append((float(getattr(tot, attr)) if tot else 0.0, w))
        return _weighted(vals)

    pred_kernels: dict[str, float] = {}
    cal_stage: dict[str, float] = {}
    cal_total: float | None = None
    cal_tok: float | None = None
    cal_cat: dict[str, float] = {}
    pure_cat: dict[str, float] = {}
    cat_flops: dict[str, float] = {}
    cat_bytes: dict[str, float] = {}
    total_w = sum(w for _, w in predictions)
    for rep, w in predictions:
        cells = report_cells(rep, run.run_id)
        rebuilt = stage_times_ms(cells, PURE_ROOFLINE)
        if not rep.peaks.efficiencies and not rep.peaks.launch_overhead_ms and any(
                abs(rebuilt.get(st.value, 0.0) - tot.time_ms) > 1e-6 * max(tot.time_ms, 1e-12)
                for st, tot in rep.stage_totals.items() if st is not Stage.DECODE):
            notes.append(f"report {rep.report_id} differs from the current analytic model (another version?): "
                         "stage rows use the report, category rows the current model")
        for k, v in category_times_ms(cells, PURE_ROOFLINE).items():
            pure_cat[k] = pure_cat.get(k, 0.0) + v * w / total_w
        if calibration is not None:
            # calibrated stage times: the analytic model rerun with the calibration (exact roofline)
            from llm_perf_opt.compare.analyzer_bridge import recompute_with

            cal_rep = recompute_with(rep, calibration.at_host_speed(run.probe_us(calibration.host_probe)), catalog=catalog)
            for st, tot in cal_rep.stage_totals.items():
                cal_stage[st.value] = cal_stage.get(st.value, 0.0) + tot.time_ms * w / total_w
            cal_total = (cal_total or 0.0) + cal_rep.model_totals.time_ms * w / total_w
            cal_tok = (cal_tok or 0.0) + cal_rep.decode.per_token.time_ms * w / total_w
            for k, v in category_times_ms(cells, calibration).items():
                cal_cat[k] = cal_cat.get(k, 0.0) + v * w / total_w
        forwards = max(1, request_shape(rep.workload, rep.model.config.language.max_position_embeddings
                                        ).decode_forwards)
        for cell in cells:
            per = cell.kernels / forwards if cell.stage == Stage.DECODE.value else cell.kernels
            pred_kernels[cell.stage] = pred_kernels.get(cell.stage, 0.0) + per * w / total_w
            cat_flops[cell.category] = cat_flops.get(cell.category, 0.0) + cell.flops * w / total_w
            cat_bytes[cell.category] = cat_bytes.get(cell.category, 0.0) + cell.io_bytes * w / total_w

    meas_kernels: dict[str, float] = {}
    if run.operator_table is not None and run.operator_table.stage_kernels:
        meas_kernels = run.operator_table.kernels_per_pass()
        if Stage.DECODE.value in meas_kernels:
            dec_n = run.operator_table.decode_new_tokens or meta.max_new_tokens
            meas_kernels[Stage.DECODE.value] /= max(1, dec_n - 1)
    meas_device: dict[str, float] = {}
    if run.operator_table is not None and run.operator_table.basis == "cuda":
        meas_device = {s: sum(cats.values()) for s, cats in run.operator_table.per_pass().items()}
        if Stage.DECODE.value in meas_device:
            profiled_n = run.operator_table.decode_new_tokens or meta.max_new_tokens
            meas_device[Stage.DECODE.value] *= max(0, meta.max_new_tokens - 1) / max(1, profiled_n - 1)
    stages: list[StageComparison] = []
    for stage in STAGE_ORDER:
        measured = run.lm_prefill_ms() if stage == Stage.PREFILL.value else run.stage_mean_ms(stage)
        predicted = pred_stage(stage)
        flops = work(stage, "total_flops")
        io = work(stage, "io_bytes")
        cal = cal_stage.get(stage) if calibration is not None else None
        stages.append(StageComparison(
            stage=stage, measured_ms=measured, measured_std_ms=run.stage_std_ms(stage),
            samples=run.stage_samples(stage), predicted_ms=predicted, ratio=ratio(predicted, measured),
            calibrated_ms=cal, calibrated_ratio=ratio(cal, measured), flops=flops, io_bytes=io,
            arithmetic_intensity_flops_per_byte=flops / io if io else 0.0,
            achieved_flops_per_s=flops / (measured / 1e3) if measured else None,
            predicted_kernels=pred_kernels.get(stage, 0.0), measured_kernels=meas_kernels.get(stage),
            measured_device_ms=meas_device.get(stage), device_ratio=ratio(predicted, meas_device.get(stage)),
        ))
    if run.stage_mean_ms(Stage.PREFILL) is not None:
        notes.append("measured prefill = prefill range minus the vision ranges it encloses (language-model prefill)")

    # Categories
    table = run.operator_table
    measured_cat: dict[str, float] = {}
    basis = "share-only"
    if table is not None:
        measured_cat = table.category_per_pass()
        basis = table.basis
        if table.decode_new_tokens not in (None, meta.max_new_tokens):
            notes.append(f"the profiler pass decoded {table.decode_new_tokens} new tokens, the timed passes "
                         f"{meta.max_new_tokens}: category times include a different decode length")
    else:
        total_self = sum(o.self_cuda_time_ms for o in run.report.operators) or sum(
            o.self_cpu_time_ms for o in run.report.operators)
        key = "self_cuda_time_ms" if sum(o.self_cuda_time_ms for o in run.report.operators) > 0 else "self_cpu_time_ms"
        for o in run.report.operators:
            measured_cat[str(o.category)] = measured_cat.get(str(o.category), 0.0) + getattr(o, key)
        if total_self:
            notes.append("no operator table file: category rows compare shares only")
    fold = category_folding(set(pure_cat), measured_cat)
    folded = sorted({a for a, m in fold.items() if a != m})
    if folded:
        notes.append(f"categories {', '.join(folded)} compared as "
                     f"{', '.join(sorted({fold[a] for a in folded}))}: the operator table has no time under their "
                     "own names (profiler categories come from aten op names)")

    def fold_sum(d: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, v in d.items():
            out[fold.get(k, k)] = out.get(fold.get(k, k), 0.0) + v
        return out

    pure_cat, cal_cat = fold_sum(pure_cat), fold_sum(cal_cat)
    cat_flops, cat_bytes = fold_sum(cat_flops), fold_sum(cat_bytes)
    meas_total = sum(measured_cat.values())
    pred_total = sum(pure_cat.values())
    categories: list[CategoryComparison] = []
    # by measured time, then predicted time, then name: the same order in every process (not a set's)
    for cat in sorted(set(pure_cat) | set(measured_cat),
                      key=lambda c: (-measured_cat.get(c, 0.0), -pure_cat.get(c, 0.0), c)):
        m = measured_cat.get(cat)
        ms = m / meas_total if (m is not None and meas_total > 0) else None
        p = pure_cat.get(cat, 0.0)
        ps = p / pred_total if pred_total > 0 else 0.0
        categories.append(CategoryComparison(
            category=cat, measured_ms=m if basis != "share-only" else None, measured_share=ms,
            predicted_ms=p, predicted_share=ps, ratio=ratio(p, m) if basis != "share-only" else None,
            share_ratio=ratio(ps, ms), calibrated_ms=cal_cat.get(cat) if calibration is not None else None,
            flops=cat_flops.get(cat, 0.0), io_bytes=cat_bytes.get(cat, 0.0),
        ))

    measured_total = run.measured_total_ms()
    predicted_total = _weighted([(rep.model_totals.time_ms, w) for rep, w in predictions])
    pred_tok = _weighted([(rep.decode.per_token.time_ms, w) for rep, w in predictions])
    dec_tokens = predictions[0][0].decode.tokens
    meas_tok = run.decode_per_token_ms()
    meas_dec_tokens = run.decode_tokens_per_pass()
    if meas_dec_tokens is not None and abs(meas_dec_tokens - dec_tokens) > 0.5:
        notes.append(f"new tokens differ: {meas_dec_tokens:g} per sequence measured, {dec_tokens} in the analytic "
                     "workload (EOS stop without fixed length?): compare decode per forward")
    totals = TotalComparison(
        measured_total_ms=measured_total, predicted_total_ms=predicted_total,
        ratio=ratio(predicted_total, measured_total), calibrated_total_ms=cal_total,
        calibrated_ratio=ratio(cal_total, measured_total), measured_decode_per_token_ms=meas_tok,
        predicted_decode_per_token_ms=pred_tok, decode_per_token_ratio=ratio(pred_tok, meas_tok),
        calibrated_decode_per_token_ms=cal_tok, measured_decode_tokens=meas_dec_tokens,
        predicted_decode_tokens=dec_tokens,
    )
    first = predictions[0][0]
    return Comparison(
        run_id=run.run_id, analytic_report_ids=[rep.report_id for rep, _ in predictions], gpu_key=gpu_key,
        model_config=first.model.config.name,
        workloads=[{"profile_id": rep.workload.profile_id, "mode": rep.workload.mode,
                    "tiles": f"{rep.workload.tile_rows}x{rep.workload.tile_cols}",
                    "prefill_tokens": rep.workload.prefill_tokens, "max_new_tokens": rep.workload.max_new_tokens,
                    "batch_size": rep.workload.batch_size, "dtype": str(rep.workload.dtype), "images": w}
                   for rep, w in predictions],
        software=run.software(),
        efficiency=calibration.describe() if calibration is not None else "pure roofline (datasheet peaks)",
        stages=stages, categories=categories, totals=totals, category_basis=basis,
        peak_tensor_core_flops_per_s=first.peaks.tensor_core_flops_per_s,
        memory_bytes_per_s=first.peaks.memory_bytes_per_s, notes=notes,
    )
