"""Validation rules of the domain models (spec rules: units, ranges, vocabularies)."""

from __future__ import annotations

import inspect
import math
from typing import Any

import attrs
import pytest
from samples_data import T0, T1, analytic_report, profile_report, totals

from llm_perf_opt import data
from llm_perf_opt.data import (
    AnalyticModelReport,
    AnalyticModuleNode,
    InputImage,
    InputSet,
    ModelUnderTest,
    OCRWorkloadProfile,
    OperatorCategoryRecord,
    OperatorMetrics,
    OperatorSummary,
    PeaksUsed,
    RunMeta,
    StageTiming,
    Stats,
    TargetOperatorList,
)
from llm_perf_opt.data.validators import FieldValueError
from llm_perf_opt.models.deepseek_ocr.modes import token_layout
from llm_perf_opt.vocab import DType, OperatorCategory, Stage

DATA_MODULES = [data.common, data.profile, data.analytic]


def _attrs_classes() -> list[type]:
    classes = []
    for module in DATA_MODULES:
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if attrs.has(obj) and obj.__module__ == module.__name__:
                classes.append(obj)
    return classes


def test_every_field_has_help_and_models_are_kw_only() -> None:
    classes = _attrs_classes()
    assert len(classes) >= 20
    for cls in classes:
        for f in attrs.fields(cls):
            assert f.metadata.get("help", "").strip(), f"{cls.__name__}.{f.name} has no help"
            assert f.kw_only, f"{cls.__name__}.{f.name} is positional"


def _timing(**kw: Any) -> StageTiming:
    base: dict[str, Any] = dict(stage="prefill", image_index=0, repeat_index=0, elapsed_ms=2.0, tokens=10,
                                tokens_per_s=5000.0)
    base.update(kw)
    return StageTiming(**base)


def test_stage_timing_rules() -> None:
    assert _timing().stage is Stage.PREFILL
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(FieldValueError, match="elapsed_ms"):
            _timing(elapsed_ms=bad)
    with pytest.raises(FieldValueError, match="tokens: -1 must be >= 0"):
        _timing(tokens=-1)
    with pytest.raises(FieldValueError, match="tokens_per_s"):
        _timing(tokens_per_s=-0.5)
    assert _timing(tokens=0, tokens_per_s=0.0).tokens == 0
    with pytest.raises(ValueError, match="not a valid Stage"):
        _timing(stage="vision")
    with pytest.raises(FieldValueError, match="image_index"):
        _timing(image_index=-1)


def test_utilisation_range_on_profile_report() -> None:
    report = profile_report()
    fields = {f.name: f for f in attrs.fields(type(report))}
    for value in (0.0, 1.5):
        attrs.validate(attrs.evolve(report, model_mfu=value))
    with pytest.raises(FieldValueError, match=r"model_mfu: 1.51 outside \[0.0, 1.5\]"):
        attrs.evolve(report, model_mfu=1.51)
    with pytest.raises(FieldValueError, match=r"stage_mfu\['decode'\]"):
        attrs.evolve(report, stage_mfu={Stage.DECODE: -0.01})
    with pytest.raises(FieldValueError, match=r"stage_mbu\['prefill'\]"):
        attrs.evolve(report, stage_mbu={Stage.PREFILL: 2.0})
    assert "fraction" in fields["stage_mfu"].metadata["help"]


def test_input_rules() -> None:
    with pytest.raises(FieldValueError, match="images: must not be empty"):
        InputSet(origin="/data", images=[])
    with pytest.raises(FieldValueError, match="is not an absolute path"):
        InputImage(path="relative/a.png", width_px=10, height_px=10, source="folder")
    with pytest.raises(FieldValueError, match="synthetic_id"):
        InputImage(path="/a.png", width_px=10, height_px=10, source="synthetic")
    with pytest.raises(FieldValueError, match="page_index"):
        InputImage(path="/doc.pdf", width_px=10, height_px=10, source="pdf")
    with pytest.raises(FieldValueError, match="page_index"):
        InputImage(path="/a.png", width_px=10, height_px=10, source="folder", page_index=0)
    with pytest.raises(FieldValueError, match="width_px: 0 must be >= 1"):
        InputImage(path="/a.png", width_px=0, height_px=10, source="list")
    with pytest.raises(ValueError, match="not a valid ImageCategory"):
        InputImage(path="/a.png", width_px=1, height_px=1, source="list", category="comic")
    page = InputImage(path="/doc.pdf", width_px=10, height_px=10, source="pdf", page_index=2)
    assert page.ref == "/doc.pdf#page=2"
    windows = InputImage(path="C:\\scans\\a.png", width_px=10, height_px=10, source="list")
    assert windows.ref == "C:\\scans\\a.png"


def test_model_under_test_checkpoint_consistency() -> None:
    base: dict[str, Any] = dict(name="m", config_origin="default", dtype="bf16", device="cuda:0",
                                attn_implementation="sdpa", parameter_count=10)
    with pytest.raises(FieldValueError, match="checkpoint_path: required"):
        ModelUnderTest(weights="checkpoint", **base)
    with pytest.raises(FieldValueError, match="checkpoint_path: must be null"):
        ModelUnderTest(weights="random", checkpoint_path="/ckpt", **base)
    with pytest.raises(FieldValueError, match="is not an absolute path"):
        ModelUnderTest(weights="checkpoint", checkpoint_path="ckpt", **base)
    ok = ModelUnderTest(weights="checkpoint", checkpoint_path="/models/DeepSeek-OCR", **base)
    assert ok.dtype is DType.BF16
    with pytest.raises(ValueError, match="not a valid DType"):
        ModelUnderTest(weights="random", **{**base, "dtype": "int4"})


def test_run_meta_rules() -> None:
    meta = profile_report().meta
    with pytest.raises(FieldValueError, match="finished_at"):
        attrs.evolve(meta, started_at=T1, finished_at=T0)
    with pytest.raises(FieldValueError, match="no timezone offset"):
        attrs.evolve(meta, started_at=T0.replace(tzinfo=None))
    with pytest.raises(FieldValueError, match="run_id"):
        attrs.evolve(meta, run_id="../escape")
    with pytest.raises(FieldValueError, match="not a resolution mode"):
        attrs.evolve(meta, mode="huge")
    assert meta.duration_s == pytest.approx(210.0)
    assert isinstance(meta, RunMeta)


def test_profile_report_cross_checks_and_summary() -> None:
    report = profile_report()
    with pytest.raises(FieldValueError, match=r"stage_timings\[0\].repeat_index"):
        attrs.evolve(report, stage_timings=[_timing(repeat_index=5)])
    summary = report.summary()
    assert summary.num_images == 3
    assert summary.num_skipped == 1
    assert summary.stage_mean_ms[Stage.PREFILL] == pytest.approx(report.stage_ms[Stage.PREFILL].mean)
    assert summary.model_mfu == report.model_mfu


def test_operator_summary_share() -> None:
    row = profile_report().operators[0]
    with pytest.raises(FieldValueError, match="share_of_total"):
        attrs.evolve(row, share_of_total=1.2)
    with pytest.raises(ValueError):
        OperatorSummary(op_name="x", category="matmul", calls=1, self_cuda_time_ms=0.0, self_cpu_time_ms=0.0,
                        total_cpu_time_ms=0.0, share_of_total=0.0)


def test_stats_from_values_matches_definitions() -> None:
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    s = Stats.from_values(values)
    n = len(values)
    mean = sum(values) / n
    assert s.mean == pytest.approx(mean)
    assert s.std == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / n))
    assert (s.min, s.max, s.count) == (1.0, 9.0, 8)
    # linear interpolation: sorted = 1 1 2 3 4 5 6 9; p50 at 3.5 -> 3.5; p90 at 6.3 -> 6 + 0.3*3
    assert s.p50 == pytest.approx(3.5)
    assert s.p90 == pytest.approx(6.9)
    assert Stats.from_values([7.0]).std == 0.0
    with pytest.raises(ValueError):
        Stats.from_values([])
    with pytest.raises(ValueError):
        Stats.from_values([1.0, math.nan])
    with pytest.raises(FieldValueError, match="p50"):
        Stats(mean=1.0, std=0.0, min=1.0, max=2.0, p50=0.5, p90=2.0, count=2)
    with pytest.raises(FieldValueError, match="count"):
        Stats(mean=1.0, std=0.0, min=1.0, max=1.0, p50=1.0, p90=1.0, count=0)
    assert s.scaled(1000.0).p90 == pytest.approx(6900.0)


def test_workload_tile_grid_follows_token_layout() -> None:
    w = OCRWorkloadProfile.create(profile_id="g", mode="gundam", image_width_px=1700, image_height_px=2200,
                                  prompt_text_tokens=12, max_new_tokens=10)
    layout = token_layout("gundam", 1700, 2200)
    assert (w.tile_rows, w.tile_cols) == (layout.rows, layout.cols)
    assert w.prefill_tokens == layout.prompt_slots + 12
    with pytest.raises(FieldValueError, match="tile_rows"):
        attrs.evolve(w, tile_rows=w.tile_rows + 1)
    base = OCRWorkloadProfile.create(profile_id="b", mode="base", image_width_px=1700, image_height_px=2200,
                                     prompt_text_tokens=0, max_new_tokens=1)
    assert (base.tile_rows, base.tile_cols) == (1, 1)
    with pytest.raises(FieldValueError, match="batch_size"):
        attrs.evolve(base, batch_size=0)
    with pytest.raises(FieldValueError, match="not a resolution mode"):
        attrs.evolve(base, mode="ultra")
    with pytest.raises(ValueError, match="not a valid DType"):
        attrs.evolve(base, dtype="int8")


def test_module_node_and_tree_rules() -> None:
    with pytest.raises(FieldValueError, match="repetition_count"):
        AnalyticModuleNode(module_id="a", name="a", class_name="A", repetition="none", repetition_count=2)
    with pytest.raises(FieldValueError, match="repetition_count"):
        AnalyticModuleNode(module_id="a", name="a", class_name="A", repetition="for", repetition_count=0)
    with pytest.raises(ValueError, match="not a valid Repetition"):
        AnalyticModuleNode(module_id="a", name="a", class_name="A", repetition="while")
    report = analytic_report()
    assert report.node("model.layers").repetition_count == 12
    assert report.snapshot("model.sam").total_flops == pytest.approx(1e12 + 1e9)
    dup = [*report.modules, report.modules[1]]
    with pytest.raises(FieldValueError, match=r"modules\[3\].module_id"):
        attrs.evolve(report, modules=dup)
    orphan = attrs.evolve(report.modules[1], parent_id="nowhere")
    with pytest.raises(FieldValueError, match="parent_id"):
        attrs.evolve(report, modules=[report.modules[0], orphan, report.modules[2]])
    stray = attrs.evolve(report.snapshots[0], module_id="model.clip")
    with pytest.raises(FieldValueError, match=r"snapshots\[0\].module_id"):
        attrs.evolve(report, snapshots=[stray])
    assert isinstance(report, AnalyticModelReport)


def test_metrics_and_peaks_rules() -> None:
    with pytest.raises(FieldValueError, match="share_of_module_flops"):
        OperatorMetrics(category="gemm", tensor_core_flops=1.0, cuda_core_flops=0.0, io_bytes=1.0,
                        share_of_module_flops=1.1)
    with pytest.raises(FieldValueError, match="io_bytes"):
        OperatorMetrics(category="gemm", tensor_core_flops=1.0, cuda_core_flops=0.0, io_bytes=-1.0,
                        share_of_module_flops=0.5)
    peaks = analytic_report().peaks
    with pytest.raises(FieldValueError, match="memory_bytes_per_s"):
        attrs.evolve(peaks, memory_bytes_per_s=0.0)
    with pytest.raises(FieldValueError, match=r"efficiencies\['gemm'\]"):
        attrs.evolve(peaks, efficiencies={OperatorCategory.GEMM: 1.2})
    with pytest.raises(ValueError, match="not a valid PeakSource"):
        attrs.evolve(peaks, source="guess")
    assert isinstance(peaks, PeaksUsed)
    assert totals(2.0).total_flops == pytest.approx(4e12 + 2e10)


def test_target_operator_list_and_category_record() -> None:
    tol = TargetOperatorList(
        module_classes={"Linear": "gemm"}, aten_ops={"aten::mm": OperatorCategory.GEMM},
        kernel_patterns={"flash": "attention", "gemm": "gemm"},
    )
    assert tol.module_classes["Linear"] is OperatorCategory.GEMM
    assert tol.categorize_aten("mm") is OperatorCategory.GEMM
    assert tol.categorize_aten("aten::relu") is OperatorCategory.UNCATEGORIZED
    assert tol.categorize_kernel("flash_fwd_gemm_kernel") is OperatorCategory.ATTENTION
    assert tol.categorize_kernel("elementwise_kernel") is OperatorCategory.UNCATEGORIZED
    assert tol.categorize_module("Conv2d") is OperatorCategory.UNCATEGORIZED
    with pytest.raises(FieldValueError, match=r"aten_ops\['aten::mm'\]: 'matmul' is not an operator category"):
        TargetOperatorList(aten_ops={"aten::mm": "matmul"})  # type: ignore[dict-item]
    with pytest.raises(FieldValueError, match="not a valid regex"):
        TargetOperatorList(kernel_patterns={"(unclosed": OperatorCategory.GEMM})
    with pytest.raises(FieldValueError, match=r"match_patterns\[0\]"):
        OperatorCategoryRecord(category_id="gemm", display_name="GEMM", match_patterns=["[bad"])
    with pytest.raises(ValueError, match="not a valid OperatorCategory"):
        OperatorCategoryRecord(category_id="matmul", display_name="GEMM")
