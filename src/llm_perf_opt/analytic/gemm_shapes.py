"""The GEMM shapes the analytic model of a workload runs: what ``hw bench`` times for the device model.

A workload here is ``MODE:BATCH[:TOKENS]`` over the standard page and prompt of
:mod:`llm_perf_opt.analytic.workloads` with eager attention (the implementation
the profiled runs use) and TOKENS new tokens (default GEMM_WORKLOAD_NEW_TOKENS); its GEMM keys (:mod:`llm_perf_opt.hardware.gemms`) are
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


def parse_gemm_workload(text: str) -> tuple[str, int, int]:
    """``MODE:BATCH[:TOKENS]`` -> (mode, batch, new tokens; GEMM_WORKLOAD_NEW_TOKENS when not given);
    UserError naming the problem."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() and int(p) >= 1 for p in parts[1:]):
        raise UserError(f"GEMM workload {text!r}: expected MODE:BATCH or MODE:BATCH:TOKENS with a batch and new "
                        "tokens >= 1 (e.g. base:1, small:320:1024)")
    mode = parts[0].lower()
    if mode not in MODES:
        raise UserError(f"GEMM workload {text!r}: unknown mode {parts[0]!r}; known: {', '.join(MODES)}")
    return mode, int(parts[1]), int(parts[2]) if len(parts) == 3 else GEMM_WORKLOAD_NEW_TOKENS


def parse_workload(text: str) -> tuple[str, int]:
    """``MODE:BATCH`` -> (mode, batch); UserError naming the problem (new tokens are not taken here)."""
    _mode, sep, rest = text.strip().partition(":")
    if not sep or not rest.isdigit() or int(rest) < 1:
        raise UserError(f"workload {text!r}: expected MODE:BATCH with a batch >= 1 (e.g. base:1)")
    mode, batch, _tokens = parse_gemm_workload(text)
    return mode, batch


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
    """Sorted GEMM keys of the analytic model of each ``MODE:BATCH[:TOKENS]`` workload (module doc): its
    stages and the decode step of each group of forwards that the timeline model times
    (``AnalyticModel.decode_segment_steps``, each at its own KV length)."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.workloads import get_profile, with_overrides
    from llm_perf_opt.data.common import AttentionKind
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig

    if not workloads:
        raise UserError("GEMM workloads: give at least one MODE:BATCH[:TOKENS]")
    config = DeepseekOCRConfig.named(config_name)
    keys: set[str] = set()
    for text in workloads:
        mode, batch, tokens = parse_gemm_workload(text)
        wl = with_overrides(get_profile(f"dsocr-{mode}-v1"), batch_size=batch, attention=AttentionKind.EAGER,
                            max_new_tokens=tokens)
        model = AnalyticModel(config, wl)
        keys |= tree_gemm_keys(model.stages)
        keys |= tree_gemm_keys(step for step, _forwards in model.decode_segment_steps())
    return sorted(keys)
