"""Unified report of one run folder: environment, measured and predicted stages, error, top
operators beside their predicted category share, and the capacity view (pages/day at the
measured batch and at the largest batch that fits). Written as RUN_DIR/unified_report.json
and RUN_DIR/unified_report.md; fields and units are listed in docs/compare.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attrs import define, field

from llm_perf_opt.analytic.calibration import EfficiencyModel
from llm_perf_opt.analytic.report import DEFAULT_ALLOCATOR_BATCH_FRACTION
from llm_perf_opt.compare.compare import Comparison
from llm_perf_opt.compare.runs import MeasuredRun
from llm_perf_opt.compare.whatif import SECONDS_PER_DAY
from llm_perf_opt.contracts.convert import to_analytic_summary, to_json_dict
from llm_perf_opt.data.analytic import AnalyticModelReport
from llm_perf_opt.data.io import dump_json
from llm_perf_opt.errors import UserError

UNIFIED_SCHEMA = "llm-perf-opt.unified-report/1"


@define(kw_only=True)
class StageLine:
    """One stage: measured statistics next to the prediction."""

    stage: str
    measured_mean_ms: float | None
    measured_p50_ms: float | None
    measured_p90_ms: float | None
    samples: int
    predicted_ms: float
    ratio: float | None = field(metadata={"help": "predicted / measured"})
    relative_error: float | None = field(metadata={"help": "(predicted - measured) / measured"})
    calibrated_ms: float | None = None
    calibrated_relative_error: float | None = None


@define(kw_only=True)
class OperatorLine:
    """A top operator by measured self time, with its category's predicted share."""

    op_name: str
    category: str
    calls: int
    measured_self_ms: float = field(metadata={"help": "self device (or CPU) ms over the profiled passes"})
    measured_share: float = field(metadata={"help": "fraction of the operator table's self time"})
    category_measured_share: float | None
    category_predicted_share: float | None


@define(kw_only=True)
class CapacityLine:
    """Throughput at one batch size."""

    label: str = field(metadata={"help": "'measured batch' or 'best batch that fits'"})
    batch_size: int
    measured_pages_per_s: float | None
    predicted_pages_per_s: float
    predicted_pages_per_day: float
    measured_pages_per_day: float | None
    memory_total_bytes: float
    fits: bool
    calibrated_pages_per_s: float | None = field(default=None, metadata={"help": "with the calibration, pages/s"})
    calibrated_pages_per_day: float | None = field(default=None, metadata={"help": "with the calibration"})


@define(kw_only=True)
class UnifiedReport:
    """unified_report.json."""

    schema_version: str = UNIFIED_SCHEMA
    environment: dict[str, Any]
    stages: list[StageLine]
    total_measured_ms: float | None
    total_predicted_ms: float
    total_ratio: float | None
    top_operators: list[OperatorLine]
    capacity: list[CapacityLine]
    analytic_summary: dict[str, Any] = field(metadata={"help": "contract summary with the measured total filled"})
    efficiency: str
    notes: list[str] = field(factory=list)


def _rel(p: float | None, m: float | None) -> float | None:
    return None if p is None or m is None or m <= 0 else (p - m) / m


def build_unified(run: MeasuredRun, cmp: Comparison, preds: Sequence[tuple[AnalyticModelReport, int]], *,
                  catalog: Path | None = None, top_k: int = 10,
                  calibration: EfficiencyModel | None = None) -> UnifiedReport:
    """Assemble the unified report; the best-batch line reruns the analytic model (no model build).

    With ``calibration`` the capacity lines also carry calibrated pages/s.
    """
    rep = run.report
    meta = rep.meta
    env = {
        "run_id": meta.run_id, "device_name": meta.device_name, "gpu_key": meta.gpu_key,
        "torch": meta.torch_version, "transformers": meta.transformers_version, "git_revision": meta.git_revision,
        "started_at": meta.started_at.isoformat(), "model": rep.model.name, "config": rep.model.config_origin,
        "weights": str(rep.model.weights), "dtype": str(rep.model.dtype),
        "attention": str(rep.model.attn_implementation), "mode": meta.mode, "batch_size": meta.batch_size,
        "max_new_tokens": meta.max_new_tokens, "fixed_length": meta.fixed_length, "repeats": meta.repeats,
        "warmup": meta.warmup, "images": len(rep.inputs.images), "skipped": len(rep.skipped_images),
        "peak_memory_bytes": rep.peak_memory_bytes,
    }
    stages = []
    for s in cmp.stages:
        stats = rep.stage_ms.get(s.stage)  # type: ignore[call-overload]
        stages.append(StageLine(
            stage=s.stage, measured_mean_ms=s.measured_ms,
            measured_p50_ms=stats.p50 if stats is not None and s.stage != "prefill" else None,
            measured_p90_ms=stats.p90 if stats is not None and s.stage != "prefill" else None,
            samples=s.samples, predicted_ms=s.predicted_ms, ratio=s.ratio,
            relative_error=_rel(s.predicted_ms, s.measured_ms), calibrated_ms=s.calibrated_ms,
            calibrated_relative_error=_rel(s.calibrated_ms, s.measured_ms),
        ))
    cat_pred = {c.category: c.predicted_share for c in cmp.categories}
    cat_meas = {c.category: c.measured_share for c in cmp.categories}
    ops = []
    for o in rep.operators[:top_k]:
        ms = o.self_cuda_time_ms if o.self_cuda_time_ms > 0 else o.self_cpu_time_ms
        ops.append(OperatorLine(op_name=o.op_name, category=str(o.category), calls=o.calls, measured_self_ms=ms,
                                measured_share=o.share_of_total, category_measured_share=cat_meas.get(str(o.category)),
                                category_predicted_share=cat_pred.get(str(o.category))))
    notes: list[str] = []
    capacity = []
    main_rep = max(preds, key=lambda p: p[1])[0]
    meas_pps = rep.pages_per_s.mean if rep.pages_per_s is not None else None
    if meas_pps is None and cmp.totals.measured_total_ms:
        meas_pps = meta.batch_size / (cmp.totals.measured_total_ms / 1e3)
    cap_bytes = main_rep.peaks.memory_capacity_bytes
    pred_pps = main_rep.workload.batch_size / (main_rep.model_totals.time_ms / 1e3)
    cal_pps: float | None = None
    if calibration is not None:
        from llm_perf_opt.compare.analyzer_bridge import analyze_batch

        crep = analyze_batch(main_rep, main_rep.workload.batch_size, catalog=catalog, efficiency=calibration)
        cal_pps = main_rep.workload.batch_size / (crep.model_totals.time_ms / 1e3)
    capacity.append(CapacityLine(
        label="measured batch", batch_size=meta.batch_size, measured_pages_per_s=meas_pps,
        predicted_pages_per_s=pred_pps, predicted_pages_per_day=pred_pps * SECONDS_PER_DAY,
        measured_pages_per_day=None if meas_pps is None else meas_pps * SECONDS_PER_DAY,
        memory_total_bytes=main_rep.memory.total_bytes,
        fits=bool(cap_bytes is not None and main_rep.memory.total_bytes <= cap_bytes),
        calibrated_pages_per_s=cal_pps, calibrated_pages_per_day=None if cal_pps is None else cal_pps * SECONDS_PER_DAY))
    pre = rep.preprocessing_ms.mean if rep.preprocessing_ms is not None else None
    stage_ms = cmp.totals.measured_total_ms
    if meas_pps and pre and stage_ms:
        pass_ms = meta.batch_size / meas_pps * 1e3  # the end-to-end ms per pass that the measured pages/s gives
        notes.append(f"measured pages/s counts host preprocessing: {pre:,.1f} ms per pass "
                     f"({pre / meta.batch_size:,.1f} ms per page; {pre / pass_ms:.0%} of the {pass_ms:,.0f} ms per "
                     "pass that the measured pages/s gives), which the analytic model does not predict; the "
                     f"timed stages alone give {meta.batch_size / (stage_ms / 1e3):,.3f} pages/s")
    best = main_rep.memory.max_batch_size
    if best is None or best < 1:
        notes.append("best batch: unknown (the analytic report has no max_batch_size)")
    else:
        try:
            from llm_perf_opt.compare.analyzer_bridge import analyze_batch

            brep = analyze_batch(main_rep, best, catalog=catalog)
            bpps = best / (brep.model_totals.time_ms / 1e3)
            bcap = brep.peaks.memory_capacity_bytes
            bcal: float | None = None
            if calibration is not None:
                bcrep = analyze_batch(main_rep, best, catalog=catalog, efficiency=calibration)
                bcal = best / (bcrep.model_totals.time_ms / 1e3)
            capacity.append(CapacityLine(
                label="best batch that fits", batch_size=best, measured_pages_per_s=None,
                predicted_pages_per_s=bpps, predicted_pages_per_day=bpps * SECONDS_PER_DAY,
                measured_pages_per_day=None, memory_total_bytes=brep.memory.total_bytes,
                fits=bool(bcap is not None and brep.memory.total_bytes <= bcap),
                calibrated_pages_per_s=bcal, calibrated_pages_per_day=None if bcal is None else bcal * SECONDS_PER_DAY))
            notes.append(f"best batch {best}: the largest whose analytic footprint fits the catalogue's "
                         f"{(bcap or 0) / 1e9:,.1f} GB; on the H200, runs with "
                         "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True reached 96-98% of that limit with "
                         "eager attention and 99% with sdpa; with "
                         "PyTorch's default caching allocator plan on about "
                         f"{math.floor(best * DEFAULT_ALLOCATOR_BATCH_FRACTION)} "
                         f"({DEFAULT_ALLOCATOR_BATCH_FRACTION:.0%}: its fragmentation)")
        except UserError as exc:
            notes.append(f"best batch {best}: not analysed ({exc})")
    summary = to_analytic_summary(main_rep, measured_total_time_ms=cmp.totals.measured_total_ms
                                  if cmp.totals.measured_total_ms and len(preds) == 1 else None)
    if len(preds) > 1:
        notes.append("several workloads in the run: the contract summary is of the most frequent one, "
                     "without a measured total")
    return UnifiedReport(environment=env, stages=stages, total_measured_ms=cmp.totals.measured_total_ms,
                         total_predicted_ms=cmp.totals.predicted_total_ms, total_ratio=cmp.totals.ratio,
                         top_operators=ops, capacity=capacity, analytic_summary=to_json_dict(summary),
                         efficiency=cmp.efficiency, notes=notes + list(cmp.notes))


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "—" if v is None else format(v, fmt)


def render_unified_markdown(u: UnifiedReport) -> str:
    """Markdown of the unified report."""
    e = u.environment
    lines = [f"# Run `{e['run_id']}`: measured and predicted", "", "## Environment", ""]
    lines += [f"- {k}: {v}" for k, v in e.items()]
    lines += ["", f"## Stages (ms per pass; prediction: {u.efficiency})", "",
              "| stage | measured mean | p50 | p90 | samples | predicted | ratio | error | calibrated | cal. error |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in u.stages:
        lines.append(f"| {s.stage} | {_f(s.measured_mean_ms)} | {_f(s.measured_p50_ms)} | {_f(s.measured_p90_ms)} | "
                     f"{s.samples} | {_f(s.predicted_ms)} | {_f(s.ratio)} | {_f(s.relative_error, '+.1%')} | "
                     f"{_f(s.calibrated_ms)} | {_f(s.calibrated_relative_error, '+.1%')} |")
    lines.append(f"| **total** | {_f(u.total_measured_ms)} | | | | {_f(u.total_predicted_ms)} | {_f(u.total_ratio)} | "
                 f"{_f(_rel(u.total_predicted_ms, u.total_measured_ms), '+.1%')} | | |")
    lines += ["", "## Top operators by measured self time", "",
              "| operator | category | calls | self ms | share | category share measured | category share predicted |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for o in u.top_operators:
        lines.append(f"| `{o.op_name}` | {o.category} | {o.calls} | {o.measured_self_ms:.3f} | {o.measured_share:.3f} | "
                     f"{_f(o.category_measured_share)} | {_f(o.category_predicted_share)} |")
    lines += ["", "## Capacity on this GPU", "",
              "| batch | size | measured pages/s | predicted pages/s | calibrated pages/s | measured pages/day | "
              "predicted pages/day | calibrated pages/day | memory GB | fits |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in u.capacity:
        lines.append(f"| {c.label} | {c.batch_size} | {_f(c.measured_pages_per_s)} | {c.predicted_pages_per_s:.3f} | "
                     f"{_f(c.calibrated_pages_per_s)} | {_f(c.measured_pages_per_day, ',.0f')} | "
                     f"{c.predicted_pages_per_day:,.0f} | {_f(c.calibrated_pages_per_day, ',.0f')} | "
                     f"{c.memory_total_bytes / 1e9:.2f} | {'yes' if c.fits else 'no'} |")
    if u.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in u.notes]
    return "\n".join(lines) + "\n"


def write_unified(u: UnifiedReport, run_dir: str | Path) -> list[Path]:
    """RUN_DIR/unified_report.json and .md."""
    d = Path(run_dir)
    j = dump_json(u, d / "unified_report.json")
    m = d / "unified_report.md"
    m.write_text(render_unified_markdown(u), encoding="utf-8")
    return [j, m]
