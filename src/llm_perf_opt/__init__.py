"""llm-perf-opt: measure, model and predict DeepSeek-OCR inference performance on GPUs."""

__version__ = "0.1.0"
