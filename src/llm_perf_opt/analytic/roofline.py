"""Roofline time of analytic layers on a catalogued GPU.

Per leaf layer and operator category (the formula is held once in
:func:`llm_perf_opt.analytic.calibration.roofline_time_s`)::

    t = max(compute_s / ce, memory_s / be) + launches * launch_overhead_s
    compute_s = tensor_core_flops / tensor_peak(dtype) + cuda_core_flops / fp32_cuda_core_peak
    memory_s  = io_bytes / memory_bandwidth

A composite's time is the SUM of its leaves' times (kernels run one after the
other), never the roofline of its summed work. Peaks are the catalogue's
datasheet numbers unless measured ceilings are given (``effective_peaks``);
efficiencies and the launch cost come from a calibration (default: pure
roofline, efficiency 1, no launch cost).

Decode over N steps: every leaf's FLOPs and bytes are linear in the KV length
L, so compute_s(i) and memory_s(i) are linear in the step i and the sum of
max(.,.) over the steps has a closed form (:func:`sum_max_linear`).
"""

from __future__ import annotations

import math

from attrs import define, field

from llm_perf_opt.analytic.base import CC, IO, LAUNCH, TC, BaseLayer
from llm_perf_opt.analytic.calibration import PURE_ROOFLINE, EfficiencyModel
from llm_perf_opt.data.common import Bound, PeakSource
from llm_perf_opt.hardware.bench import EffectivePeaks
from llm_perf_opt.vocab import DType, OperatorCategory


@define(kw_only=True, frozen=True)
class RooflinePeaks:
    """The rates one prediction divides by (base units) and where they came from."""

    gpu_key: str = field(metadata={"help": "catalogue key"})
    tensor_core_flops_per_s: float = field(metadata={"help": "dense tensor-core peak for the workload dtype"})
    cuda_core_flops_per_s: float = field(metadata={"help": "non-tensor FP32 peak, FLOP/s"})
    memory_bytes_per_s: float = field(metadata={"help": "memory bandwidth, bytes/s"})
    memory_capacity_bytes: float = field(metadata={"help": "device memory, bytes"})
    source: PeakSource = field(metadata={"help": "datasheet or measured"})
    source_ref: str = field(metadata={"help": "citation"})

    @classmethod
    def from_effective(cls, peaks: EffectivePeaks, dtype: DType) -> RooflinePeaks:
        """Select the workload dtype's tensor peak from hardware.effective_peaks output."""
        return cls(gpu_key=peaks.gpu_key, tensor_core_flops_per_s=peaks.peak_flops_per_s(dtype),
                   cuda_core_flops_per_s=peaks.cuda_core_flops_per_s,
                   memory_bytes_per_s=peaks.memory_bandwidth_bytes_per_s,
                   memory_capacity_bytes=float(peaks.memory_capacity_bytes), source=peaks.source,
                   source_ref=peaks.source_ref)


@define(slots=True)
class TimeParts:
    """Predicted time of a node and how it splits (seconds)."""

    time_s: float = 0.0
    compute_s: float = 0.0
    memory_s: float = 0.0
    launch_s: float = 0.0
    compute_bound_s: float = 0.0
    memory_bound_s: float = 0.0

    def add(self, other: TimeParts, scale: float = 1.0) -> None:
        """Accumulate ``other`` x ``scale``."""
        self.time_s += other.time_s * scale
        self.compute_s += other.compute_s * scale
        self.memory_s += other.memory_s * scale
        self.launch_s += other.launch_s * scale
        self.compute_bound_s += other.compute_bound_s * scale
        self.memory_bound_s += other.memory_bound_s * scale

    @property
    def bound(self) -> Bound:
        """What limits the node: launch when launches cost more than the roofline part, else the larger side."""
        if self.launch_s > self.compute_bound_s + self.memory_bound_s:
            return Bound.LAUNCH
        return Bound.COMPUTE if self.compute_bound_s >= self.memory_bound_s else Bound.MEMORY


def _split(vec: list[float], cat: OperatorCategory, peaks: RooflinePeaks,
           eff: EfficiencyModel) -> tuple[float, float, float]:
    """(compute_s / ce, memory_s / be, launch_s) of one category vector."""
    compute = vec[TC] / peaks.tensor_core_flops_per_s + vec[CC] / peaks.cuda_core_flops_per_s
    memory = vec[IO] / peaks.memory_bytes_per_s
    c = compute / eff.compute_efficiency(cat) if compute else 0.0
    m = memory / eff.bandwidth_efficiency(cat) if memory else 0.0
    return c, m, vec[LAUNCH] * eff.launch_overhead_s


def node_times(layer: BaseLayer, peaks: RooflinePeaks, eff: EfficiencyModel | None = None,
               out: dict[int, TimeParts] | None = None) -> dict[int, TimeParts]:
    """TimeParts for ``layer`` and every node under it, keyed by ``id(node)`` (one call of each node,
    its own ``count`` included); a node held at several places is computed once."""
    eff = eff or PURE_ROOFLINE
    out = {} if out is None else out
    _fill(layer, peaks, eff, out, set())
    return out


def _fill(layer: BaseLayer, peaks: RooflinePeaks, eff: EfficiencyModel, out: dict[int, TimeParts],
          done: set[int]) -> TimeParts:
    """``done``: ids of the nodes of this walk already in ``out`` (the tree keeps them alive)."""
    if id(layer) in done:
        return out[id(layer)]
    parts = TimeParts()
    for cat, vec in layer.ops.items():
        c, m, launch = _split(vec, cat, peaks, eff)
        parts.time_s += max(c, m) + launch
        parts.compute_s += c
        parts.memory_s += m
        parts.launch_s += launch
        if c >= m:
            parts.compute_bound_s += c
        else:
            parts.memory_bound_s += m
    for child in layer.children:
        parts.add(_fill(child, peaks, eff, out, done))
    if layer.count != 1:
        scaled = TimeParts()
        scaled.add(parts, layer.count)
        parts = scaled
    out[id(layer)] = parts
    done.add(id(layer))
    return parts


def sum_linear(first: float, last: float, n: int, i0: int, i1: int) -> float:
    """Sum over i in [i0, i1) of the linear f with f(0) = first, f(n-1) = last."""
    k = i1 - i0
    if k <= 0:
        return 0.0
    if n <= 1:
        return first * k
    slope = (last - first) / (n - 1)
    return k * first + slope * (i0 + i1 - 1) * k / 2


def sum_max_linear(f0: float, f1: float, g0: float, g1: float, n: int) -> float:
    """Sum over i = 0..n-1 of max(f(i), g(i)) for linear f, g given at i = 0 and i = n - 1 (exact)."""
    if n <= 0:
        return 0.0
    if n == 1:
        return max(f0, g0)
    d0, d1 = f0 - g0, f1 - g1
    if d0 >= 0 and d1 >= 0:
        return sum_linear(f0, f1, n, 0, n)
    if d0 <= 0 and d1 <= 0:
        return sum_linear(g0, g1, n, 0, n)
    x = d0 / (d0 - d1) * (n - 1)  # crossing point in step units
    k = min(max(int(math.floor(x)) + 1, 0), n)  # steps 0..k-1 on the side that wins at 0
    if d0 > 0:
        return sum_linear(f0, f1, n, 0, k) + sum_linear(g0, g1, n, k, n)
    return sum_linear(g0, g1, n, 0, k) + sum_linear(f0, f1, n, k, n)


def summed_node_times(first: BaseLayer, last: BaseLayer, steps: int, peaks: RooflinePeaks,
                      eff: EfficiencyModel | None = None) -> dict[int, TimeParts]:
    """TimeParts summed over ``steps`` decode steps for every node of ``first`` (keyed by id of ``first``'s
    nodes); ``first`` and ``last`` are the same tree built at the first and last step's KV length."""
    eff = eff or PURE_ROOFLINE
    out: dict[int, TimeParts] = {}
    _fill_sum(first, last, steps, peaks, eff, out, {})
    return out


def _fill_sum(a: BaseLayer, b: BaseLayer, n: int, peaks: RooflinePeaks, eff: EfficiencyModel,
              out: dict[int, TimeParts], done: dict[tuple[int, int], TimeParts]) -> TimeParts:
    """``done``: the pairs of this walk already summed (a node pair held at several places)."""
    hit = done.get((id(a), id(b)))
    if hit is not None:
        return hit
    parts = TimeParts()
    for cat, va in a.ops.items():
        vb = b.ops[cat]
        ca, ma, la = _split(va, cat, peaks, eff)
        cb, mb, lb = _split(vb, cat, peaks, eff)
        total = sum_max_linear(ca, cb, ma, mb, n) + sum_linear(la, lb, n, 0, n)
        c_sum, m_sum = sum_linear(ca, cb, n, 0, n), sum_linear(ma, mb, n, 0, n)
        parts.time_s += total
        parts.compute_s += c_sum
        parts.memory_s += m_sum
        parts.launch_s += sum_linear(la, lb, n, 0, n)
        if c_sum >= m_sum:
            parts.compute_bound_s += c_sum
        else:
            parts.memory_bound_s += m_sum
    for ca_, cb_ in zip(a.children, b.children, strict=True):
        parts.add(_fill_sum(ca_, cb_, n, peaks, eff, out, done))
    if a.count != 1:
        scaled = TimeParts()
        scaled.add(parts, a.count)
        parts = scaled
    out[id(a)] = parts
    done[(id(a), id(b))] = parts
    return parts
