"""Request/response contracts (contract units: TFLOPs, TB, GB, ms) and their converter.

Classes: :mod:`llm_perf_opt.contracts.models`; domain -> contract conversion:
:mod:`llm_perf_opt.contracts.convert`. The OpenAPI documents under
``specs/*/contracts/openapi.yaml`` describe every class in :data:`CONTRACT_CLASSES`.
"""

from llm_perf_opt.contracts.convert import (
    converter,
    from_json_dict,
    to_analytic_summary,
    to_analytic_view,
    to_json_dict,
    to_profile_summary,
)
from llm_perf_opt.contracts.models import (
    AnalyticModelView,
    AnalyticModuleNodeView,
    AnalyticModuleSummary,
    DeepSeekOCRAnalyticAccepted,
    DeepSeekOCRAnalyticReportSummary,
    DeepSeekOCRAnalyticRequest,
    LLMProfileAccepted,
    LLMProfileReportSummary,
    LLMProfileRequest,
    ModelSpecView,
    ModuleMetricsView,
    OperatorCategoryView,
    OperatorMetricsView,
    StageTotalsView,
    WorkloadProfileView,
)

#: Every contract class, by schema name (the OpenAPI component names).
CONTRACT_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        LLMProfileRequest, LLMProfileAccepted, LLMProfileReportSummary,
        DeepSeekOCRAnalyticRequest, DeepSeekOCRAnalyticAccepted, DeepSeekOCRAnalyticReportSummary,
        AnalyticModuleSummary, ModelSpecView, WorkloadProfileView, AnalyticModuleNodeView,
        OperatorCategoryView, OperatorMetricsView, ModuleMetricsView, StageTotalsView, AnalyticModelView,
    )
}

__all__ = [
    "CONTRACT_CLASSES", "AnalyticModelView", "AnalyticModuleNodeView", "AnalyticModuleSummary",
    "DeepSeekOCRAnalyticAccepted", "DeepSeekOCRAnalyticReportSummary", "DeepSeekOCRAnalyticRequest",
    "LLMProfileAccepted", "LLMProfileReportSummary", "LLMProfileRequest", "ModelSpecView", "ModuleMetricsView",
    "OperatorCategoryView", "OperatorMetricsView", "StageTotalsView", "WorkloadProfileView", "converter",
    "from_json_dict", "to_analytic_summary", "to_analytic_view", "to_json_dict", "to_profile_summary",
]
