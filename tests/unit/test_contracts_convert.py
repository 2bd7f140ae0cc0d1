"""Domain reports -> contract views/summaries (units, top-k, ratios) and contract round trips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from samples_data import analytic_report, category_record, profile_report

from llm_perf_opt.contracts import (
    CONTRACT_CLASSES,
    AnalyticModelView,
    DeepSeekOCRAnalyticRequest,
    LLMProfileRequest,
    ModuleMetricsView,
    OperatorCategoryView,
    converter,
    from_json_dict,
    to_analytic_summary,
    to_analytic_view,
    to_json_dict,
    to_profile_summary,
)
from llm_perf_opt.data import ReportLoadError, load_report
from llm_perf_opt.data.validators import FieldValueError
from llm_perf_opt.vocab import DType, OperatorCategory, Stage


def test_profile_summary_units() -> None:
    report = profile_report()
    summary = to_profile_summary(report)
    assert summary.run_id == report.meta.run_id
    assert summary.peak_memory_gb == pytest.approx(report.peak_memory_bytes / 1e9)  # type: ignore[operator]
    assert summary.stage_mean_ms[Stage.PREFILL] == pytest.approx(report.stage_ms[Stage.PREFILL].mean)
    assert summary.stage_p90_ms[Stage.DECODE] == pytest.approx(report.stage_ms[Stage.DECODE].p90)
    assert summary.decode_tokens_per_s == pytest.approx(report.stage_tokens_per_s[Stage.DECODE].mean)
    assert summary.num_images == 3 and summary.num_skipped == 1
    data = to_json_dict(summary)
    assert data["stage_mean_ms"] == {"prefill": pytest.approx(3.0), "decode": pytest.approx(3.0)}
    assert from_json_dict(data, type(summary)) == summary


def test_analytic_summary_units_top_k_and_ratio() -> None:
    report = analytic_report()
    summary = to_analytic_summary(report, top_k=1, measured_total_time_ms=21.0)
    assert summary.total_flops_tflops == pytest.approx(report.model_totals.total_flops / 1e12)
    assert summary.total_io_tb == pytest.approx(report.model_totals.io_bytes / 1e12)
    assert summary.weights_gb == pytest.approx(6.67)
    assert summary.predicted_total_time_ms == pytest.approx(10.5)
    assert summary.predicted_vs_measured_ratio == pytest.approx(10.5 / 21.0)
    assert summary.stage_time_ms[Stage.DECODE] == pytest.approx(6.0)
    # Only leaves (nodes without children) compete; the root never appears.
    assert [m.module_id for m in summary.top_modules] == ["model.layers"]
    top = summary.top_modules[0]
    assert top.share_of_total_time == pytest.approx(2.5 / 10.5)
    assert top.flops_tflops == pytest.approx((4e12 + 1e9) / 1e12)
    both = to_analytic_summary(report, top_k=5)
    assert [m.module_id for m in both.top_modules] == ["model.layers", "model.sam"]
    assert both.measured_total_time_ms is None and both.predicted_vs_measured_ratio is None
    assert both.workload.image_tokens == report.workload.layout.prompt_slots
    with pytest.raises(ValueError):
        to_analytic_summary(report, top_k=0)
    round_tripped = from_json_dict(json.loads(json.dumps(to_json_dict(summary))), type(summary))
    assert round_tripped == summary


def test_hooks_are_registered_on_the_converter() -> None:
    report = analytic_report()
    view = converter.structure(report, AnalyticModelView)
    assert view == to_analytic_view(report)
    assert view.model.hidden_size == report.model.config.language.hidden_size
    assert view.stage_totals[Stage.PREFILL].flops_tflops == pytest.approx((2e12 + 1e10) / 1e12)
    metrics = converter.structure(report.snapshots[0], ModuleMetricsView)
    assert metrics.io_tb == pytest.approx(2e9 / 1e12)
    assert metrics.operator_breakdown[0].category is OperatorCategory.GEMM
    assert metrics.weights_gb == pytest.approx(0.18)
    cat = converter.structure(category_record(), OperatorCategoryView)
    assert cat.category_id is OperatorCategory.ATTENTION
    # Plain dicts still structure through the generated hook.
    assert converter.structure(to_json_dict(view), AnalyticModelView) == view


def _sample_contract(name: str) -> Any:
    report = analytic_report()
    samples: dict[str, Any] = {
        "LLMProfileRequest": LLMProfileRequest(synthetic_pages=4),
        "DeepSeekOCRAnalyticRequest": DeepSeekOCRAnalyticRequest(gpu_key="h100-sxm", mode="gundam",
                                                                image_width_px=1700, image_height_px=2200,
                                                                max_new_tokens=256, dtype=DType.FP16),
        "LLMProfileReportSummary": to_profile_summary(profile_report()),
        "DeepSeekOCRAnalyticReportSummary": to_analytic_summary(report, 3, 20.0),
        "AnalyticModelView": to_analytic_view(report),
    }
    return samples.get(name)


@pytest.mark.parametrize("name", sorted(CONTRACT_CLASSES))
def test_contract_round_trip(tmp_path: Path, name: str) -> None:
    obj = _sample_contract(name)
    if obj is None:
        view = to_analytic_view(analytic_report())
        nested = {"ModelSpecView": view.model, "WorkloadProfileView": view.workload,
                  "AnalyticModuleNodeView": view.modules[2], "ModuleMetricsView": view.metrics[0],
                  "OperatorMetricsView": view.metrics[0].operator_breakdown[0],
                  "StageTotalsView": view.stage_totals[Stage.PREFILL],
                  "AnalyticModuleSummary": to_analytic_summary(analytic_report()).top_modules[0],
                  "OperatorCategoryView": converter.structure(category_record(), OperatorCategoryView)}
        obj = nested.get(name)
    if obj is None:
        cls = CONTRACT_CLASSES[name]
        required = [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING]
        obj = cls(**{f: ("run-1" if f == "run_id" else "r-1" if f == "report_id" else "/tmp/x") for f in required})
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(to_json_dict(obj)))
    assert load_report(path, type(obj)) == obj


def test_requests_validate() -> None:
    assert LLMProfileRequest().synthetic_pages is None
    with pytest.raises(FieldValueError, match="synthetic_pages: 0 must be >= 1"):
        LLMProfileRequest(synthetic_pages=0)
    with pytest.raises(FieldValueError, match="is not an absolute path"):
        LLMProfileRequest(checkpoint_path="models/ocr")
    with pytest.raises(FieldValueError, match="run_id"):
        LLMProfileRequest(run_id="a/b")
    assert DeepSeekOCRAnalyticRequest().gpu_key is None
    with pytest.raises(FieldValueError, match="give both"):
        DeepSeekOCRAnalyticRequest(image_width_px=100)
    with pytest.raises(FieldValueError, match="max_new_tokens"):
        DeepSeekOCRAnalyticRequest(max_new_tokens=0)


def test_bad_request_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "req.json"
    path.write_text(json.dumps({"gpu_key": "h100-sxm", "mode": "gundam", "image_width_px": 0,
                                "image_height_px": 10, "max_new_tokens": 4}))
    bad_dtype = tmp_path / "req2.yaml"
    bad_dtype.write_text("dtype: int4\n")
    with pytest.raises(ReportLoadError, match=r"req2.yaml: field dtype: not one of bf16, fp16"):
        load_report(bad_dtype, DeepSeekOCRAnalyticRequest)
    with pytest.raises(ReportLoadError) as info:
        load_report(path, DeepSeekOCRAnalyticRequest)
    assert str(info.value) == f"{path}: field image_width_px: 0 must be >= 1"
