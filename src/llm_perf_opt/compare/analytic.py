"""Predicted side of a comparison: analytic reports, their work cells and calibrated times.

An AnalyticModelReport carries, per leaf module, the work of each operator
category (tensor-core FLOPs, CUDA-core FLOPs, bytes, kernel launches) and the
peaks it was computed against. :func:`report_cells` turns the leaves into
:class:`~llm_perf_opt.compare.fit.WorkCell` (one per leaf and category) whose
times at 100 % efficiency are what the roofline divides by the efficiencies;
:func:`stage_times_ms` sums them per stage under any EfficiencyModel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from llm_perf_opt.analytic.calibration import EfficiencyModel
from llm_perf_opt.compare.fit import WorkCell
from llm_perf_opt.data.analytic import AnalyticModelReport, OCRWorkloadProfile
from llm_perf_opt.data.io import load_report
from llm_perf_opt.errors import UserError
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.vocab import Stage


class MismatchError(UserError):
    """A run and an analytic report that describe different models or workloads."""


def load_analytic_report(path: str | Path) -> AnalyticModelReport:
    """Load an exported AnalyticModelReport (JSON/YAML); ReportLoadError in one line (schema included)."""
    return load_report(path, AnalyticModelReport)


def report_cells(report: AnalyticModelReport, run_id: str = "") -> list[WorkCell]:
    """One WorkCell per (layer with own work, operator category) of the report's analytic model.

    The layer trees are rebuilt from the report's config and workload (formulas
    only) and walked with the repetition counts multiplied down, exactly as the
    roofline does; decode cells hold all decode forwards (steps x the mean step).
    compute_s = tensor-core FLOPs / tensor-core peak + CUDA-core FLOPs / CUDA-core peak;
    memory_s = bytes / bandwidth (the report's peaks, before efficiencies).
    """
    from llm_perf_opt.analytic.base import CC, IO, LAUNCH, TC, BaseLayer
    from llm_perf_opt.analytic.model import AnalyticModel

    peaks = report.peaks
    model = AnalyticModel(report.model.config, report.workload)
    rid = run_id or report.report_id
    cells: list[WorkCell] = []

    def walk(layer: BaseLayer, stage: str, mult: float) -> None:
        m = mult * layer.count
        for cat, vec in layer.ops.items():
            compute_s = vec[TC] / peaks.tensor_core_flops_per_s + vec[CC] / peaks.cuda_core_flops_per_s
            cells.append(WorkCell(run_id=rid, stage=stage, category=cat.value, compute_s=compute_s * m,
                                  memory_s=vec[IO] / peaks.memory_bytes_per_s * m, kernels=vec[LAUNCH] * m,
                                  flops=(vec[TC] + vec[CC]) * m, io_bytes=vec[IO] * m))
        for child in layer.children:
            walk(child, stage, m)

    for stage, tree in model.stages.items():
        scale = 1.0
        if stage is Stage.DECODE:
            scale = float(model.shape.decode_forwards)
            if scale <= 0:
                continue
        walk(tree, stage.value, scale)
    return cells


#: Analytic categories a profiler operator table cannot tell apart from a generic one when it
#: categorises by aten op name alone (target_operators.yaml: lm_head and the experts are module-path
#: rules; their matmuls show up as gemm).
FOLDABLE: dict[str, str] = {"lm_head": "gemm", "moe_experts": "gemm"}


def category_folding(analytic: set[str] | list[str], measured: dict[str, float]) -> dict[str, str]:
    """analytic category -> the category it is compared under.

    A foldable category (FOLDABLE) with no measured time at all is compared
    as its generic category; every other category maps to itself.
    """
    out = {}
    for c in analytic:
        target = FOLDABLE.get(c)
        out[c] = target if (target is not None and measured.get(c, 0.0) <= 0.0) else c
    return out


def stage_times_ms(cells: Sequence[WorkCell], eff: EfficiencyModel, *, include_launch: bool = True
                   ) -> dict[str, float]:
    """Stage -> predicted ms (sum of its cells) under ``eff``."""
    out: dict[str, float] = {}
    for c in cells:
        out[c.stage] = out.get(c.stage, 0.0) + c.time_s(eff, include_launch) * 1e3
    return out


def category_times_ms(cells: Sequence[WorkCell], eff: EfficiencyModel, *, include_launch: bool = False
                      ) -> dict[str, float]:
    """Category -> predicted ms over all stages under ``eff`` (device time: no launch cost by default)."""
    out: dict[str, float] = {}
    for c in cells:
        out[c.category] = out.get(c.category, 0.0) + c.time_s(eff, include_launch) * 1e3
    return out


def check_same_model(report: AnalyticModelReport, config_origin: str, *, where: str) -> None:
    """MismatchError when the report's model is not the run's ('default', 'tiny' or a config path)."""
    mine = report.model.config
    try:
        theirs = DeepseekOCRConfig.named(config_origin)
    except UserError:
        theirs = None
    if theirs is not None:
        same = (mine.sam, mine.clip, mine.projector, mine.language) == (
            theirs.sam, theirs.clip, theirs.projector, theirs.language)
    else:
        same = mine.name == config_origin
    if not same:
        raise MismatchError(
            f"{where}: the analytic report models config {mine.name!r} but the run used {config_origin!r}"
        )


def check_same_workload(report: AnalyticModelReport, workload: OCRWorkloadProfile, gpu_key: str | None, *,
                        where: str) -> None:
    """MismatchError naming the first field where the report's workload differs from the run's."""
    a, b = report.workload, workload
    la, lb = a.layout, b.layout
    checks = [
        ("mode", a.mode, b.mode),
        ("tiles", f"{la.rows}x{la.cols}" if la.num_tiles else "none", f"{lb.rows}x{lb.cols}" if lb.num_tiles else "none"),
        ("prefill_tokens", a.prefill_tokens, b.prefill_tokens),
        ("max_new_tokens", a.max_new_tokens, b.max_new_tokens),
        ("batch_size", a.batch_size, b.batch_size),
        ("dtype", str(a.dtype), str(b.dtype)),
        ("attention", str(a.attention), str(b.attention)),
        ("experts", a.experts, b.experts),
        ("no_repeat_ngram_size", a.no_repeat_ngram_size, b.no_repeat_ngram_size),
    ]
    if gpu_key is not None:
        checks.append(("gpu", report.gpu_key, gpu_key))
    for name, mine, theirs in checks:
        if mine != theirs:
            raise MismatchError(
                f"{where}: workload differs from the run: {name} is {mine} in the report, {theirs} in the run"
            )


def ratio(predicted: float | None, measured: float | None) -> float | None:
    """predicted / measured, None when either is missing or measured is 0."""
    if predicted is None or measured is None or measured <= 0 or not math.isfinite(predicted):
        return None
    return predicted / measured


STAGE_ORDER: tuple[str, ...] = tuple(s.value for s in Stage)
