"""Analytic-model data: model spec, workload, module tree, per-module metrics, report.

Base units inside: FLOPs (``*_flops``, 1 multiply-add = 2 FLOPs), bytes
(``*_bytes``), milliseconds (``*_ms``), rates per second (``*_per_s``).
Contract views (``llm_perf_opt.contracts``) convert to TFLOPs/TB/GB at the edge.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import cattrs
from attrs import define, field
from attrs.validators import in_

from llm_perf_opt.data.common import AttentionKind, Bound, PeakSource, Repetition
from llm_perf_opt.data.validators import (
    FieldValueError,
    at_least,
    aware_datetime,
    equals,
    in_range,
    non_empty,
    non_negative,
    optional,
    positive,
    safe_id,
)
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modes import MODES, ModeError, TokenLayout, token_layout
from llm_perf_opt.vocab import (
    DEFAULT_NO_REPEAT_NGRAM,
    EXPERTS_IMPLEMENTATIONS,
    DType,
    ExpertsImplementation,
    OperatorCategory,
    Stage,
)

#: Schema version of AnalyticModelReport files.
ANALYTIC_REPORT_SCHEMA = "llm-perf-opt.analytic-report/1"
#: Schema version of TargetOperatorList files.
TARGET_OPERATORS_SCHEMA = "llm-perf-opt.target-operators/1"

_config_converter = cattrs.Converter()


@define(kw_only=True)
class DeepSeekOCRModelSpec:
    """The DeepSeek-OCR config an analytic model was computed from (lossless)."""

    config: DeepseekOCRConfig = field(
        metadata={"help": "full model config (SAM, CLIP, projector, language); config.name is its origin"}
    )
    parameter_count: int | None = field(
        default=None, validator=optional(at_least(1)),
        metadata={"help": "total parameters counted from the module tree; null when not counted"},
    )

    @classmethod
    def from_config(cls, config: DeepseekOCRConfig, parameter_count: int | None = None) -> DeepSeekOCRModelSpec:
        """Spec holding ``config``."""
        return cls(config=config, parameter_count=parameter_count)

    @classmethod
    def from_config_dict(cls, raw: dict[str, Any], parameter_count: int | None = None) -> DeepSeekOCRModelSpec:
        """Spec from ``DeepseekOCRConfig.to_dict()`` output (the inverse of ``config_dict``)."""
        return cls(config=_config_converter.structure(raw, DeepseekOCRConfig), parameter_count=parameter_count)

    def config_dict(self) -> dict[str, Any]:
        """The config as a plain dict (same layout as ``DeepseekOCRConfig.to_dict()``)."""
        return self.config.to_dict()

    def to_config(self) -> DeepseekOCRConfig:
        """The DeepseekOCRConfig this spec holds."""
        return self.config


def _known_mode(inst: Any, attribute: Any, value: str) -> None:
    if value not in MODES:
        raise FieldValueError(attribute.name, f"{value!r} is not a resolution mode ({', '.join(MODES)})")


@define(kw_only=True)
class OCRWorkloadProfile:
    """One OCR request shape: page size, mode, prompt, output length, batch, dtype.

    ``tile_rows``/``tile_cols`` must equal ``modes.token_layout(mode, width, height)``
    (1 x 1 when the page is not tiled); build with :meth:`create` to derive them.
    """

    profile_id: str = field(validator=safe_id, metadata={"help": "workload identifier, e.g. 'gundam-1700x2200'"})
    mode: str = field(validator=_known_mode, metadata={"help": "resolution mode: tiny, small, base, large, gundam"})
    image_width_px: int = field(validator=at_least(1), metadata={"help": "page width in pixels"})
    image_height_px: int = field(validator=at_least(1), metadata={"help": "page height in pixels"})
    tile_rows: int = field(validator=at_least(1), metadata={"help": "Gundam tile rows (1 when not tiled)"})
    tile_cols: int = field(validator=at_least(1), metadata={"help": "Gundam tile columns (1 when not tiled)"})
    prompt_text_tokens: int = field(
        validator=at_least(0), metadata={"help": "text tokens of the prompt besides the image slots"}
    )
    max_new_tokens: int = field(validator=at_least(1), metadata={"help": "decode steps (generated tokens)"})
    batch_size: int = field(default=1, validator=at_least(1), metadata={"help": "pages per forward (>= 1)"})
    dtype: DType = field(default=DType.BF16, converter=DType, metadata={"help": "compute dtype"})
    attention: AttentionKind = field(
        default=AttentionKind.SDPA, converter=AttentionKind,
        metadata={"help": "attention implementation modelled: eager (materialised scores), sdpa, flash"},
    )
    experts: ExpertsImplementation = field(
        default="grouped_mm", validator=in_(EXPERTS_IMPLEMENTATIONS),
        metadata={"help": "MoE experts implementation modelled: grouped_mm, batched_mm, eager (per-expert loop)"},
    )
    no_repeat_ngram_size: int = field(
        default=DEFAULT_NO_REPEAT_NGRAM, validator=at_least(0),
        metadata={"help": "greedy decoding's n-gram ban (0 = off): its per-row launches run at every token pick"},
    )

    def __attrs_post_init__(self) -> None:
        try:
            layout = token_layout(self.mode, self.image_width_px, self.image_height_px)
        except ModeError as exc:
            raise FieldValueError("image_width_px", str(exc)) from exc
        if (self.tile_rows, self.tile_cols) != (layout.rows, layout.cols):
            raise FieldValueError(
                "tile_rows", f"{self.tile_rows}x{self.tile_cols} but mode {self.mode!r} tiles a "
                f"{self.image_width_px}x{self.image_height_px} page as {layout.rows}x{layout.cols}",
            )

    @classmethod
    def create(cls, *, profile_id: str, mode: str, image_width_px: int, image_height_px: int,
               prompt_text_tokens: int, max_new_tokens: int, batch_size: int = 1,
               dtype: DType | str = DType.BF16, attention: AttentionKind | str = AttentionKind.SDPA,
               experts: ExpertsImplementation = "grouped_mm",
               no_repeat_ngram_size: int = DEFAULT_NO_REPEAT_NGRAM) -> OCRWorkloadProfile:
        """Profile with the tile grid derived from the mode and page size."""
        layout = token_layout(mode, image_width_px, image_height_px)
        return cls(profile_id=profile_id, mode=layout.mode, image_width_px=image_width_px,
                   image_height_px=image_height_px, tile_rows=layout.rows, tile_cols=layout.cols,
                   prompt_text_tokens=prompt_text_tokens, max_new_tokens=max_new_tokens, batch_size=batch_size,
                   dtype=DType(dtype), attention=AttentionKind(attention), experts=experts,
                   no_repeat_ngram_size=no_repeat_ngram_size)

    @property
    def layout(self) -> TokenLayout:
        """Image-token layout of the page in this mode."""
        return token_layout(self.mode, self.image_width_px, self.image_height_px)

    @property
    def prefill_tokens(self) -> int:
        """Prompt length per page: image slots (with newlines and separator) + text tokens."""
        return self.layout.prompt_slots + self.prompt_text_tokens


@define(kw_only=True)
class AnalyticModuleNode:
    """One node of the analytic module tree (module paths follow the executable model's names)."""

    module_id: str = field(validator=non_empty, metadata={"help": "dotted module path, unique in the tree"})
    name: str = field(validator=non_empty, metadata={"help": "short display name"})
    class_name: str = field(validator=non_empty, metadata={"help": "module class name (e.g. 'SamAttention')"})
    stage: Stage | None = field(
        default=None, converter=lambda v: None if v is None else Stage(v),
        metadata={"help": "stage the module runs in; null for containers spanning stages (the root)"},
    )
    parent_id: str | None = field(default=None, metadata={"help": "module_id of the parent; null for the root"})
    children_ids: list[str] = field(factory=list, metadata={"help": "module_ids of the children, in order"})
    repetition: Repetition = field(
        default=Repetition.NONE, converter=Repetition,
        metadata={"help": "none (once), for (sequential repeats), parfor (parallel repeats, e.g. experts)"},
    )
    repetition_count: int = field(
        default=1, validator=at_least(1), metadata={"help": "how many times the node runs (1 when 'none')"}
    )

    def __attrs_post_init__(self) -> None:
        if self.repetition is Repetition.NONE and self.repetition_count != 1:
            raise FieldValueError("repetition_count", f"{self.repetition_count} but repetition is 'none'")


@define(kw_only=True)
class OperatorCategoryRecord:
    """Description of one operator category of the vocabulary."""

    category_id: OperatorCategory = field(converter=OperatorCategory, metadata={"help": "category id (vocabulary)"})
    display_name: str = field(validator=non_empty, metadata={"help": "name shown in tables"})
    description: str = field(default="", metadata={"help": "what falls into this category"})
    match_patterns: list[str] = field(
        factory=list, metadata={"help": "regexes over aten op / kernel names that map to this category"}
    )

    def __attrs_post_init__(self) -> None:
        for i, pattern in enumerate(self.match_patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise FieldValueError(f"match_patterns[{i}]", f"{pattern!r} is not a valid regex ({exc})") from exc


@define(kw_only=True)
class OperatorMetrics:
    """Work of one operator category inside one module."""

    category: OperatorCategory = field(converter=OperatorCategory, metadata={"help": "operator category"})
    tensor_core_flops: float = field(validator=non_negative, metadata={"help": "FLOPs on tensor cores (matmuls)"})
    cuda_core_flops: float = field(
        validator=non_negative, metadata={"help": "FLOPs on CUDA cores (elementwise, norms, softmax)"}
    )
    io_bytes: float = field(validator=non_negative, metadata={"help": "bytes read + written from device memory"})
    share_of_module_flops: float = field(
        validator=in_range(0.0, 1.0), metadata={"help": "fraction of the module's total FLOPs in [0, 1]"}
    )
    kernel_launches: float = field(
        default=0.0, validator=non_negative,
        metadata={"help": "kernel launches of this category in the module (all repetitions); used by calibration"},
    )

    @property
    def total_flops(self) -> float:
        """Tensor-core + CUDA-core FLOPs."""
        return self.tensor_core_flops + self.cuda_core_flops


@define(kw_only=True)
class ModuleMetricsSnapshot:
    """Analytic metrics of one module node for the whole workload (all repetitions included)."""

    module_id: str = field(validator=non_empty, metadata={"help": "module_id of the node"})
    tensor_core_flops: float = field(validator=non_negative, metadata={"help": "FLOPs on tensor cores"})
    cuda_core_flops: float = field(validator=non_negative, metadata={"help": "FLOPs on CUDA cores"})
    io_bytes: float = field(validator=non_negative, metadata={"help": "bytes moved to/from device memory"})
    arithmetic_intensity_flops_per_byte: float = field(
        validator=non_negative, metadata={"help": "total FLOPs / io_bytes (0 when io_bytes is 0)"}
    )
    weight_bytes: float = field(validator=non_negative, metadata={"help": "parameter bytes of the module"})
    activation_bytes: float = field(validator=non_negative, metadata={"help": "output activation bytes"})
    kv_cache_bytes: float = field(default=0.0, validator=non_negative, metadata={"help": "KV-cache bytes held"})
    roofline_time_ms: float = field(
        validator=non_negative, metadata={"help": "predicted time: max(compute, memory) + launch, ms"}
    )
    bound: Bound = field(converter=Bound, metadata={"help": "limiter: compute, memory or launch"})
    operator_breakdown: list[OperatorMetrics] = field(
        factory=list, metadata={"help": "per-category split of the module's work"}
    )

    @property
    def total_flops(self) -> float:
        """Tensor-core + CUDA-core FLOPs."""
        return self.tensor_core_flops + self.cuda_core_flops


@define(kw_only=True)
class TargetOperatorList:
    """Maps module classes, aten ops and kernel-name regexes to operator categories.

    Lookups are exact for module classes and aten ops; kernel regexes are tried
    in order (first match wins). Anything unmatched is 'uncategorized', never
    silently folded into another category.
    """

    schema_version: str = field(
        default=TARGET_OPERATORS_SCHEMA, validator=equals(TARGET_OPERATORS_SCHEMA),
        metadata={"help": "file schema version"},
    )
    module_classes: dict[str, OperatorCategory] = field(
        factory=dict, metadata={"help": "module class name -> category"}
    )
    aten_ops: dict[str, OperatorCategory] = field(
        factory=dict, metadata={"help": "aten op name (e.g. 'aten::mm') -> category"}
    )
    kernel_patterns: dict[str, OperatorCategory] = field(
        factory=dict, metadata={"help": "kernel-name regex -> category, tried in order"}
    )

    def __attrs_post_init__(self) -> None:
        for table in ("module_classes", "aten_ops", "kernel_patterns"):
            for key, value in getattr(self, table).items():
                if not isinstance(value, OperatorCategory):
                    try:
                        getattr(self, table)[key] = OperatorCategory(value)
                    except ValueError as exc:
                        raise FieldValueError(
                            f"{table}[{key!r}]",
                            f"{value!r} is not an operator category ({', '.join(c.value for c in OperatorCategory)})",
                        ) from exc
        for pattern in self.kernel_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise FieldValueError(f"kernel_patterns[{pattern!r}]", f"not a valid regex ({exc})") from exc

    def categorize_module(self, class_name: str) -> OperatorCategory:
        """Category of a module class; UNCATEGORIZED when unlisted."""
        return self.module_classes.get(class_name, OperatorCategory.UNCATEGORIZED)

    def categorize_aten(self, op_name: str) -> OperatorCategory:
        """Category of an aten op ('aten::mm' or 'mm'); UNCATEGORIZED when unlisted."""
        if op_name in self.aten_ops:
            return self.aten_ops[op_name]
        qualified = op_name if "::" in op_name else f"aten::{op_name}"
        return self.aten_ops.get(qualified, OperatorCategory.UNCATEGORIZED)

    def categorize_kernel(self, kernel_name: str) -> OperatorCategory:
        """Category of the first kernel regex that matches (re.search); UNCATEGORIZED when none does."""
        for pattern, category in self.kernel_patterns.items():
            if re.search(pattern, kernel_name):
                return category
        return OperatorCategory.UNCATEGORIZED


@define(kw_only=True)
class PeaksUsed:
    """Hardware ceilings a prediction used, and where they came from."""

    source: PeakSource = field(converter=PeakSource, metadata={"help": "'datasheet' or 'measured'"})
    source_ref: str = field(
        validator=non_empty, metadata={"help": "citation: catalogue entry and its source, or the benchmark file"}
    )
    tensor_core_flops_per_s: float = field(
        validator=positive, metadata={"help": "dense tensor-core peak for the workload dtype, FLOP/s"}
    )
    cuda_core_flops_per_s: float = field(validator=positive, metadata={"help": "CUDA-core (non-tensor) peak, FLOP/s"})
    memory_bytes_per_s: float = field(validator=positive, metadata={"help": "device memory bandwidth, bytes/s"})
    memory_capacity_bytes: float | None = field(
        default=None, validator=optional(positive), metadata={"help": "device memory size, bytes"}
    )
    launch_overhead_ms: float = field(default=0.0, validator=non_negative, metadata={"help": "cost per kernel, ms"})
    efficiencies: dict[OperatorCategory, float] = field(
        factory=dict,
        metadata={"help": "achievable fraction of peak per category; missing = 1.0 (pure roofline)"},
    )

    def __attrs_post_init__(self) -> None:
        for category, value in self.efficiencies.items():
            if not 0.0 < value <= 1.0:
                raise FieldValueError(f"efficiencies[{category.value!r}]", f"{value!r} outside (0, 1]")


@define(kw_only=True)
class WorkTotals:
    """Summed work and predicted time of a stage, of decode, or of the whole model."""

    tensor_core_flops: float = field(validator=non_negative, metadata={"help": "FLOPs on tensor cores"})
    cuda_core_flops: float = field(validator=non_negative, metadata={"help": "FLOPs on CUDA cores"})
    io_bytes: float = field(validator=non_negative, metadata={"help": "bytes moved"})
    time_ms: float = field(validator=non_negative, metadata={"help": "predicted time, ms"})

    @property
    def total_flops(self) -> float:
        """Tensor-core + CUDA-core FLOPs."""
        return self.tensor_core_flops + self.cuda_core_flops


@define(kw_only=True)
class DecodeTotals:
    """Decode phase: one step (at the mean context length) and all steps."""

    tokens: int = field(validator=at_least(0), metadata={"help": "generated tokens per page (decode steps)"})
    per_token: WorkTotals = field(metadata={"help": "work and time of one decode step, whole batch"})
    total: WorkTotals = field(metadata={"help": "work and time of all decode steps"})


@define(kw_only=True)
class MemoryFootprint:
    """Device-memory needs of the workload."""

    weights_bytes: float = field(validator=non_negative, metadata={"help": "parameters at the workload dtype"})
    kv_cache_bytes: float = field(validator=non_negative, metadata={"help": "KV cache at the end of decode"})
    activation_peak_bytes: float = field(validator=non_negative,
                                         metadata={"help": "largest live activations of any stage"})
    max_batch_size: int | None = field(
        default=None, validator=optional(at_least(0)),
        metadata={"help": "largest batch whose peak fits the GPU's memory; null when capacity unknown"},
    )
    peak_stage: str | None = field(
        default=None, validator=optional(non_empty),
        metadata={"help": "stage whose activations plus the KV cache live in it set the peak; null in reports "
                          "written before it was recorded"},
    )
    peak_bytes: float | None = field(
        default=None, validator=optional(non_negative),
        metadata={"help": "device peak: weights + that stage's activations + the KV cache live in it (none in "
                          "the vision stages); null in reports written before it was recorded"},
    )

    @property
    def total_bytes(self) -> float:
        """The device peak (``peak_bytes``); weights + final KV cache + activation peak, an upper bound, for a
        report that predates it."""
        if self.peak_bytes is not None:
            return self.peak_bytes
        return self.weights_bytes + self.kv_cache_bytes + self.activation_peak_bytes


@define(kw_only=True)
class AnalyticModelReport:
    """The analytic model of DeepSeek-OCR for one workload on one GPU."""

    schema_version: str = field(
        default=ANALYTIC_REPORT_SCHEMA, validator=equals(ANALYTIC_REPORT_SCHEMA),
        metadata={"help": "file schema version"},
    )
    report_id: str = field(validator=safe_id, metadata={"help": "report identifier; also its folder name"})
    model: DeepSeekOCRModelSpec = field(metadata={"help": "model config analysed"})
    workload: OCRWorkloadProfile = field(metadata={"help": "workload analysed"})
    gpu_key: str = field(validator=non_empty, metadata={"help": "GPU catalogue key of the target"})
    peaks: PeaksUsed = field(metadata={"help": "ceilings used and their source"})
    modules: list[AnalyticModuleNode] = field(validator=non_empty, metadata={"help": "module tree, root first"})
    snapshots: list[ModuleMetricsSnapshot] = field(factory=list, metadata={"help": "metrics per module node"})
    stage_totals: dict[Stage, WorkTotals] = field(factory=dict, metadata={"help": "totals per stage"})
    decode: DecodeTotals = field(metadata={"help": "decode per-token and total"})
    model_totals: WorkTotals = field(metadata={"help": "totals of the whole request (all stages)"})
    memory: MemoryFootprint = field(metadata={"help": "memory footprint"})
    generated_at: datetime = field(validator=aware_datetime, metadata={"help": "creation time, ISO 8601"})
    notes: list[str] = field(factory=list, metadata={"help": "assumptions and caveats, one per line"})

    def __attrs_post_init__(self) -> None:
        ids: set[str] = set()
        for i, node in enumerate(self.modules):
            if node.module_id in ids:
                raise FieldValueError(f"modules[{i}].module_id", f"{node.module_id!r} appears twice")
            ids.add(node.module_id)
        for i, node in enumerate(self.modules):
            if node.parent_id is not None and node.parent_id not in ids:
                raise FieldValueError(f"modules[{i}].parent_id", f"{node.parent_id!r} is not a module_id")
            for child in node.children_ids:
                if child not in ids:
                    raise FieldValueError(f"modules[{i}].children_ids", f"{child!r} is not a module_id")
        for i, snap in enumerate(self.snapshots):
            if snap.module_id not in ids:
                raise FieldValueError(f"snapshots[{i}].module_id", f"{snap.module_id!r} is not a module_id")

    def node(self, module_id: str) -> AnalyticModuleNode:
        """Module node by id; KeyError when absent."""
        for node in self.modules:
            if node.module_id == module_id:
                return node
        raise KeyError(module_id)

    def snapshot(self, module_id: str) -> ModuleMetricsSnapshot:
        """Metrics snapshot by module id; KeyError when absent."""
        for snap in self.snapshots:
            if snap.module_id == module_id:
                return snap
        raise KeyError(module_id)
