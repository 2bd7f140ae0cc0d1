"""Executable DeepSeek-OCR (v1): config, modules, checkpoint loading, preprocessing, prompt, generation.

See docs/model.md for the module paths and the API. The names below load their submodule on first use
(PEP 562), so importing the package (the analytic model needs only its config) does not import torch or
transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: exported name -> submodule that defines it
_SUBMODULE = {
    "CheckpointError": "checkpoint",
    "export_official_state_dict": "checkpoint",
    "load_pretrained": "checkpoint",
    "official_state_dict_keys": "checkpoint",
    "official_to_module": "checkpoint",
    "ConfigError": "config",
    "DeepseekOCRConfig": "config",
    "DecodeState": "generation",
    "GenerationResult": "generation",
    "PrefillState": "generation",
    "decode_step": "generation",
    "generate": "generation",
    "kv_cache_shapes": "generation",
    "prefill": "generation",
    "DeepseekOCRForCausalLM": "modeling",
    "DeepseekOCRModel": "modeling",
    "Scope": "modeling",
    "build_model": "modeling",
    "parameter_summary": "modeling",
    "MODES": "modes",
    "ModeError": "modes",
    "ResolutionMode": "modes",
    "TokenLayout": "modes",
    "get_mode": "modes",
    "token_layout": "modes",
    "ImageError": "preprocess",
    "PreprocessedImage": "preprocess",
    "preprocess_image": "preprocess",
    "DEFAULT_PROMPT": "prompt",
    "PROMPTS": "prompt",
    "PromptBatch": "prompt",
    "build_prompt": "prompt",
    "load_tokenizer": "prompt",
    "synthetic_text_tokens": "prompt",
}


def __getattr__(name: str) -> Any:
    module = _SUBMODULE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULE))


if TYPE_CHECKING:
    from llm_perf_opt.models.deepseek_ocr.checkpoint import (
        CheckpointError,
        export_official_state_dict,
        load_pretrained,
        official_state_dict_keys,
        official_to_module,
    )
    from llm_perf_opt.models.deepseek_ocr.config import ConfigError, DeepseekOCRConfig
    from llm_perf_opt.models.deepseek_ocr.generation import (
        DecodeState,
        GenerationResult,
        PrefillState,
        decode_step,
        generate,
        kv_cache_shapes,
        prefill,
    )
    from llm_perf_opt.models.deepseek_ocr.modeling import (
        DeepseekOCRForCausalLM,
        DeepseekOCRModel,
        Scope,
        build_model,
        parameter_summary,
    )
    from llm_perf_opt.models.deepseek_ocr.modes import (
        MODES,
        ModeError,
        ResolutionMode,
        TokenLayout,
        get_mode,
        token_layout,
    )
    from llm_perf_opt.models.deepseek_ocr.preprocess import ImageError, PreprocessedImage, preprocess_image
    from llm_perf_opt.models.deepseek_ocr.prompt import (
        DEFAULT_PROMPT,
        PROMPTS,
        PromptBatch,
        build_prompt,
        load_tokenizer,
        synthetic_text_tokens,
    )

__all__ = [
    "DEFAULT_PROMPT", "MODES", "PROMPTS", "CheckpointError", "ConfigError", "DecodeState",
    "DeepseekOCRConfig", "DeepseekOCRForCausalLM", "DeepseekOCRModel", "GenerationResult", "ImageError",
    "ModeError", "PrefillState", "PreprocessedImage", "PromptBatch", "ResolutionMode", "Scope", "TokenLayout",
    "build_model", "build_prompt", "decode_step", "export_official_state_dict", "generate", "get_mode",
    "kv_cache_shapes", "load_pretrained", "load_tokenizer", "official_state_dict_keys", "official_to_module",
    "parameter_summary", "prefill", "preprocess_image", "synthetic_text_tokens", "token_layout",
]
