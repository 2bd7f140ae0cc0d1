"""GPU catalogue (sourced dense peaks), local-GPU detection and measured ceilings.

Public API::

    load_catalog(extra=None) -> GpuCatalog      # .get(name), .resolve_device(name, mem), .keys()
    GpuSpec.peak_flops_per_s(dtype)             # dense FLOP/s; UserError if the chip lacks dtype
    detect_gpu() -> DetectedGpu | None
    load_ceilings(path) -> MeasuredCeilings; effective_peaks(spec, ceilings | None)
"""

from llm_perf_opt.hardware.bench import (
    EffectivePeaks,
    MeasuredCeilings,
    NoGpuError,
    effective_peaks,
    load_ceilings,
    save_ceilings,
)
from llm_perf_opt.hardware.catalog import (
    AmbiguousGpuError,
    CatalogError,
    GpuCatalog,
    GpuSpec,
    UnknownGpuError,
    load_catalog,
)
from llm_perf_opt.hardware.detect import DetectedGpu, detect_gpu

__all__ = [
    "AmbiguousGpuError",
    "CatalogError",
    "DetectedGpu",
    "EffectivePeaks",
    "GpuCatalog",
    "GpuSpec",
    "MeasuredCeilings",
    "NoGpuError",
    "UnknownGpuError",
    "detect_gpu",
    "effective_peaks",
    "load_catalog",
    "load_ceilings",
    "save_ceilings",
]
