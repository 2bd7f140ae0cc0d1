"""Executable DeepSeek-OCR (v1): config, modules, checkpoint loading, preprocessing, prompt, generation.

See docs/model.md for the module paths and the API.
"""

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
