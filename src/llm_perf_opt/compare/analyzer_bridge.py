"""Rerun the analytic model (llm_perf_opt.analytic: formulas only, no model build) for compare,
calibrate and what-if.

Peaks: when the GPU and dtype are those of a base report, the base report's
own peaks are reused (so measured ceilings it was computed with carry over
and an unchanged scenario reproduces it exactly); otherwise the catalogue's
datasheet peaks of the new GPU / dtype are used.
"""

from __future__ import annotations

from pathlib import Path

from attrs import evolve

from llm_perf_opt.analytic.calibration import EfficiencyModel
from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.analytic.report import PURE_ROOFLINE_NOTE, build_report
from llm_perf_opt.analytic.roofline import RooflinePeaks
from llm_perf_opt.compare.runs import MeasuredRun
from llm_perf_opt.data.analytic import AnalyticModelReport, OCRWorkloadProfile
from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.bench import effective_peaks
from llm_perf_opt.hardware.catalog import GpuSpec, load_catalog
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.vocab import DType


class CalibratedBaseError(UserError):
    """A base report that was itself computed with efficiencies (cannot be recomputed exactly)."""


def check_uncalibrated(base: AnalyticModelReport, where: str = "") -> None:
    """CalibratedBaseError when ``base`` was computed with a calibration: efficiencies or a launch cost in its
    peaks, or a note naming one (a timeline calibration may have neither, its times come from the timeline)."""
    calibrated_note = any(n.startswith("efficiencies:") and n != PURE_ROOFLINE_NOTE for n in base.notes)
    if base.peaks.efficiencies or base.peaks.launch_overhead_ms or calibrated_note:
        raise CalibratedBaseError(
            f"{where or base.report_id}: the report was computed with a calibration; export it without one "
            "and pass the calibration file instead"
        )


def peaks_for(base: AnalyticModelReport | None, gpu: GpuSpec, dtype: DType) -> RooflinePeaks:
    """The base report's peaks when GPU and dtype are unchanged, else the catalogue's datasheet peaks."""
    if base is not None and base.gpu_key == gpu.key and base.workload.dtype == dtype:
        p = base.peaks
        return RooflinePeaks(gpu_key=gpu.key, tensor_core_flops_per_s=p.tensor_core_flops_per_s,
                             cuda_core_flops_per_s=p.cuda_core_flops_per_s, memory_bytes_per_s=p.memory_bytes_per_s,
                             memory_capacity_bytes=p.memory_capacity_bytes if p.memory_capacity_bytes is not None
                             else float(gpu.memory_bytes), source=p.source, source_ref=p.source_ref)
    return RooflinePeaks.from_effective(effective_peaks(gpu), dtype)


def analyze_like(base: AnalyticModelReport, workload: OCRWorkloadProfile, gpu: GpuSpec | None = None, *,
                 efficiency: EfficiencyModel | None = None, max_depth: int | None = 1,
                 model: AnalyticModel | None = None) -> AnalyticModelReport:
    """The base report's model on ``workload`` and ``gpu`` (None: the base's GPU).

    max_depth 1 keeps only the stage and top-module nodes (all totals are
    unaffected); None keeps the full tree (needed for per-category rows).
    ``model``: the AnalyticModel of the base's config on ``workload``, built before (the model does not
    depend on the GPU or the calibration, so a sweep reuses it and the sums it keeps); None builds it.
    """
    check_uncalibrated(base)
    spec = gpu if gpu is not None else load_catalog().get(base.gpu_key)
    peaks = peaks_for(base, spec, workload.dtype)
    if model is None:
        model = AnalyticModel(base.model.config, workload)
    elif model.workload != workload or model.config != base.model.config:
        raise ValueError("analyze_like: the model given is not the base's config on this workload")
    return build_report(model, peaks, efficiency=efficiency, report_id=base.report_id, max_depth=max_depth,
                        generated_at=base.generated_at)


def analyze_for_run(run: MeasuredRun, workload: OCRWorkloadProfile, *, catalog: Path | None = None,
                    efficiency: EfficiencyModel | None = None, config: str | None = None) -> AnalyticModelReport:
    """Analytic report of one workload of a run, on the run's GPU (datasheet peaks), full module tree.

    config: 'default', 'tiny' or a config.json path overriding the run's config origin
    (for a run whose checkpoint folder exists only on the machine it ran on).
    """
    if run.gpu_key is None:
        raise UserError(f"{run.report_path}: run has no GPU catalogue key; nothing to predict against")
    spec = load_catalog(catalog).get(run.gpu_key)
    origin = config if config is not None else run.report.model.config_origin
    try:
        model_config = DeepseekOCRConfig.named(origin)
    except UserError as exc:
        raise UserError(f"{exc} (the run's config; name another one: --config default|tiny|PATH for "
                        "compare/calibrate, --model for analyze)") from None
    peaks = RooflinePeaks.from_effective(effective_peaks(spec), workload.dtype)
    return build_report(AnalyticModel(model_config, workload), peaks, efficiency=efficiency,
                        report_id=f"analytic-{run.run_id}-{workload.tile_rows}x{workload.tile_cols}")


def analyze_batch(base: AnalyticModelReport, batch_size: int, *, catalog: Path | None = None,
                  efficiency: EfficiencyModel | None = None) -> AnalyticModelReport:
    """The base report at another batch size (same GPU, peaks and workload otherwise)."""
    spec = load_catalog(catalog).get(base.gpu_key)
    return analyze_like(base, evolve(base.workload, batch_size=batch_size), spec, efficiency=efficiency)


def recompute_with(base: AnalyticModelReport, efficiency: EfficiencyModel, *, catalog: Path | None = None
                   ) -> AnalyticModelReport:
    """The base report's workload and GPU under ``efficiency`` (full tree)."""
    spec = load_catalog(catalog).get(base.gpu_key)
    return analyze_like(base, base.workload, spec, efficiency=efficiency, max_depth=None)
