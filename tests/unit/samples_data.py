"""Small valid instances of every report type (shared by the data/IO/contract tests)."""

from __future__ import annotations

from datetime import UTC, datetime

from llm_perf_opt.data import (
    AnalyticModelReport,
    AnalyticModuleNode,
    DecodeTotals,
    DeepSeekOCRModelSpec,
    InputImage,
    InputSet,
    LLMProfileReport,
    MemoryFootprint,
    ModelUnderTest,
    ModuleMetricsSnapshot,
    OCRWorkloadProfile,
    OperatorCategoryRecord,
    OperatorMetrics,
    OperatorSummary,
    PeaksUsed,
    RunMeta,
    SkippedImage,
    StageTiming,
    Stats,
    TargetOperatorList,
    WorkTotals,
)
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.vocab import DType, OperatorCategory, Stage

T0 = datetime(2026, 11, 22, 5, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 22, 5, 3, 30, tzinfo=UTC)


def profile_report() -> LLMProfileReport:
    images = [
        InputImage(path="/data/pages/a.png", width_px=1700, height_px=2200, category="text_heavy", source="folder"),
        InputImage(path="/data/doc.pdf", width_px=1224, height_px=1584, source="pdf", page_index=3),
        InputImage(synthetic_id="synthetic:image_rich:0", width_px=1024, height_px=1024,
                   category="image_rich", source="synthetic"),
    ]
    timings = [
        StageTiming(stage=stage, image_index=i, repeat_index=r, elapsed_ms=1.5 + i + r, tokens=100,
                    tokens_per_s=100 / ((1.5 + i + r) / 1000))
        for i in range(3) for r in range(2) for stage in (Stage.PREFILL, Stage.DECODE)
    ]
    stage_ms = {s: Stats.from_values([t.elapsed_ms for t in timings if t.stage is s])
                for s in (Stage.PREFILL, Stage.DECODE)}
    return LLMProfileReport(
        meta=RunMeta(run_id="run-20261122T050000Z", started_at=T0, finished_at=T1, device_name="NVIDIA H100 80GB HBM3",
                     gpu_key="h100-sxm", torch_version="2.11.0", transformers_version="5.17.0",
                     git_revision="abc1234", mode="gundam", batch_size=1, max_new_tokens=64, fixed_length=True,
                     repeats=2, warmup=1),
        model=ModelUnderTest(name="deepseek-ocr", config_origin="default", weights="random", dtype=DType.BF16,
                             device="cuda:0", attn_implementation="sdpa", parameter_count=3_336_106_240),
        inputs=InputSet(origin="/data/pages", images=images),
        stage_timings=timings,
        stage_ms=stage_ms,
        stage_tokens_per_s={Stage.DECODE: Stats.from_values([t.tokens_per_s for t in timings
                                                             if t.stage is Stage.DECODE])},
        pages_per_s=Stats.from_values([0.5, 0.6, 0.7]),
        preprocessing_ms=Stats.from_values([12.0, 13.5]),
        stage_mfu={Stage.PREFILL: 0.41, Stage.DECODE: 0.02},
        model_mfu=0.12,
        stage_mbu={Stage.DECODE: 0.55},
        operators=[OperatorSummary(op_name="aten::mm", category=OperatorCategory.GEMM, calls=120,
                                   self_cuda_time_ms=40.0, self_cpu_time_ms=3.0, total_cpu_time_ms=5.0,
                                   share_of_total=0.6)],
        skipped_images=[SkippedImage(ref="/data/pages/broken.png", reason="not an image (PIL: cannot identify)")],
        peak_memory_bytes=7_000_000_000,
        notes=["MFU against datasheet peaks"],
    )


def totals(scale: float = 1.0) -> WorkTotals:
    return WorkTotals(tensor_core_flops=2e12 * scale, cuda_core_flops=1e10 * scale, io_bytes=8e9 * scale,
                      time_ms=3.0 * scale)


def analytic_report() -> AnalyticModelReport:
    cfg = DeepseekOCRConfig.default()
    workload = OCRWorkloadProfile.create(profile_id="gundam-1700x2200", mode="gundam", image_width_px=1700,
                                         image_height_px=2200, prompt_text_tokens=12, max_new_tokens=256)
    nodes = [
        AnalyticModuleNode(module_id="model", name="model", class_name="DeepseekOCRModel",
                           children_ids=["model.sam", "model.layers"]),
        AnalyticModuleNode(module_id="model.sam", name="sam", class_name="SamEncoder", stage=Stage.VISION_SAM,
                           parent_id="model"),
        AnalyticModuleNode(module_id="model.layers", name="layers", class_name="DecoderLayer", stage="prefill",
                           parent_id="model", repetition="for", repetition_count=12),
    ]
    snaps = [
        ModuleMetricsSnapshot(module_id="model.sam", tensor_core_flops=1e12, cuda_core_flops=1e9, io_bytes=2e9,
                              arithmetic_intensity_flops_per_byte=500.5, weight_bytes=1.8e8,
                              activation_bytes=5e7, roofline_time_ms=1.5, bound="compute",
                              operator_breakdown=[OperatorMetrics(category="gemm", tensor_core_flops=1e12,
                                                                  cuda_core_flops=0.0, io_bytes=1e9,
                                                                  share_of_module_flops=0.999)]),
        ModuleMetricsSnapshot(module_id="model.layers", tensor_core_flops=4e12, cuda_core_flops=1e9, io_bytes=6e9,
                              arithmetic_intensity_flops_per_byte=666.8, weight_bytes=5.8e9, activation_bytes=1e8,
                              kv_cache_bytes=2.5e7, roofline_time_ms=2.5, bound="memory"),
    ]
    return AnalyticModelReport(
        report_id="dsocr-h100-gundam", model=DeepSeekOCRModelSpec.from_config(cfg, parameter_count=3_336_106_240),
        workload=workload, gpu_key="h100-sxm",
        peaks=PeaksUsed(source="datasheet", source_ref="hardware catalogue h100-sxm (NVIDIA H100 datasheet)",
                        tensor_core_flops_per_s=989e12, cuda_core_flops_per_s=67e12, memory_bytes_per_s=3.35e12,
                        memory_capacity_bytes=80e9, launch_overhead_ms=0.004,
                        efficiencies={OperatorCategory.GEMM: 0.8}),
        modules=nodes, snapshots=snaps,
        stage_totals={Stage.VISION_SAM: totals(0.5), Stage.PREFILL: totals(1.0), Stage.DECODE: totals(2.0)},
        decode=DecodeTotals(tokens=256, per_token=totals(2.0 / 256), total=totals(2.0)),
        model_totals=totals(3.5),
        memory=MemoryFootprint(weights_bytes=6.67e9, kv_cache_bytes=3.1e7, activation_peak_bytes=4e8,
                               max_batch_size=64),
        generated_at=T1, notes=["pure roofline (datasheet peaks)"],
    )


def target_operator_list() -> TargetOperatorList:
    return TargetOperatorList(
        module_classes={"Linear": OperatorCategory.GEMM, "SamAttention": OperatorCategory.ATTENTION},
        aten_ops={"aten::mm": OperatorCategory.GEMM, "aten::layer_norm": OperatorCategory.NORM},
        kernel_patterns={r"flash|fmha": OperatorCategory.ATTENTION, r"gemm|cutlass": OperatorCategory.GEMM},
    )


def category_record() -> OperatorCategoryRecord:
    return OperatorCategoryRecord(category_id="attention", display_name="Attention",
                                  description="scores, softmax, weighted sum", match_patterns=[r"flash|fmha"])
