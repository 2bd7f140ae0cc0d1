"""Stage 1 profiling data model: what was run, on what, and what was measured.

Times are milliseconds (``*_ms``), throughputs per second (``*_per_s``),
memory bytes (``*_bytes``). MFU/MBU are fractions of the GPU's dense peak;
validators accept [0, 1.5] so that a wrong peak shows up as an implausible
value instead of being clipped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from attrs import define, field

from llm_perf_opt.data.common import AttentionKind, ImageCategory, ImageSource, Stats, WeightsSource
from llm_perf_opt.data.validators import (
    FieldValueError,
    absolute_path,
    at_least,
    aware_datetime,
    equals,
    in_range,
    non_empty,
    non_negative,
    optional,
    positive,
    safe_id,
    values_in_range,
)
from llm_perf_opt.models.deepseek_ocr.modes import MODES
from llm_perf_opt.vocab import DType, OperatorCategory, Stage

#: Schema version written into (and required of) every LLMProfileReport file.
PROFILE_REPORT_SCHEMA = "llm-perf-opt.profile-report/1"
#: Schema version of LLMProfileReportSummary files.
PROFILE_SUMMARY_SCHEMA = "llm-perf-opt.profile-summary/1"
#: Upper bound accepted for MFU / MBU fractions (above 1 only through a wrong peak).
MAX_UTILIZATION = 1.5


def _known_mode(inst: Any, attribute: Any, value: str) -> None:
    if value not in MODES:
        raise FieldValueError(attribute.name, f"{value!r} is not a resolution mode ({', '.join(MODES)})")


@define(kw_only=True)
class ModelUnderTest:
    """The model instance a profiling run measured."""

    name: str = field(validator=non_empty, metadata={"help": "model name, e.g. 'deepseek-ocr'"})
    config_origin: str = field(
        validator=non_empty, metadata={"help": "config used: 'default', 'tiny' or the config.json path"}
    )
    weights: WeightsSource = field(
        converter=WeightsSource, metadata={"help": "'random' (initialised from config) or 'checkpoint'"}
    )
    checkpoint_path: str | None = field(
        default=None, validator=optional(absolute_path),
        metadata={"help": "absolute path of the checkpoint folder; null for random weights"},
    )
    dtype: DType = field(converter=DType, metadata={"help": "compute dtype (bf16, fp16, fp32, ...)"})
    device: str = field(validator=non_empty, metadata={"help": "torch device string, e.g. 'cuda:0', 'cpu', 'meta'"})
    attn_implementation: AttentionKind = field(
        converter=AttentionKind, metadata={"help": "attention implementation: eager, sdpa or flash"}
    )
    parameter_count: int = field(validator=at_least(1), metadata={"help": "total parameters of the model (count)"})

    def __attrs_post_init__(self) -> None:
        if self.weights is WeightsSource.CHECKPOINT and self.checkpoint_path is None:
            raise FieldValueError("checkpoint_path", "required when weights is 'checkpoint'")
        if self.weights is WeightsSource.RANDOM and self.checkpoint_path is not None:
            raise FieldValueError("checkpoint_path", "must be null when weights is 'random'")


@define(kw_only=True)
class InputImage:
    """One page image: a file (or a PDF page) on disk, or a synthetic page."""

    path: str | None = field(
        default=None, validator=optional(absolute_path),
        metadata={"help": "absolute path of the image or PDF file; null for synthetic pages"},
    )
    synthetic_id: str | None = field(
        default=None, validator=optional(non_empty),
        metadata={"help": "identifier of a synthetic page (e.g. 'synthetic:text_heavy:0'); null for files"},
    )
    width_px: int = field(validator=at_least(1), metadata={"help": "image width in pixels"})
    height_px: int = field(validator=at_least(1), metadata={"help": "image height in pixels"})
    category: ImageCategory = field(
        default=ImageCategory.UNKNOWN, converter=ImageCategory,
        metadata={"help": "page category: text_heavy, mixed_layout, image_rich or unknown"},
    )
    source: ImageSource = field(
        converter=ImageSource, metadata={"help": "how the image entered the set: folder, list, pdf, synthetic"}
    )
    page_index: int | None = field(
        default=None, validator=optional(at_least(0)),
        metadata={"help": "0-based page index inside the PDF (pdf source only); null otherwise"},
    )

    def __attrs_post_init__(self) -> None:
        if self.source is ImageSource.SYNTHETIC:
            if self.synthetic_id is None or self.path is not None:
                raise FieldValueError("synthetic_id", "synthetic images need synthetic_id and no path")
        elif self.path is None or self.synthetic_id is not None:
            raise FieldValueError("path", f"{self.source.value} images need an absolute path and no synthetic_id")
        if (self.source is ImageSource.PDF) != (self.page_index is not None):
            raise FieldValueError("page_index", "required for pdf images and only for them")

    @property
    def ref(self) -> str:
        """Human-readable reference: path, path#page, or the synthetic id."""
        if self.synthetic_id is not None:
            return self.synthetic_id
        if self.page_index is not None:
            return f"{self.path}#page={self.page_index}"
        return str(self.path)


@define(kw_only=True)
class InputSet:
    """The ordered, non-empty set of images a run processes."""

    origin: str = field(
        validator=non_empty,
        metadata={"help": "where the set came from: folder, list file or PDF path, or 'synthetic'"},
    )
    images: list[InputImage] = field(validator=non_empty, metadata={"help": "images in processing order (>= 1)"})


@define(kw_only=True)
class SkippedImage:
    """An input that could not be processed, and why."""

    ref: str = field(validator=non_empty, metadata={"help": "path, path#page=N or synthetic id of the input"})
    reason: str = field(validator=non_empty, metadata={"help": "one-line reason it was skipped"})


@define(kw_only=True)
class StageTiming:
    """One timed stage of one image in one repeat."""

    stage: Stage = field(converter=Stage, metadata={"help": "stage name from the vocabulary"})
    image_index: int = field(validator=at_least(0), metadata={"help": "index into inputs.images"})
    repeat_index: int = field(validator=at_least(0), metadata={"help": "0-based measured repeat (warmup excluded)"})
    elapsed_ms: float = field(validator=positive, metadata={"help": "device time of the stage (CUDA events), ms > 0"})
    tokens: int = field(
        validator=at_least(0), metadata={"help": "tokens processed (prefill/vision) or generated (decode), >= 0"}
    )
    tokens_per_s: float = field(validator=non_negative, metadata={"help": "tokens / elapsed seconds, >= 0"})


@define(kw_only=True)
class OperatorSummary:
    """One row of the torch.profiler operator table."""

    op_name: str = field(validator=non_empty, metadata={"help": "operator name as the profiler reports it"})
    category: OperatorCategory = field(
        converter=OperatorCategory, metadata={"help": "category from the TargetOperatorList ('uncategorized' if none)"}
    )
    calls: int = field(validator=at_least(0), metadata={"help": "number of calls"})
    self_cuda_time_ms: float = field(validator=non_negative, metadata={"help": "self CUDA time, ms"})
    self_cpu_time_ms: float = field(validator=non_negative, metadata={"help": "self CPU time, ms"})
    total_cpu_time_ms: float = field(validator=non_negative, metadata={"help": "CPU time including children, ms"})
    share_of_total: float = field(
        validator=in_range(0.0, 1.0),
        metadata={"help": "fraction of the table's total self device time (CUDA on GPU runs, else CPU)"},
    )


@define(kw_only=True)
class RunMeta:
    """Identity and settings of one profiling run."""

    run_id: str = field(validator=safe_id, metadata={"help": "unique run id; also the run folder name"})
    started_at: datetime = field(validator=aware_datetime, metadata={"help": "start time, ISO 8601 with offset"})
    finished_at: datetime = field(validator=aware_datetime, metadata={"help": "end time, ISO 8601 with offset"})
    device_name: str = field(validator=non_empty, metadata={"help": "device name as torch reports it"})
    gpu_key: str | None = field(
        default=None, metadata={"help": "GPU catalogue key used for peaks; null when not on a catalogued GPU"}
    )
    torch_version: str = field(validator=non_empty, metadata={"help": "torch.__version__"})
    transformers_version: str = field(validator=non_empty, metadata={"help": "transformers.__version__"})
    git_revision: str | None = field(default=None, metadata={"help": "git commit of the project; null outside git"})
    mode: str = field(validator=_known_mode, metadata={"help": "resolution mode: tiny, small, base, large, gundam"})
    batch_size: int = field(validator=at_least(1), metadata={"help": "images per forward (>= 1)"})
    max_new_tokens: int = field(validator=at_least(1), metadata={"help": "decode steps cap per image"})
    fixed_length: bool = field(
        metadata={"help": "true: decode exactly max_new_tokens (EOS ignored) so runs are comparable"}
    )
    repeats: int = field(validator=at_least(1), metadata={"help": "measured repeats per image"})
    warmup: int = field(validator=at_least(0), metadata={"help": "unmeasured warmup passes before measuring"})

    def __attrs_post_init__(self) -> None:
        if self.finished_at < self.started_at:
            raise FieldValueError("finished_at", f"{self.finished_at.isoformat()} is before started_at")

    @property
    def duration_s(self) -> float:
        """Wall-clock run duration in seconds."""
        return (self.finished_at - self.started_at).total_seconds()


@define(kw_only=True)
class LLMProfileReportSummary:
    """Headline numbers of one profiling run (what a listing or a comparison needs)."""

    schema_version: str = field(
        default=PROFILE_SUMMARY_SCHEMA, validator=equals(PROFILE_SUMMARY_SCHEMA),
        metadata={"help": "file schema version"},
    )
    run_id: str = field(validator=safe_id, metadata={"help": "run id"})
    model_name: str = field(validator=non_empty, metadata={"help": "model name"})
    device_name: str = field(validator=non_empty, metadata={"help": "device name"})
    gpu_key: str | None = field(default=None, metadata={"help": "GPU catalogue key or null"})
    mode: str = field(validator=_known_mode, metadata={"help": "resolution mode"})
    dtype: DType = field(converter=DType, metadata={"help": "compute dtype"})
    num_images: int = field(validator=at_least(0), metadata={"help": "images with at least one stage timing"})
    num_skipped: int = field(validator=at_least(0), metadata={"help": "inputs skipped (unreadable or failed)"})
    stage_mean_ms: dict[Stage, float] = field(factory=dict, metadata={"help": "mean ms per stage"})
    stage_mfu: dict[Stage, float] = field(
        factory=dict, validator=values_in_range(0.0, MAX_UTILIZATION), metadata={"help": "MFU per stage"}
    )
    model_mfu: float | None = field(
        default=None, validator=optional(in_range(0.0, MAX_UTILIZATION)), metadata={"help": "whole-model MFU"}
    )
    pages_per_s_mean: float | None = field(
        default=None, validator=optional(non_negative), metadata={"help": "mean pages per second"}
    )
    peak_memory_bytes: int | None = field(
        default=None, validator=optional(at_least(0)), metadata={"help": "peak allocated device memory, bytes"}
    )


@define(kw_only=True)
class LLMProfileReport:
    """Everything one Stage 1 profiling run measured (the run folder's report.json)."""

    schema_version: str = field(
        default=PROFILE_REPORT_SCHEMA, validator=equals(PROFILE_REPORT_SCHEMA),
        metadata={"help": "file schema version"},
    )
    meta: RunMeta = field(metadata={"help": "run identity and settings"})
    model: ModelUnderTest = field(metadata={"help": "the model measured"})
    inputs: InputSet = field(metadata={"help": "the images given to the run"})
    stage_timings: list[StageTiming] = field(
        factory=list, metadata={"help": "per-image, per-repeat stage timings"}
    )
    stage_ms: dict[Stage, Stats] = field(factory=dict, metadata={"help": "elapsed ms per stage over all samples"})
    stage_tokens_per_s: dict[Stage, Stats] = field(
        factory=dict, metadata={"help": "throughput (tokens/s) per stage over all samples"}
    )
    pages_per_s: Stats | None = field(default=None, metadata={"help": "end-to-end pages per second"})
    preprocessing_ms: Stats | None = field(
        default=None, metadata={"help": "host preprocessing (resize, tile, normalise) per pass, ms; image load "
                                        "not included"}
    )
    stage_mfu: dict[Stage, float] = field(
        factory=dict, validator=values_in_range(0.0, MAX_UTILIZATION),
        metadata={"help": "model FLOPs utilisation per stage, fraction of dense peak in [0, 1.5]"},
    )
    model_mfu: float | None = field(
        default=None, validator=optional(in_range(0.0, MAX_UTILIZATION)),
        metadata={"help": "whole-model MFU over all stages in [0, 1.5]; null without a catalogued GPU"},
    )
    stage_mbu: dict[Stage, float] = field(
        factory=dict, validator=values_in_range(0.0, MAX_UTILIZATION),
        metadata={"help": "memory-bandwidth utilisation per stage, fraction of peak in [0, 1.5]"},
    )
    operators: list[OperatorSummary] = field(factory=list, metadata={"help": "operator table, largest first"})
    skipped_images: list[SkippedImage] = field(factory=list, metadata={"help": "inputs not processed, with reasons"})
    peak_memory_bytes: int | None = field(
        default=None, validator=optional(at_least(0)),
        metadata={"help": "peak allocated device memory (torch.cuda.max_memory_allocated), bytes"},
    )
    notes: list[str] = field(factory=list, metadata={"help": "caveats of the run (interruptions, missing peaks)"})

    def __attrs_post_init__(self) -> None:
        n = len(self.inputs.images)
        for i, timing in enumerate(self.stage_timings):
            if timing.image_index >= n:
                raise FieldValueError(
                    f"stage_timings[{i}].image_index", f"{timing.image_index} but only {n} input images"
                )
            if timing.repeat_index >= self.meta.repeats:
                raise FieldValueError(
                    f"stage_timings[{i}].repeat_index", f"{timing.repeat_index} but repeats is {self.meta.repeats}"
                )

    def summary(self) -> LLMProfileReportSummary:
        """Headline numbers of this report."""
        return LLMProfileReportSummary(
            run_id=self.meta.run_id, model_name=self.model.name, device_name=self.meta.device_name,
            gpu_key=self.meta.gpu_key, mode=self.meta.mode, dtype=self.model.dtype,
            num_images=len({t.image_index for t in self.stage_timings}),
            num_skipped=len(self.skipped_images),
            stage_mean_ms={stage: stats.mean for stage, stats in self.stage_ms.items()},
            stage_mfu=dict(self.stage_mfu), model_mfu=self.model_mfu,
            pages_per_s_mean=self.pages_per_s.mean if self.pages_per_s else None,
            peak_memory_bytes=self.peak_memory_bytes,
        )
