"""Request/response contracts and contract views of the domain models.

Contract units (the edge of the system): ``*_tflops`` = 1e12 FLOPs,
``*_tb`` = 1e12 bytes, ``*_gb`` = 1e9 bytes (decimal), ``*_ms``
milliseconds. Domain objects keep base units; :mod:`llm_perf_opt.contracts.convert`
turns them into these views. ``specs/*/contracts/openapi.yaml`` describes
every class here (a test keeps them in agreement).
"""

from __future__ import annotations

from attrs import define, field
from attrs.validators import in_

from llm_perf_opt.data.common import AttentionKind, Bound, PeakSource, Repetition
from llm_perf_opt.data.profile import MAX_UTILIZATION
from llm_perf_opt.data.validators import (
    FieldValueError,
    absolute_path,
    at_least,
    in_range,
    non_empty,
    non_negative,
    optional,
    positive,
    safe_id,
    values_in_range,
)
from llm_perf_opt.data.validators import (
    finite as _finite,
)
from llm_perf_opt.vocab import (
    DEFAULT_NO_REPEAT_NGRAM,
    EXPERTS_IMPLEMENTATIONS,
    DType,
    ExpertsImplementation,
    OperatorCategory,
    Stage,
)

#: Bytes per contract gigabyte / terabyte and FLOPs per TFLOP (decimal prefixes).
BYTES_PER_GB = 1e9
BYTES_PER_TB = 1e12
FLOPS_PER_TFLOP = 1e12

_MAX_UTIL = MAX_UTILIZATION  # the domain model's bound, one number for both


# ---------------------------------------------------------------- Stage 1 profiling


@define(kw_only=True)
class LLMProfileRequest:
    """Ask for one Stage 1 profiling run (defaults are those of llm_profile_runner)."""

    model_config: str = field(
        default="default", validator=non_empty,
        metadata={"help": "model config: 'default', 'tiny' or a config.json / model folder path"},
    )
    checkpoint_path: str | None = field(
        default=None, validator=optional(absolute_path),
        metadata={"help": "absolute path of a local checkpoint folder; null = random weights"},
    )
    image_dir: str | None = field(default=None, metadata={"help": "folder of page images, or null"})
    image_list: str | None = field(default=None, metadata={"help": "text file listing image paths, or null"})
    pdf_path: str | None = field(default=None, metadata={"help": "PDF whose pages are rendered, or null"})
    synthetic_pages: int | None = field(
        default=None, validator=optional(at_least(1)),
        metadata={"help": "synthetic pages to add; inputs combine, and with none given the runner uses 3"},
    )
    mode: str = field(default="base", validator=non_empty, metadata={"help": "resolution mode"})
    prompt: str = field(default="document", metadata={"help": "prompt text after the image tokens"})
    dtype: DType = field(default=DType.BF16, converter=DType, metadata={"help": "compute dtype"})
    device: str = field(default="cuda", validator=non_empty, metadata={"help": "torch device"})
    attn_implementation: AttentionKind = field(
        default=AttentionKind.EAGER, converter=AttentionKind, metadata={"help": "eager, sdpa or flash"}
    )
    batch_size: int = field(default=1, validator=at_least(1), metadata={"help": "pages per pass"})
    max_new_tokens: int = field(default=64, validator=at_least(1), metadata={"help": "tokens generated per page"})
    fixed_length: bool = field(default=True, metadata={"help": "decode exactly max_new_tokens (ignore EOS)"})
    repeats: int = field(default=2, validator=at_least(1), metadata={"help": "measured passes per page batch"})
    warmup: int = field(default=1, validator=at_least(0), metadata={"help": "unmeasured warm-up passes"})
    gpu_key: str | None = field(
        default=None, metadata={"help": "GPU catalogue key for MFU peaks; null = the detected GPU"}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "parent folder of the run folder; null = the runner's default"}
    )
    run_id: str | None = field(
        default=None, validator=optional(safe_id), metadata={"help": "run folder name; null = UTC time + mode"}
    )


@define(kw_only=True)
class LLMProfileAccepted:
    """A profiling run was started; where its results will be."""

    run_id: str = field(validator=safe_id, metadata={"help": "run id (also the run folder name)"})
    output_dir: str = field(validator=non_empty, metadata={"help": "the run folder"})
    report_path: str = field(validator=non_empty, metadata={"help": "path the report JSON is written to"})


@define(kw_only=True)
class LLMProfileReportSummary:
    """Headline numbers of a profiling run, in contract units."""

    run_id: str = field(validator=safe_id, metadata={"help": "run id"})
    model_name: str = field(validator=non_empty, metadata={"help": "model name"})
    device_name: str = field(validator=non_empty, metadata={"help": "device name"})
    gpu_key: str | None = field(default=None, metadata={"help": "GPU catalogue key or null"})
    mode: str = field(validator=non_empty, metadata={"help": "resolution mode"})
    dtype: DType = field(converter=DType, metadata={"help": "compute dtype"})
    num_images: int = field(validator=at_least(0), metadata={"help": "images with at least one timing"})
    num_skipped: int = field(validator=at_least(0), metadata={"help": "inputs skipped"})
    stage_mean_ms: dict[Stage, float] = field(factory=dict, metadata={"help": "mean ms per stage"})
    stage_p90_ms: dict[Stage, float] = field(factory=dict, metadata={"help": "90th percentile ms per stage"})
    stage_mfu: dict[Stage, float] = field(
        factory=dict, validator=values_in_range(0.0, _MAX_UTIL), metadata={"help": "MFU per stage, [0, 1.5]"}
    )
    model_mfu: float | None = field(
        default=None, validator=optional(in_range(0.0, _MAX_UTIL)), metadata={"help": "whole-model MFU"}
    )
    pages_per_s: float | None = field(
        default=None, validator=optional(non_negative), metadata={"help": "mean pages per second"}
    )
    decode_tokens_per_s: float | None = field(
        default=None, validator=optional(non_negative), metadata={"help": "mean decode tokens per second"}
    )
    peak_memory_gb: float | None = field(
        default=None, validator=optional(non_negative), metadata={"help": "peak allocated device memory, GB"}
    )


# ---------------------------------------------------------------- analytic model views


@define(kw_only=True)
class ModelSpecView:
    """The model config's headline sizes."""

    config_name: str = field(validator=non_empty, metadata={"help": "config origin: default, tiny or a path"})
    parameter_count: int | None = field(default=None, metadata={"help": "total parameters, or null"})
    sam_width: int = field(validator=at_least(1), metadata={"help": "SAM embedding width"})
    sam_depth: int = field(validator=at_least(1), metadata={"help": "SAM blocks"})
    clip_width: int = field(validator=at_least(1), metadata={"help": "CLIP hidden width"})
    clip_layers: int = field(validator=at_least(1), metadata={"help": "CLIP layers"})
    projector_input_dim: int = field(validator=at_least(1), metadata={"help": "projector input width"})
    hidden_size: int = field(validator=at_least(1), metadata={"help": "LM hidden width"})
    num_hidden_layers: int = field(validator=at_least(1), metadata={"help": "LM decoder layers"})
    num_attention_heads: int = field(validator=at_least(1), metadata={"help": "LM query heads"})
    num_key_value_heads: int = field(validator=at_least(1), metadata={"help": "LM KV heads"})
    n_routed_experts: int = field(validator=at_least(0), metadata={"help": "routed experts per MoE layer"})
    num_experts_per_tok: int = field(validator=at_least(0), metadata={"help": "active routed experts per token"})
    n_shared_experts: int = field(validator=at_least(0), metadata={"help": "shared experts per MoE layer"})
    vocab_size: int = field(validator=at_least(1), metadata={"help": "vocabulary size"})


@define(kw_only=True)
class WorkloadProfileView:
    """The workload analysed."""

    profile_id: str = field(validator=non_empty, metadata={"help": "workload identifier"})
    mode: str = field(validator=non_empty, metadata={"help": "resolution mode"})
    image_width_px: int = field(validator=at_least(1), metadata={"help": "page width, px"})
    image_height_px: int = field(validator=at_least(1), metadata={"help": "page height, px"})
    tile_rows: int = field(validator=at_least(1), metadata={"help": "tile rows (1 = not tiled)"})
    tile_cols: int = field(validator=at_least(1), metadata={"help": "tile cols (1 = not tiled)"})
    image_tokens: int = field(
        validator=at_least(0), metadata={"help": "image-token slots in the prompt (with newlines and separator)"}
    )
    prompt_text_tokens: int = field(validator=at_least(0), metadata={"help": "text tokens of the prompt"})
    max_new_tokens: int = field(validator=at_least(1), metadata={"help": "decode steps"})
    batch_size: int = field(validator=at_least(1), metadata={"help": "pages per forward"})
    dtype: DType = field(converter=DType, metadata={"help": "compute dtype"})
    attention: AttentionKind = field(converter=AttentionKind, metadata={"help": "attention implementation"})
    experts: ExpertsImplementation = field(validator=in_(EXPERTS_IMPLEMENTATIONS), metadata={"help": "MoE experts implementation"})
    no_repeat_ngram_size: int = field(default=DEFAULT_NO_REPEAT_NGRAM, validator=at_least(0),
                                      metadata={"help": "greedy decoding's n-gram ban (0 = off)"})


@define(kw_only=True)
class AnalyticModuleNodeView:
    """One node of the analytic module tree."""

    module_id: str = field(validator=non_empty, metadata={"help": "dotted module path"})
    name: str = field(validator=non_empty, metadata={"help": "display name"})
    class_name: str = field(validator=non_empty, metadata={"help": "module class name"})
    stage: Stage | None = field(default=None, metadata={"help": "stage, or null for multi-stage containers"})
    parent_id: str | None = field(default=None, metadata={"help": "parent module_id, null for the root"})
    children_ids: list[str] = field(factory=list, metadata={"help": "child module_ids"})
    repetition: Repetition = field(converter=Repetition, metadata={"help": "none, for or parfor"})
    repetition_count: int = field(validator=at_least(1), metadata={"help": "times the node runs"})


@define(kw_only=True)
class OperatorCategoryView:
    """One operator category of the vocabulary."""

    category_id: OperatorCategory = field(converter=OperatorCategory, metadata={"help": "category id"})
    display_name: str = field(validator=non_empty, metadata={"help": "name shown in tables"})
    description: str = field(default="", metadata={"help": "what falls into the category"})
    match_patterns: list[str] = field(factory=list, metadata={"help": "regexes mapped to the category"})


@define(kw_only=True)
class OperatorMetricsView:
    """Work of one operator category inside one module, contract units."""

    category: OperatorCategory = field(converter=OperatorCategory, metadata={"help": "operator category"})
    flops_tflops: float = field(validator=non_negative, metadata={"help": "total FLOPs, TFLOPs (1e12)"})
    tensor_core_flops_tflops: float = field(validator=non_negative, metadata={"help": "tensor-core TFLOPs"})
    cuda_core_flops_tflops: float = field(validator=non_negative, metadata={"help": "CUDA-core TFLOPs"})
    io_tb: float = field(validator=non_negative, metadata={"help": "bytes moved, TB (1e12 bytes)"})
    share_of_module_flops: float = field(
        validator=in_range(0.0, 1.0), metadata={"help": "fraction of the module's FLOPs"}
    )


@define(kw_only=True)
class ModuleMetricsView:
    """Analytic metrics of one module node, contract units."""

    module_id: str = field(validator=non_empty, metadata={"help": "module_id of the node"})
    flops_tflops: float = field(validator=non_negative, metadata={"help": "total FLOPs, TFLOPs"})
    tensor_core_flops_tflops: float = field(validator=non_negative, metadata={"help": "tensor-core TFLOPs"})
    cuda_core_flops_tflops: float = field(validator=non_negative, metadata={"help": "CUDA-core TFLOPs"})
    io_tb: float = field(validator=non_negative, metadata={"help": "bytes moved, TB"})
    arithmetic_intensity_flops_per_byte: float = field(
        validator=non_negative, metadata={"help": "FLOPs per byte moved"}
    )
    weights_gb: float = field(validator=non_negative, metadata={"help": "parameter bytes, GB"})
    activations_gb: float = field(validator=non_negative, metadata={"help": "activation bytes, GB"})
    kv_cache_gb: float = field(validator=non_negative, metadata={"help": "KV-cache bytes, GB"})
    time_ms: float = field(validator=non_negative, metadata={"help": "predicted time, ms"})
    bound: Bound = field(converter=Bound, metadata={"help": "compute, memory or launch"})
    operator_breakdown: list[OperatorMetricsView] = field(
        factory=list, metadata={"help": "per-category split"}
    )


@define(kw_only=True)
class StageTotalsView:
    """Totals of one stage, contract units."""

    flops_tflops: float = field(validator=non_negative, metadata={"help": "total FLOPs, TFLOPs"})
    io_tb: float = field(validator=non_negative, metadata={"help": "bytes moved, TB"})
    time_ms: float = field(validator=non_negative, metadata={"help": "predicted time, ms"})


@define(kw_only=True)
class AnalyticModelView:
    """The whole analytic model report in contract units."""

    report_id: str = field(validator=safe_id, metadata={"help": "report identifier"})
    gpu_key: str = field(validator=non_empty, metadata={"help": "GPU catalogue key"})
    peak_source: PeakSource = field(converter=PeakSource, metadata={"help": "datasheet or measured peaks"})
    peak_source_ref: str = field(validator=non_empty, metadata={"help": "citation of the peaks"})
    model: ModelSpecView = field(metadata={"help": "model config headline"})
    workload: WorkloadProfileView = field(metadata={"help": "workload analysed"})
    modules: list[AnalyticModuleNodeView] = field(factory=list, metadata={"help": "module tree, root first"})
    metrics: list[ModuleMetricsView] = field(factory=list, metadata={"help": "metrics per module"})
    stage_totals: dict[Stage, StageTotalsView] = field(factory=dict, metadata={"help": "totals per stage"})
    total_flops_tflops: float = field(validator=non_negative, metadata={"help": "whole request, TFLOPs"})
    total_io_tb: float = field(validator=non_negative, metadata={"help": "whole request, TB moved"})
    total_time_ms: float = field(validator=non_negative, metadata={"help": "whole request, predicted ms"})
    generated_at: str = field(validator=non_empty, metadata={"help": "creation time, ISO 8601"})


# ---------------------------------------------------------------- analytic requests / summaries


@define(kw_only=True)
class DeepSeekOCRAnalyticRequest:
    """Ask for the analytic model of one workload on one catalogued GPU.

    The workload is a named profile with optional overrides; a null field
    keeps the profile's (or the analyzer's default) value.
    """

    model_config: str = field(
        default="default", validator=non_empty,
        metadata={"help": "model config: 'default', 'tiny' or a config.json / model folder path"},
    )
    workload_profile_id: str | None = field(
        default=None, metadata={"help": "named workload profile; null = the analyzer's default profile"}
    )
    gpu_key: str | None = field(
        default=None, metadata={"help": "GPU catalogue key (exact or declared alias); null = the analyzer's default"}
    )
    mode: str | None = field(default=None, metadata={"help": "override: resolution mode"})
    image_width_px: int | None = field(
        default=None, validator=optional(at_least(1)), metadata={"help": "override: page width, px"}
    )
    image_height_px: int | None = field(
        default=None, validator=optional(at_least(1)), metadata={"help": "override: page height, px"}
    )
    prompt_text_tokens: int | None = field(
        default=None, validator=optional(at_least(0)), metadata={"help": "override: prompt text tokens"}
    )
    max_new_tokens: int | None = field(
        default=None, validator=optional(at_least(1)), metadata={"help": "override: decode steps"}
    )
    batch_size: int | None = field(
        default=None, validator=optional(at_least(1)), metadata={"help": "override: pages per forward"}
    )
    dtype: DType | None = field(default=None, metadata={"help": "override: compute dtype"})
    attention: AttentionKind | None = field(default=None, metadata={"help": "override: attention implementation"})
    experts: ExpertsImplementation | None = field(default=None, validator=optional(in_(EXPERTS_IMPLEMENTATIONS)),
                                metadata={"help": "override: MoE experts implementation"})
    no_repeat_ngram_size: int | None = field(default=None, validator=optional(at_least(0)),
                                             metadata={"help": "override: greedy decoding's n-gram ban (0 = off)"})
    peaks: PeakSource = field(
        default=PeakSource.DATASHEET, converter=PeakSource,
        metadata={"help": "datasheet peaks, or measured ceilings from a micro-benchmark file"},
    )
    top_k: int = field(default=10, validator=at_least(1), metadata={"help": "modules listed in the summary"})
    output_dir: str | None = field(default=None, metadata={"help": "parent folder of the report folder"})

    def __attrs_post_init__(self) -> None:
        if (self.image_width_px is None) != (self.image_height_px is None):
            raise FieldValueError("image_width_px", "give both image_width_px and image_height_px, or neither")


@define(kw_only=True)
class DeepSeekOCRAnalyticAccepted:
    """An analytic report was produced; where it is."""

    report_id: str = field(validator=safe_id, metadata={"help": "report identifier"})
    output_dir: str = field(validator=non_empty, metadata={"help": "the report folder"})
    report_path: str = field(validator=non_empty, metadata={"help": "path of the report JSON"})


@define(kw_only=True)
class AnalyticModuleSummary:
    """One module's share of the predicted work (a row of the top-k table)."""

    module_id: str = field(validator=non_empty, metadata={"help": "dotted module path"})
    name: str = field(validator=non_empty, metadata={"help": "display name"})
    class_name: str = field(validator=non_empty, metadata={"help": "module class name"})
    stage: Stage | None = field(default=None, metadata={"help": "stage, or null"})
    flops_tflops: float = field(validator=non_negative, metadata={"help": "total FLOPs, TFLOPs"})
    io_tb: float = field(validator=non_negative, metadata={"help": "bytes moved, TB"})
    time_ms: float = field(validator=non_negative, metadata={"help": "predicted time, ms"})
    share_of_total_time: float = field(
        validator=non_negative, metadata={"help": "time_ms / predicted total time"}
    )
    bound: Bound = field(converter=Bound, metadata={"help": "compute, memory or launch"})


@define(kw_only=True)
class DeepSeekOCRAnalyticReportSummary:
    """Headline predictions of an analytic report, in contract units."""

    report_id: str = field(validator=safe_id, metadata={"help": "report identifier"})
    gpu_key: str = field(validator=non_empty, metadata={"help": "GPU catalogue key"})
    peak_source: PeakSource = field(converter=PeakSource, metadata={"help": "datasheet or measured peaks"})
    workload: WorkloadProfileView = field(metadata={"help": "workload analysed"})
    total_flops_tflops: float = field(validator=non_negative, metadata={"help": "whole request, TFLOPs"})
    total_io_tb: float = field(validator=non_negative, metadata={"help": "whole request, TB moved"})
    predicted_total_time_ms: float = field(validator=non_negative, metadata={"help": "predicted total, ms"})
    stage_time_ms: dict[Stage, float] = field(factory=dict, metadata={"help": "predicted ms per stage"})
    decode_per_token_ms: float = field(validator=non_negative, metadata={"help": "one decode step, ms"})
    decode_total_ms: float = field(validator=non_negative, metadata={"help": "all decode steps, ms"})
    weights_gb: float = field(validator=non_negative, metadata={"help": "weights, GB"})
    kv_cache_gb: float = field(validator=non_negative, metadata={"help": "KV cache, GB"})
    activation_peak_gb: float = field(validator=non_negative, metadata={"help": "activation peak, GB"})
    max_batch_size: int | None = field(default=None, metadata={"help": "largest batch that fits, or null"})
    top_modules: list[AnalyticModuleSummary] = field(
        factory=list, metadata={"help": "leaf modules with the largest predicted time, largest first"}
    )
    measured_total_time_ms: float | None = field(
        default=None, validator=optional(positive), metadata={"help": "measured total for the same workload, ms"}
    )
    predicted_vs_measured_ratio: float | None = field(
        default=None, validator=optional(_finite),
        metadata={"help": "predicted_total_time_ms / measured_total_time_ms; null without a measurement"},
    )
