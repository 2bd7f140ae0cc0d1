"""Small enumerations and the Stats record shared by the profiling and analytic models.

Stage, operator-category and dtype names live in :mod:`llm_perf_opt.vocab`;
the enumerations here are the remaining closed sets of the data model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from attrs import define, field

from llm_perf_opt.data.validators import FieldValueError, at_least, finite, non_negative


class WeightsSource(StrEnum):
    """Where the model weights came from."""

    RANDOM = "random"
    CHECKPOINT = "checkpoint"


class AttentionKind(StrEnum):
    """Attention implementation (transformers names: eager, sdpa, flash_attention_2)."""

    EAGER = "eager"
    SDPA = "sdpa"
    FLASH = "flash"


class ImageCategory(StrEnum):
    """Coarse page category of an input image."""

    TEXT_HEAVY = "text_heavy"
    MIXED_LAYOUT = "mixed_layout"
    IMAGE_RICH = "image_rich"
    UNKNOWN = "unknown"


class ImageSource(StrEnum):
    """How an input image entered the set."""

    FOLDER = "folder"
    LIST = "list"
    PDF = "pdf"
    SYNTHETIC = "synthetic"


class Repetition(StrEnum):
    """How a module node repeats: once, sequentially (for), or in parallel (parfor)."""

    NONE = "none"
    FOR = "for"
    PARFOR = "parfor"


class Bound(StrEnum):
    """Roofline limiter of a module."""

    COMPUTE = "compute"
    MEMORY = "memory"
    LAUNCH = "launch"


class PeakSource(StrEnum):
    """Origin of the hardware peaks a prediction used."""

    DATASHEET = "datasheet"
    MEASURED = "measured"


#: Relative slack for order checks on floats computed from the same samples.
_ORDER_TOL = 1e-9


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default method) of sorted values; q in [0, 100]."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


@define(kw_only=True, frozen=True)
class Stats:
    """Summary statistics of one sample; the unit is that of the field holding it."""

    mean: float = field(validator=finite, metadata={"help": "arithmetic mean"})
    std: float = field(validator=non_negative, metadata={"help": "population standard deviation (ddof=0)"})
    min: float = field(validator=finite, metadata={"help": "smallest sample"})
    max: float = field(validator=finite, metadata={"help": "largest sample"})
    p50: float = field(validator=finite, metadata={"help": "median (linear interpolation)"})
    p90: float = field(validator=finite, metadata={"help": "90th percentile (linear interpolation)"})
    count: int = field(validator=at_least(1), metadata={"help": "number of samples (>= 1)"})

    def __attrs_post_init__(self) -> None:
        tol = _ORDER_TOL * max(1.0, abs(self.min), abs(self.max))
        order = [("min", self.min), ("p50", self.p50), ("p90", self.p90), ("max", self.max)]
        for (lo_name, lo), (hi_name, hi) in zip(order, order[1:], strict=False):
            if lo > hi + tol:
                raise FieldValueError(hi_name, f"{hi!r} is below {lo_name} {lo!r}")
        if not self.min - tol <= self.mean <= self.max + tol:
            raise FieldValueError("mean", f"{self.mean!r} outside [min, max] = [{self.min!r}, {self.max!r}]")

    @classmethod
    def from_values(cls, values: Iterable[float]) -> Stats:
        """Stats of a non-empty sample; ValueError when empty or not finite."""
        data = sorted(float(v) for v in values)
        if not data:
            raise ValueError("Stats.from_values needs at least one value")
        if not all(math.isfinite(v) for v in data):
            raise ValueError("Stats.from_values got a non-finite value")
        n = len(data)
        mean = math.fsum(data) / n
        mean = min(max(mean, data[0]), data[-1])
        var = math.fsum((v - mean) ** 2 for v in data) / n
        return cls(mean=mean, std=math.sqrt(var), min=data[0], max=data[-1],
                   p50=percentile(data, 50), p90=percentile(data, 90), count=n)

    def scaled(self, factor: float) -> Stats:
        """The same statistics with every value multiplied by ``factor`` > 0 (unit conversion)."""
        if factor <= 0:
            raise ValueError("scale factor must be > 0")
        return Stats(mean=self.mean * factor, std=self.std * factor, min=self.min * factor,
                     max=self.max * factor, p50=self.p50 * factor, p90=self.p90 * factor, count=self.count)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for tables)."""
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
                "p50": self.p50, "p90": self.p90, "count": self.count}
