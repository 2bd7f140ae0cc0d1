"""Library front of the analytic model ("ModelMeter"): config + workload + GPU -> AnalyticModelReport.

Fast path (no torch, no model build, no weights)::

    from llm_perf_opt.runners.dsocr_analyzer import DeepseekOCRStaticAnalyzer
    analyzer = DeepseekOCRStaticAnalyzer()
    report = analyzer.analyze(config, workload, "h100-sxm")          # AnalyticModelReport
    report.stage_totals[Stage.PREFILL].tensor_core_flops               # FLOPs of the decoder prefill
    report.decode.per_token.io_bytes                                   # bytes of one decode step
    analyzer.rebuild(saved_report, workload=new_workload)              # what-if from a saved report

``write_outputs`` renders report.json / report.yaml / summary.json / layers/*.md
under ``<output_dir>/static_analysis/analytic_model/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm_perf_opt.analytic.calibration import Calibration, EfficiencyModel, check_applies, load_calibration
from llm_perf_opt.analytic.docs import write_layer_docs
from llm_perf_opt.analytic.model import AnalyticModel, Routing
from llm_perf_opt.analytic.report import build_report
from llm_perf_opt.analytic.roofline import RooflinePeaks
from llm_perf_opt.data.analytic import AnalyticModelReport, OCRWorkloadProfile
from llm_perf_opt.data.io import dump_json, dump_yaml
from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware import (
    GpuCatalog,
    GpuSpec,
    MeasuredCeilings,
    effective_peaks,
    load_catalog,
    load_ceilings,
)
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.vocab import Stage

#: GPU used when none is named (the project's reference machine, tests/data/gpu-measurements.md).
DEFAULT_GPU = "h100-sxm"
#: Folder of the analytic outputs inside a run folder.
ANALYTIC_SUBDIR = Path("static_analysis") / "analytic_model"


class DeepseekOCRStaticAnalyzer:
    """Analytic model of DeepSeek-OCR on catalogued GPUs (one catalogue loaded once)."""

    def __init__(self, catalog: GpuCatalog | None = None) -> None:
        self.catalog = catalog or load_catalog()

    def gpu(self, gpu: str | GpuSpec) -> GpuSpec:
        """GpuSpec by key/alias (UnknownGpuError lists the known keys) or as given."""
        return gpu if isinstance(gpu, GpuSpec) else self.catalog.get(gpu)

    def peaks(self, config_dtype: Any, gpu: str | GpuSpec,
              ceilings: MeasuredCeilings | str | Path | None = None) -> RooflinePeaks:
        """Datasheet peaks of ``gpu`` (measured ceilings replace them when given) for the workload dtype."""
        spec = self.gpu(gpu)
        if isinstance(ceilings, str | Path):
            ceilings = load_ceilings(Path(ceilings))
        return RooflinePeaks.from_effective(effective_peaks(spec, ceilings), config_dtype)

    def analyze(self, config: DeepseekOCRConfig, workload: OCRWorkloadProfile, gpu: str | GpuSpec = DEFAULT_GPU,
                ceilings: MeasuredCeilings | str | Path | None = None, *,
                calibration: EfficiencyModel | str | Path | None = None, max_depth: int | None = None,
                routing_prefill: Routing | None = None, routing_decode: Routing | None = None,
                report_id: str | None = None, notes: Sequence[str] = ()) -> AnalyticModelReport:
        """The analytic report of ``config`` running ``workload`` on ``gpu``.

        ``ceilings``: measured ceilings (object or file) instead of datasheet peaks.
        ``calibration``: efficiencies + launch cost (object or file; default pure roofline).
        ``max_depth``: module-tree depth kept per stage (None = all; 1 = top modules, fastest).
        ``routing_*``: tokens per expert per MoE layer from a real run (else uniform-routing expectation).
        """
        spec = self.gpu(gpu)
        peaks = self.peaks(workload.dtype, spec, ceilings)
        eff: EfficiencyModel | None
        extra = list(notes)
        eff = load_calibration(calibration) if isinstance(calibration, str | Path) else calibration
        if isinstance(eff, Calibration):
            extra.extend(check_applies(eff, spec.key, dtype=str(workload.dtype)))
        model = AnalyticModel(config, workload, routing_prefill=routing_prefill, routing_decode=routing_decode)
        return build_report(model, peaks, efficiency=eff, report_id=report_id, max_depth=max_depth,
                            extra_notes=extra)

    def rebuild(self, report: AnalyticModelReport, *, workload: OCRWorkloadProfile | None = None,
                gpu: str | GpuSpec | None = None, ceilings: MeasuredCeilings | str | Path | None = None,
                calibration: EfficiencyModel | str | Path | None = None, max_depth: int | None = None,
                report_id: str | None = None) -> AnalyticModelReport:
        """A new report from a saved one's model spec, with the workload and/or GPU changed (what-if)."""
        return self.analyze(report.model.to_config(), workload or report.workload, gpu or report.gpu_key,
                            ceilings, calibration=calibration, max_depth=max_depth, report_id=report_id)


def analyze(config: DeepseekOCRConfig, workload: OCRWorkloadProfile, gpu: str | GpuSpec = DEFAULT_GPU,
            ceilings: MeasuredCeilings | str | Path | None = None, **kwargs: Any) -> AnalyticModelReport:
    """Module-level shortcut of :meth:`DeepseekOCRStaticAnalyzer.analyze` (catalogue loaded per call)."""
    return DeepseekOCRStaticAnalyzer().analyze(config, workload, gpu, ceilings, **kwargs)


def stage_flops_bytes(report: AnalyticModelReport) -> dict[Stage, tuple[float, float]]:
    """(total FLOPs, io bytes) per stage of a report; DECODE is summed over all steps.

    For MFU/MBU: divide by the measured stage time and the peaks in ``report.peaks``.
    The measured 'prefill' range holds the vision stages too: add VISION_SAM,
    VISION_CLIP and PROJECTOR to PREFILL to compare with it.
    """
    return {stage: (t.total_flops, t.io_bytes) for stage, t in report.stage_totals.items()}


def output_folder(output_dir: str | Path) -> Path:
    """``<output_dir>/static_analysis/analytic_model``."""
    return Path(output_dir) / ANALYTIC_SUBDIR


def write_outputs(report: AnalyticModelReport, output_dir: str | Path,
                  measured_total_time_ms: float | None = None) -> Path:
    """Write report.json, report.yaml, summary.json and layers/*.md; returns report.json's path.

    ``measured_total_time_ms`` (a Stage 1 run's measured total, ms) fills the summary's
    measured total and predicted/measured ratio. Refuses to overwrite an existing report
    (every run has its own folder).
    """
    from llm_perf_opt.contracts.convert import to_analytic_summary, to_json_dict

    folder = output_folder(output_dir)
    target = folder / "report.json"
    if target.exists():
        raise UserError(f"{target} already exists; choose a new --output-dir (runs are never overwritten)")
    import json

    try:
        folder.mkdir(parents=True, exist_ok=True)
        dump_json(report, target)
        dump_yaml(report, folder / "report.yaml")
        summary = to_json_dict(to_analytic_summary(report, measured_total_time_ms=measured_total_time_ms))
        (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        write_layer_docs(report, folder / "layers")
    except OSError as exc:
        raise UserError(f"{folder}: cannot write the report ({exc.strerror or exc})") from exc
    return target
