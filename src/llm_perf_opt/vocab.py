"""The one vocabulary of llm-perf-opt: stage names, operator categories, dtypes.

NVTX range names, the analytic module tree, the operator table and every
report use these strings; nothing else may invent a stage or category name.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args


class Stage(StrEnum):
    """Inference stages of DeepSeek-OCR, in execution order."""

    VISION_SAM = "vision.sam"
    VISION_CLIP = "vision.clip"
    PROJECTOR = "projector"
    PREFILL = "prefill"
    DECODE = "decode"


#: The vision sub-stages (measured inside prefill, reported separately).
VISION_STAGES: tuple[Stage, ...] = (Stage.VISION_SAM, Stage.VISION_CLIP, Stage.PROJECTOR)

#: NVTX range name of one decode step; formatted with the step index.
DECODE_STEP_RANGE = "decode.step.{step}"


class OperatorCategory(StrEnum):
    """Operator categories shared by the analytic model and the operator table."""

    ATTENTION = "attention"
    GEMM = "gemm"
    MOE_ROUTER = "moe_router"
    MOE_EXPERTS = "moe_experts"
    CONV = "conv"
    NORM = "norm"
    ELEMENTWISE = "activation/elementwise"
    EMBEDDING = "embedding"
    LM_HEAD = "lm_head"
    MEMORY = "memory/other"
    UNCATEGORIZED = "uncategorized"


class DType(StrEnum):
    """Compute dtypes the project models and runs."""

    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"
    FP8 = "fp8"
    TF32 = "tf32"


#: Bytes per element of each dtype.
DTYPE_BYTES: dict[DType, int] = {
    DType.BF16: 2,
    DType.FP16: 2,
    DType.FP32: 4,
    DType.FP8: 1,
    DType.TF32: 4,
}


def parse_dtype(name: str) -> DType:
    """Parse 'bf16' / 'bfloat16' / 'fp16' / 'float16' / 'fp32' / 'float32' (case-insensitive).

    Raises ValueError naming the accepted spellings.
    """
    aliases = {
        "bf16": DType.BF16, "bfloat16": DType.BF16,
        "fp16": DType.FP16, "float16": DType.FP16, "half": DType.FP16,
        "fp32": DType.FP32, "float32": DType.FP32, "float": DType.FP32,
        "fp8": DType.FP8, "tf32": DType.TF32,
    }
    key = name.strip().lower()
    if key not in aliases:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(aliases)}")
    return aliases[key]


#: The reference inference default (FACTS.md, "Inference defaults": no_repeat_ngram_size 20): greedy decoding
#: bans every token that would repeat an n-gram of this size already in the row (0 = no ban).
DEFAULT_NO_REPEAT_NGRAM = 20

#: MoE experts implementations of transformers (``experts_implementation``) the project runs and models:
#: grouped_mm (one grouped GEMM per projection), batched_mm (weights gathered per token), eager (per-expert loop)
ExpertsImplementation = Literal["grouped_mm", "batched_mm", "eager"]
EXPERTS_IMPLEMENTATIONS: tuple[str, ...] = get_args(ExpertsImplementation)
