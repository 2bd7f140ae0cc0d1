"""Analytic FLOPs and bytes of each measured pass, from the analytic model (llm_perf_opt.analytic).

The workload of a pass is rebuilt from what was actually run: the mode, each
page's size (so Gundam's tile grid), the prompt's text tokens (BOS counted
as text, since the analytic prefill length is image slots + text tokens),
the decode steps run, the batch, the dtype and the attention implementation.
The analytic ``prefill`` stage is the decoder pass alone; the measured
``prefill`` range also wraps the vision stages, so they are added here. The
analytic ``decode`` stage is one step at the mean KV length; the decode
range holds ``decode_steps - 1`` decoder forwards (the last step only picks
a token), so its work is that many steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, cast

from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.data.analytic import OCRWorkloadProfile
from llm_perf_opt.data.common import AttentionKind
from llm_perf_opt.inputs.pages import Page
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modes import token_layout
from llm_perf_opt.profiling.mfu import StageWork, WorkFn
from llm_perf_opt.profiling.records import PassRecord
from llm_perf_opt.vocab import (
    DEFAULT_NO_REPEAT_NGRAM,
    EXPERTS_IMPLEMENTATIONS,
    VISION_STAGES,
    DType,
    ExpertsImplementation,
    Stage,
)

if TYPE_CHECKING:
    from llm_perf_opt.profiling.session import SessionSettings

#: How the work numbers were obtained (for assumptions.md).
ANALYTIC_NOTE = ("llm_perf_opt.analytic.model.AnalyticModel per pass workload (mode, page size and tile grid, "
                 "prompt text tokens incl. BOS, decode steps, batch, dtype, attention, experts implementation, n-gram ban); measured prefill = analytic "
                 "vision stages + analytic prefill; decode = (decode steps - 1) forwards at the mean KV length; "
                 "FLOPs = tensor-core + CUDA-core FLOPs, bytes = the model's forward I/O estimate")


def _stage_work(model: AnalyticModel) -> dict[Stage, StageWork]:
    out: dict[Stage, StageWork] = {}
    for stage in VISION_STAGES:
        cost = model.stages[stage]
        out[stage] = StageWork(flops=cost.forward_flops(), bytes=cost.forward_cal_io())
    pre = model.stages[Stage.PREFILL]
    out[Stage.PREFILL] = StageWork(
        flops=pre.forward_flops() + sum(out[s].flops for s in VISION_STAGES),
        bytes=pre.forward_cal_io() + sum(out[s].bytes for s in VISION_STAGES),
    )
    steps = model.shape.decode_forwards
    dec = model.stages[Stage.DECODE]
    out[Stage.DECODE] = StageWork(flops=steps * dec.forward_flops(), bytes=steps * dec.forward_cal_io())
    return out


def make_work_fn(config: DeepseekOCRConfig, pages: Sequence[Page], *, mode: str, dtype: DType,
                 attn_implementation: str, experts_implementation: str = "grouped_mm",
                 no_repeat_ngram_size: int = DEFAULT_NO_REPEAT_NGRAM) -> WorkFn:
    """A function giving the analytic work of every stage of a pass (cached per distinct workload).

    The work depends on a page's size only through its token layout (the tile grid; every page of a mode
    without tiles has one layout). Pages of one batch with one layout form one workload at that batch size.
    A batch of several layouts (Gundam pages of different aspect) is the sum of one workload per layout at
    its number of pages: weight traffic is then counted once per layout, so MBU is an upper estimate.
    """
    cache: dict[tuple[int, int, int, int, int], dict[Stage, StageWork]] = {}
    attention = AttentionKind(attn_implementation)
    if experts_implementation not in EXPERTS_IMPLEMENTATIONS:
        raise ValueError(f"experts implementation {experts_implementation!r} not in {EXPERTS_IMPLEMENTATIONS}")
    experts = cast(ExpertsImplementation, experts_implementation)

    def work_of(width: int, height: int, text_tokens: int, new_tokens: int, batch: int) -> dict[Stage, StageWork]:
        """The work of ``batch`` pages of this page's layout (pages of one layout have the same work)."""
        layout = token_layout(mode, width, height)
        key = (layout.rows, layout.cols, text_tokens, new_tokens, batch)
        if key not in cache:
            wl = OCRWorkloadProfile.create(profile_id=f"{mode}-{width}x{height}-b{batch}", mode=mode,
                                           image_width_px=width, image_height_px=height,
                                           prompt_text_tokens=text_tokens, max_new_tokens=new_tokens,
                                           batch_size=batch, dtype=dtype, attention=attention, experts=experts,
                                           no_repeat_ngram_size=no_repeat_ngram_size)
            cache[key] = _stage_work(AnalyticModel(config, wl))
        return cache[key]

    def work(record: PassRecord) -> Mapping[Stage, StageWork]:
        batch_pages = [pages[i] for i in record.image_indices]
        if not batch_pages or record.decode_steps < 1:
            return {}
        text_tokens = (record.prompt_tokens - record.image_slots) // len(batch_pages)  # BOS + text per row
        groups: dict[tuple[int, int], list[Page]] = {}  # (tile rows, tile cols) -> pages
        for p in batch_pages:
            layout = token_layout(mode, p.width, p.height)
            groups.setdefault((layout.rows, layout.cols), []).append(p)
        parts = [work_of(g[0].width, g[0].height, text_tokens, record.decode_steps, len(g)) for g in groups.values()]
        if len(parts) == 1:
            return parts[0]
        total: dict[Stage, StageWork] = {}
        for part in parts:
            for stage, sw in part.items():
                prev = total.get(stage, StageWork(flops=0.0, bytes=0.0))
                total[stage] = StageWork(flops=prev.flops + sw.flops, bytes=prev.bytes + sw.bytes)
        return total

    return work


def session_work_fn_factory(settings: SessionSettings,
                            pages: Sequence[Page]) -> Callable[[DeepseekOCRConfig], tuple[WorkFn, str]]:
    """The work function of a run's passes, given the model config it ran (the profiler's and a rebuild's
    ``ProfileRunner.work_fn_factory``), with the note that says how the work was obtained."""

    def factory(config: DeepseekOCRConfig) -> tuple[WorkFn, str]:
        return make_work_fn(config, pages, mode=settings.mode, dtype=settings.dtype,
                            attn_implementation=settings.attn_implementation,
                            experts_implementation=settings.experts_implementation,
                            no_repeat_ngram_size=settings.no_repeat_ngram_size), ANALYTIC_NOTE

    return factory
