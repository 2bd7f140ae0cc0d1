"""The GEMM shapes the analytic model of a workload runs: what ``hw bench`` times for the device model.

A workload here is ``MODE:BATCH`` over the standard page and prompt of
:mod:`llm_perf_opt.analytic.workloads` with eager attention (the implementation
the profiled runs use) and GEMM_WORKLOAD_NEW_TOKENS new tokens; its GEMM keys (:mod:`llm_perf_opt.hardware.gemms`) are
those the analytic layers tag in every stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from llm_perf_opt.analytic.base import BaseLayer
from llm_perf_opt.errors import UserError
from llm_perf_opt.models.deepseek_ocr.modes import MODES
from llm_perf_opt.vocab import Stage

#: Batch sizes timed by default (the profiled runs' batches).
DEFAULT_GEMM_BATCHES: tuple[int, ...] = (1, 2, 4)
#: New tokens of the workloads whose shapes are timed: the decode step's mean KV length (its attention
#: products' shape) follows from it; 64 as in the profiled runs (scripts/gpu/calibration_set.sh TOKENS)
GEMM_WORKLOAD_NEW_TOKENS = 64


def default_gemm_workloads() -> list[str]:
    """Every resolution mode at each of DEFAULT_GEMM_BATCHES, as ``MODE:BATCH``."""
    return [f"{mode}:{b}" for mode in MODES for b in DEFAULT_GEMM_BATCHES]


def parse_workload(text: str) -> tuple[str, int]:
    """``MODE:BATCH`` -> (mode, batch); UserError naming the problem."""
    mode, sep, batch = text.strip().partition(":")
    if not sep or not batch.isdigit() or int(batch) < 1:
        raise UserError(f"GEMM workload {text!r}: expected MODE:BATCH with a batch >= 1 (e.g. base:1)")
    if mode.lower() not in MODES:
        raise UserError(f"GEMM workload {text!r}: unknown mode {mode!r}; known: {', '.join(MODES)}")
    return mode.lower(), int(batch)


def tree_gemm_keys(stages: Mapping[Stage, BaseLayer] | Iterable[BaseLayer]) -> set[str]:
    """Every GEMM key tagged anywhere in the given stage trees."""
    roots = stages.values() if isinstance(stages, Mapping) else stages
    keys: set[str] = set()
    for root in roots:
        for _path, layer in root.walk():
            for by_key in layer.gemm_ops.values():
                keys.update(by_key)
    return keys


def workload_gemm_keys(workloads: Sequence[str], config_name: str = "default") -> list[str]:
    """Sorted GEMM keys of the analytic model of each ``MODE:BATCH`` workload (module doc)."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.workloads import get_profile, with_overrides
    from llm_perf_opt.data.common import AttentionKind
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig

    if not workloads:
        raise UserError("GEMM workloads: give at least one MODE:BATCH")
    config = DeepseekOCRConfig.named(config_name)
    keys: set[str] = set()
    for text in workloads:
        mode, batch = parse_workload(text)
        wl = with_overrides(get_profile(f"dsocr-{mode}-v1"), batch_size=batch, attention=AttentionKind.EAGER,
                            max_new_tokens=GEMM_WORKLOAD_NEW_TOKENS)
        keys |= tree_gemm_keys(AnalyticModel(config, wl).stages)
    return sorted(keys)
