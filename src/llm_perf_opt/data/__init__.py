"""attrs domain models of llm-perf-opt and their JSON/YAML IO.

Stage 1 profiling: :mod:`llm_perf_opt.data.profile`; analytic model:
:mod:`llm_perf_opt.data.analytic`; shared enums and Stats:
:mod:`llm_perf_opt.data.common`; dump/load: :mod:`llm_perf_opt.data.io`.
"""

from llm_perf_opt.data.analytic import (
    ANALYTIC_REPORT_SCHEMA,
    TARGET_OPERATORS_SCHEMA,
    AnalyticModelReport,
    AnalyticModuleNode,
    DecodeTotals,
    DeepSeekOCRModelSpec,
    MemoryFootprint,
    ModuleMetricsSnapshot,
    OCRWorkloadProfile,
    OperatorCategoryRecord,
    OperatorMetrics,
    PeaksUsed,
    TargetOperatorList,
    WorkTotals,
)
from llm_perf_opt.data.common import (
    AttentionKind,
    Bound,
    ImageCategory,
    ImageSource,
    PeakSource,
    Repetition,
    Stats,
    WeightsSource,
)
from llm_perf_opt.data.io import ReportLoadError, dump, dump_json, dump_yaml, load_report
from llm_perf_opt.data.profile import (
    MAX_UTILIZATION,
    PROFILE_REPORT_SCHEMA,
    PROFILE_SUMMARY_SCHEMA,
    InputImage,
    InputSet,
    LLMProfileReport,
    LLMProfileReportSummary,
    ModelUnderTest,
    OperatorSummary,
    RunMeta,
    SkippedImage,
    StageTiming,
)

__all__ = [
    "ANALYTIC_REPORT_SCHEMA", "MAX_UTILIZATION", "PROFILE_REPORT_SCHEMA", "PROFILE_SUMMARY_SCHEMA",
    "TARGET_OPERATORS_SCHEMA", "AnalyticModelReport", "AnalyticModuleNode", "AttentionKind", "Bound",
    "DecodeTotals", "DeepSeekOCRModelSpec", "ImageCategory", "ImageSource", "InputImage", "InputSet",
    "LLMProfileReport", "LLMProfileReportSummary", "MemoryFootprint", "ModelUnderTest", "ModuleMetricsSnapshot",
    "OCRWorkloadProfile", "OperatorCategoryRecord", "OperatorMetrics", "OperatorSummary", "PeakSource",
    "PeaksUsed", "Repetition", "ReportLoadError", "RunMeta", "SkippedImage", "StageTiming", "Stats",
    "TargetOperatorList", "WeightsSource", "WorkTotals", "dump", "dump_json", "dump_yaml", "load_report",
]
