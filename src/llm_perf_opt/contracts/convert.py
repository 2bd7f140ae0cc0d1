"""The contracts' cattrs converter: domain reports -> contract views and summaries.

``converter.structure(domain_obj, ViewClass)`` turns a domain object into its
contract view through a registered hook (base units -> TFLOPs/TB/GB); plain
dicts still structure as usual (requests read from JSON). Entry points:
:func:`to_profile_summary`, :func:`to_analytic_summary`, :func:`to_analytic_view`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import cattrs

from llm_perf_opt.contracts.models import (
    BYTES_PER_GB,
    BYTES_PER_TB,
    FLOPS_PER_TFLOP,
    AnalyticModelView,
    AnalyticModuleNodeView,
    AnalyticModuleSummary,
    DeepSeekOCRAnalyticReportSummary,
    LLMProfileReportSummary,
    ModelSpecView,
    ModuleMetricsView,
    OperatorCategoryView,
    OperatorMetricsView,
    StageTotalsView,
    WorkloadProfileView,
)
from llm_perf_opt.data import analytic as dom
from llm_perf_opt.data import profile as prof
from llm_perf_opt.data.io import make_converter
from llm_perf_opt.vocab import Stage

T = TypeVar("T")
D = TypeVar("D")

#: The one converter of the contract layer (same enum/datetime handling as the data IO).
converter: cattrs.Converter = make_converter()


def _register(view: type[T], domain: type[D], build: Callable[[D], T]) -> None:
    """Structure ``view`` from a ``domain`` instance with ``build``; dicts keep the generated hook."""
    from_dict = converter.get_structure_hook(view)

    def hook(obj: Any, cls: type[T]) -> T:
        if isinstance(obj, domain):
            return build(obj)
        return from_dict(obj, cls)

    converter.register_structure_hook(view, hook)


def _tflops(flops: float) -> float:
    return flops / FLOPS_PER_TFLOP


def _tb(nbytes: float) -> float:
    return nbytes / BYTES_PER_TB


def _gb(nbytes: float) -> float:
    return nbytes / BYTES_PER_GB


def _model_spec_view(spec: dom.DeepSeekOCRModelSpec) -> ModelSpecView:
    cfg = spec.config
    lang = cfg.language
    return ModelSpecView(
        config_name=cfg.name, parameter_count=spec.parameter_count, sam_width=cfg.sam.width,
        sam_depth=cfg.sam.depth, clip_width=cfg.clip.width, clip_layers=cfg.clip.layers,
        projector_input_dim=cfg.projector.input_dim, hidden_size=lang.hidden_size,
        num_hidden_layers=lang.num_hidden_layers, num_attention_heads=lang.num_attention_heads,
        num_key_value_heads=lang.num_key_value_heads, n_routed_experts=lang.n_routed_experts,
        num_experts_per_tok=lang.num_experts_per_tok, n_shared_experts=lang.n_shared_experts,
        vocab_size=lang.vocab_size,
    )


def _workload_view(w: dom.OCRWorkloadProfile) -> WorkloadProfileView:
    return WorkloadProfileView(
        profile_id=w.profile_id, mode=w.mode, image_width_px=w.image_width_px, image_height_px=w.image_height_px,
        tile_rows=w.tile_rows, tile_cols=w.tile_cols, image_tokens=w.layout.prompt_slots,
        prompt_text_tokens=w.prompt_text_tokens, max_new_tokens=w.max_new_tokens, batch_size=w.batch_size,
        dtype=w.dtype, attention=w.attention, experts=w.experts, no_repeat_ngram_size=w.no_repeat_ngram_size,
    )


def _node_view(n: dom.AnalyticModuleNode) -> AnalyticModuleNodeView:
    return AnalyticModuleNodeView(
        module_id=n.module_id, name=n.name, class_name=n.class_name, stage=n.stage, parent_id=n.parent_id,
        children_ids=list(n.children_ids), repetition=n.repetition, repetition_count=n.repetition_count,
    )


def _category_view(c: dom.OperatorCategoryRecord) -> OperatorCategoryView:
    return OperatorCategoryView(category_id=c.category_id, display_name=c.display_name,
                                description=c.description, match_patterns=list(c.match_patterns))


def _op_metrics_view(m: dom.OperatorMetrics) -> OperatorMetricsView:
    return OperatorMetricsView(
        category=m.category, flops_tflops=_tflops(m.total_flops),
        tensor_core_flops_tflops=_tflops(m.tensor_core_flops), cuda_core_flops_tflops=_tflops(m.cuda_core_flops),
        io_tb=_tb(m.io_bytes), share_of_module_flops=m.share_of_module_flops,
    )


def _module_metrics_view(s: dom.ModuleMetricsSnapshot) -> ModuleMetricsView:
    return ModuleMetricsView(
        module_id=s.module_id, flops_tflops=_tflops(s.total_flops),
        tensor_core_flops_tflops=_tflops(s.tensor_core_flops), cuda_core_flops_tflops=_tflops(s.cuda_core_flops),
        io_tb=_tb(s.io_bytes), arithmetic_intensity_flops_per_byte=s.arithmetic_intensity_flops_per_byte,
        weights_gb=_gb(s.weight_bytes), activations_gb=_gb(s.activation_bytes), kv_cache_gb=_gb(s.kv_cache_bytes),
        time_ms=s.roofline_time_ms, bound=s.bound,
        operator_breakdown=[_op_metrics_view(m) for m in s.operator_breakdown],
    )


def _totals_view(t: dom.WorkTotals) -> StageTotalsView:
    return StageTotalsView(flops_tflops=_tflops(t.total_flops), io_tb=_tb(t.io_bytes), time_ms=t.time_ms)


def _analytic_view(r: dom.AnalyticModelReport) -> AnalyticModelView:
    return AnalyticModelView(
        report_id=r.report_id, gpu_key=r.gpu_key, peak_source=r.peaks.source, peak_source_ref=r.peaks.source_ref,
        model=_model_spec_view(r.model), workload=_workload_view(r.workload),
        modules=[_node_view(n) for n in r.modules], metrics=[_module_metrics_view(s) for s in r.snapshots],
        stage_totals={stage: _totals_view(t) for stage, t in r.stage_totals.items()},
        total_flops_tflops=_tflops(r.model_totals.total_flops), total_io_tb=_tb(r.model_totals.io_bytes),
        total_time_ms=r.model_totals.time_ms, generated_at=r.generated_at.isoformat(),
    )


def _profile_summary(r: prof.LLMProfileReport) -> LLMProfileReportSummary:
    decode = r.stage_tokens_per_s.get(Stage.DECODE)
    return LLMProfileReportSummary(
        run_id=r.meta.run_id, model_name=r.model.name, device_name=r.meta.device_name, gpu_key=r.meta.gpu_key,
        mode=r.meta.mode, dtype=r.model.dtype, num_images=len({t.image_index for t in r.stage_timings}),
        num_skipped=len(r.skipped_images),
        stage_mean_ms={stage: s.mean for stage, s in r.stage_ms.items()},
        stage_p90_ms={stage: s.p90 for stage, s in r.stage_ms.items()},
        stage_mfu=dict(r.stage_mfu), model_mfu=r.model_mfu,
        pages_per_s=r.pages_per_s.mean if r.pages_per_s is not None else None,
        decode_tokens_per_s=decode.mean if decode is not None else None,
        peak_memory_gb=_gb(r.peak_memory_bytes) if r.peak_memory_bytes is not None else None,
    )


def _module_summary(node: dom.AnalyticModuleNode, snap: dom.ModuleMetricsSnapshot,
                    total_time_ms: float) -> AnalyticModuleSummary:
    return AnalyticModuleSummary(
        module_id=node.module_id, name=node.name, class_name=node.class_name, stage=node.stage,
        flops_tflops=_tflops(snap.total_flops), io_tb=_tb(snap.io_bytes), time_ms=snap.roofline_time_ms,
        share_of_total_time=snap.roofline_time_ms / total_time_ms if total_time_ms > 0 else 0.0, bound=snap.bound,
    )


_register(ModelSpecView, dom.DeepSeekOCRModelSpec, _model_spec_view)
_register(WorkloadProfileView, dom.OCRWorkloadProfile, _workload_view)
_register(AnalyticModuleNodeView, dom.AnalyticModuleNode, _node_view)
_register(OperatorCategoryView, dom.OperatorCategoryRecord, _category_view)
_register(OperatorMetricsView, dom.OperatorMetrics, _op_metrics_view)
_register(ModuleMetricsView, dom.ModuleMetricsSnapshot, _module_metrics_view)
_register(StageTotalsView, dom.WorkTotals, _totals_view)
_register(AnalyticModelView, dom.AnalyticModelReport, _analytic_view)
_register(LLMProfileReportSummary, prof.LLMProfileReport, _profile_summary)


def to_profile_summary(report: prof.LLMProfileReport) -> LLMProfileReportSummary:
    """Contract summary of a profiling report."""
    return converter.structure(report, LLMProfileReportSummary)


def to_analytic_view(report: dom.AnalyticModelReport) -> AnalyticModelView:
    """The whole analytic report in contract units."""
    return converter.structure(report, AnalyticModelView)


def to_analytic_summary(report: dom.AnalyticModelReport, top_k: int = 10,
                        measured_total_time_ms: float | None = None) -> DeepSeekOCRAnalyticReportSummary:
    """Contract summary of an analytic report.

    ``top_modules``: the ``top_k`` leaf modules (nodes without children) with
    the largest predicted time. ``measured_total_time_ms`` (ms, > 0), when
    given, fills ``predicted_vs_measured_ratio`` = predicted / measured.
    """
    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    total_ms = report.model_totals.time_ms
    nodes = {n.module_id: n for n in report.modules}
    leaves = [s for s in report.snapshots if not nodes[s.module_id].children_ids]
    leaves.sort(key=lambda s: (-s.roofline_time_ms, s.module_id))
    top = [_module_summary(nodes[s.module_id], s, total_ms) for s in leaves[:top_k]]
    ratio = None
    if measured_total_time_ms is not None and measured_total_time_ms > 0:
        ratio = total_ms / measured_total_time_ms
    return DeepSeekOCRAnalyticReportSummary(
        report_id=report.report_id, gpu_key=report.gpu_key, peak_source=report.peaks.source,
        workload=converter.structure(report.workload, WorkloadProfileView),
        total_flops_tflops=_tflops(report.model_totals.total_flops), total_io_tb=_tb(report.model_totals.io_bytes),
        predicted_total_time_ms=total_ms,
        stage_time_ms={stage: t.time_ms for stage, t in report.stage_totals.items()},
        decode_per_token_ms=report.decode.per_token.time_ms, decode_total_ms=report.decode.total.time_ms,
        weights_gb=_gb(report.memory.weights_bytes), kv_cache_gb=_gb(report.memory.kv_cache_bytes),
        activation_peak_gb=_gb(report.memory.activation_peak_bytes), max_batch_size=report.memory.max_batch_size,
        top_modules=top, measured_total_time_ms=measured_total_time_ms, predicted_vs_measured_ratio=ratio,
    )


def to_json_dict(contract: Any) -> dict[str, Any]:
    """Plain JSON-safe dict of a contract object."""
    data = converter.unstructure(contract)
    if not isinstance(data, dict):
        raise TypeError(f"{type(contract).__name__} does not unstructure to a mapping")
    return data


def from_json_dict(data: dict[str, Any], cls: type[T]) -> T:
    """Contract object from a plain dict (requests); cattrs errors propagate."""
    return converter.structure(data, cls)
