"""Measured ceilings: achievable matmul FLOP/s and device-memory bandwidth on the local GPU.

``run_bench`` times a square matmul per dtype (random data, warm-up, CUDA events,
median of repeats) and a device-to-device copy of a buffer several times the L2
size (bytes read + written), and returns :class:`MeasuredCeilings`; ``save_ceilings``
/ ``load_ceilings`` keep them in a JSON or YAML calibration file. Analytic and
MFU code take the peaks to divide by from :func:`effective_peaks`, which prefers
measured ceilings over datasheet figures and says which it used per number.

The arithmetic turning timings into rates (:func:`matmul_flops`,
:func:`copy_bytes_moved`, :func:`rate_from_times`) is separate from the timer,
so it is tested on CPU with a fake timer.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import attrs
import yaml
from attrs import define, field

from llm_perf_opt.data.common import PeakSource
from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.catalog import GIB, MIB, GpuSpec
from llm_perf_opt.hardware.gemms import QueuedTimer, measure_gemms, queued_cuda_timer, split_gemm_key
from llm_perf_opt.hardware.patterns import (
    DEFAULT_PATTERN_SCORES,
    DEFAULT_PATTERN_SIDES,
    measure_patterns,
    split_key,
)
from llm_perf_opt.vocab import DType, parse_dtype

#: Dtypes the matmul benchmark can measure (fp8 needs scaled-matmul kernels and is not measured).
BENCH_DTYPES: tuple[DType, ...] = (DType.BF16, DType.FP16, DType.TF32, DType.FP32)
DEFAULT_DTYPES: tuple[DType, ...] = (DType.BF16, DType.FP16)
DEFAULT_MATMUL_SIZE = 8192
DEFAULT_WARMUP = 10
DEFAULT_REPEATS = 20
DEFAULT_INNER = 5
#: Copy buffer: the larger of this and COPY_L2_MULTIPLE x L2 (2 GiB as in the reference H100 measurement).
DEFAULT_COPY_BYTES = 2 * GIB
COPY_L2_MULTIPLE = 8
CEILINGS_FORMAT_VERSION = 1


def _dtype(dtype: DType | str) -> DType:
    if isinstance(dtype, DType):
        return dtype
    try:
        return parse_dtype(dtype)
    except ValueError as exc:
        raise UserError(str(exc)) from None


class NoGpuError(UserError):
    """No CUDA device is visible (CPU-only machine or CUDA_VISIBLE_DEVICES hides all)."""


class CeilingsError(UserError):
    """A calibration file that is missing, unreadable or malformed; the message names file and field."""


class Timer(Protocol):
    """Times ``fn`` (which runs ``inner`` operations) and returns one duration per repeat, ms per call of fn."""

    def __call__(self, fn: Callable[[], object], *, warmup: int, repeats: int) -> list[float]: ...


def matmul_flops(m: int, n: int, k: int) -> int:
    """FLOPs of an (m x k) @ (k x n) product: 2*m*n*k (one multiply + one add per MAC)."""
    return 2 * m * n * k


def copy_bytes_moved(buffer_bytes: int) -> int:
    """Bytes moved by a device-to-device copy of ``buffer_bytes``: read once + written once."""
    return 2 * buffer_bytes


def rate_from_times(work_per_call: float, times_ms: Sequence[float], ops_per_call: int = 1) -> float:
    """Median rate (work units per second) of calls that each did ``ops_per_call`` x ``work_per_call`` of work.

    ``times_ms`` holds the duration of each timed call in milliseconds; the median is used so a
    stray slow repeat does not move the result. Raises ValueError on empty or non-positive times.
    """
    if not times_ms:
        raise ValueError("no timings")
    if any(not math.isfinite(t) or t <= 0 for t in times_ms):
        raise ValueError(f"timings must be positive and finite, got {list(times_ms)}")
    median_s = statistics.median(times_ms) / 1e3
    return work_per_call * ops_per_call / median_s


def copy_buffer_bytes(l2_bytes: int | None, free_bytes: int | None, requested: int | None = None) -> int:
    """Size of each copy buffer: ``requested`` or max(2 GiB, 8 x L2), capped so src+dst fit in half the free memory.

    Raises UserError when the buffer would not be at least 4 x L2 (too small to measure DRAM).
    """
    want = requested if requested is not None else max(DEFAULT_COPY_BYTES, COPY_L2_MULTIPLE * (l2_bytes or 0))
    if free_bytes is not None:
        want = min(want, free_bytes // 4)
    want -= want % MIB if want >= MIB else 0
    floor = 4 * (l2_bytes or 0)
    if want <= 0 or want < floor:
        raise UserError(f"copy buffer of {want} bytes is smaller than 4 x L2 ({floor} bytes); "
                        "free device memory or pass a larger --copy-mib")
    return want


@define(kw_only=True, frozen=True)
class BenchMethod:
    """How the ceilings were measured (stored with them)."""

    matmul_size: int = field(metadata={"help": "square matmul side n (n x n @ n x n)"})
    warmup: int = field(metadata={"help": "untimed calls before timing"})
    repeats: int = field(metadata={"help": "timed repeats; the median is reported"})
    inner: int = field(metadata={"help": "operations per timed repeat (one CUDA-event pair around them)"})
    copy_buffer_bytes: int = field(metadata={"help": "bytes of each copy buffer (src and dst)"})
    timer: str = field(default="cuda-events", metadata={"help": "timing method"})
    statistic: str = field(default="median", metadata={"help": "statistic over repeats"})
    data: str = field(default="torch.randn, seed 0", metadata={"help": "input data"})
    bytes_counted: str = field(default="read + written", metadata={"help": "what a copy's bytes count"})
    pattern_scores: int = field(default=0, metadata={
        "help": "access patterns: scores per measured tensor (0: patterns not measured)"})
    pattern_groups: Mapping[str, int] = field(factory=dict, metadata={
        "help": "access patterns: token-grid side -> groups of s x s grids measured"})


@define(kw_only=True, frozen=True)
class MeasuredCeilings:
    """Achievable rates measured on one GPU; a calibration beside the datasheet peaks."""

    gpu_key: str | None = field(metadata={"help": "catalogue key of the measured GPU (None: not catalogued)"})
    device_name: str = field(metadata={"help": "driver's device name"})
    matmul_flops_per_s: Mapping[str, float] = field(metadata={"help": "dtype name -> median matmul FLOP/s"})
    memory_bandwidth_bytes_per_s: float = field(metadata={"help": "median copy bandwidth, bytes/s (read+write)"})
    method: BenchMethod = field(metadata={"help": "how it was measured"})
    torch_version: str = field(default="", metadata={"help": "torch.__version__"})
    cuda_version: str | None = field(default=None, metadata={"help": "torch.version.cuda"})
    driver_version: str | None = field(default=None, metadata={"help": "NVIDIA driver version, when known"})
    date_utc: str = field(default="", metadata={"help": "ISO-8601 UTC time of the measurement"})
    host: str = field(default="", metadata={"help": "host name"})
    matmul_times_ms: Mapping[str, list[float]] = field(factory=dict, metadata={
        "help": "dtype -> per-repeat ms per matmul"})
    copy_times_ms: list[float] = field(factory=list, metadata={"help": "per-repeat ms per copy"})
    pattern_bandwidth_bytes_per_s: Mapping[str, float] = field(factory=dict, metadata={
        "help": "access pattern '<pattern>@<side>' -> median bytes/s read + written "
                "(llm_perf_opt.hardware.patterns)"})
    pattern_times_ms: Mapping[str, list[float]] = field(factory=dict, metadata={
        "help": "access pattern -> per-repeat ms per call"})
    kernel_floor_s: float | None = field(default=None, metadata={
        "help": "device seconds per tiny kernel queued behind others (1-element add; None: not measured)"})
    kernel_gap_s: float | None = field(default=None, metadata={
        "help": "device seconds from one queued kernel's end to the next one's start (median over small "
                "kernels of mixed kinds queued back to back, from a torch.profiler trace; None: not measured)"})
    kernel_gap_duration_s: float | None = field(default=None, metadata={
        "help": "median device duration of those small kernels, s (their run time without the gap)"})
    kernel_gap_graph_s: float | None = field(default=None, metadata={
        "help": "device seconds from one kernel's end to the next one's start when replayed from a CUDA graph "
                "(median over the same small kernels captured in one graph, profiler trace; None: not measured)"})
    gemm_times_ms: Mapping[str, list[float]] = field(factory=dict, metadata={
        "help": "GEMM '<kind>@BxMxNxK' or call timed whole (experts, rope) -> per-repeat device ms per call, queued behind other work "
                "(llm_perf_opt.hardware.gemms)"})
    gemm_workloads: list[str] = field(factory=list, metadata={
        "help": "the workloads (mode:batch or mode:batch:tokens) whose analytic GEMM shapes were timed"})

    def flops_per_s(self, dtype: DType | str) -> float | None:
        """Measured matmul FLOP/s for ``dtype``, None if not measured; UserError for an unknown dtype name."""
        return self.matmul_flops_per_s.get(str(_dtype(dtype)))

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (the calibration file's content)."""
        out = attrs.asdict(self)
        out["format_version"] = CEILINGS_FORMAT_VERSION
        out["matmul_flops_per_s"] = dict(self.matmul_flops_per_s)
        out["matmul_times_ms"] = {k: list(v) for k, v in self.matmul_times_ms.items()}
        out["pattern_bandwidth_bytes_per_s"] = dict(self.pattern_bandwidth_bytes_per_s)
        out["pattern_times_ms"] = {k: list(v) for k, v in self.pattern_times_ms.items()}
        out["gemm_times_ms"] = {k: list(v) for k, v in self.gemm_times_ms.items()}
        out["method"]["pattern_groups"] = dict(self.method.pattern_groups)
        return out

    def pattern_ratios(self) -> dict[str, float]:
        """Access pattern -> its measured bandwidth / the measured copy bandwidth (empty if not measured)."""
        return {k: v / self.memory_bandwidth_bytes_per_s for k, v in self.pattern_bandwidth_bytes_per_s.items()}

    def gemm_times_s(self) -> dict[str, float]:
        """GEMM key -> median device seconds per call (empty if no GEMM was timed)."""
        return {k: statistics.median(v) * 1e-3 for k, v in self.gemm_times_ms.items() if v}

    def ratios_to(self, spec: GpuSpec) -> dict[str, float]:
        """Measured / datasheet for each measured dtype ('<dtype>') and for bandwidth ('memory_bandwidth')."""
        out = {d: v / spec.peak_flops_per_s(d) for d, v in self.matmul_flops_per_s.items()}
        out["memory_bandwidth"] = self.memory_bandwidth_bytes_per_s / spec.memory_bandwidth_bytes_per_s
        return out


def save_ceilings(ceilings: MeasuredCeilings, path: Path) -> Path:
    """Write ``ceilings`` as JSON (``.json``) or YAML (``.yaml``/``.yml``); returns the path."""
    path = Path(path)
    data = ceilings.as_dict()
    if path.suffix.lower() in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False)
    elif path.suffix.lower() == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        raise CeilingsError(f"{path}: ceilings file must end in .json, .yaml or .yml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _positive(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise CeilingsError(f"{where}: expected a positive number, got {value!r}")
    return float(value)


def load_ceilings(path: Path) -> MeasuredCeilings:
    """Read a ceilings file written by :func:`save_ceilings`; CeilingsError names the bad field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CeilingsError(f"{path}: ceilings file not found") from None
    except OSError as exc:
        raise CeilingsError(f"{path}: cannot read ceilings file ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise CeilingsError(f"{path}: not valid JSON/YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CeilingsError(f"{path}: expected a mapping")
    version = data.pop("format_version", None)
    if version != CEILINGS_FORMAT_VERSION:
        raise CeilingsError(f"{path}: format_version {version!r} is not {CEILINGS_FORMAT_VERSION}")
    for req in ("device_name", "matmul_flops_per_s", "memory_bandwidth_bytes_per_s", "method"):
        if req not in data:
            raise CeilingsError(f"{path}: field {req!r} missing")
    flops = data["matmul_flops_per_s"]
    if not isinstance(flops, dict):
        raise CeilingsError(f"{path}: matmul_flops_per_s must map dtype -> FLOP/s")
    clean: dict[str, float] = {}
    for name, value in flops.items():
        try:
            dtype = parse_dtype(str(name))
        except ValueError as exc:
            raise CeilingsError(f"{path}: matmul_flops_per_s.{name}: {exc}") from None
        clean[str(dtype)] = _positive(f"{path}: matmul_flops_per_s.{name}", value)
    data["matmul_flops_per_s"] = clean
    data["memory_bandwidth_bytes_per_s"] = _positive(f"{path}: memory_bandwidth_bytes_per_s",
                                                     data["memory_bandwidth_bytes_per_s"])
    method = data["method"]
    if not isinstance(method, dict):
        raise CeilingsError(f"{path}: method must be a mapping")
    for name in ("kernel_floor_s", "kernel_gap_duration_s"):
        if data.get(name) is not None:
            data[name] = _positive(f"{path}: {name}", data[name])
    for name in ("kernel_gap_s", "kernel_gap_graph_s"):
        gap = data.get(name)
        if gap is not None and (isinstance(gap, bool) or not isinstance(gap, (int, float))
                                or not (gap >= 0 and math.isfinite(gap))):
            raise CeilingsError(f"{path}: {name} must be a number >= 0, got {gap!r}")
    keyed: tuple[tuple[str, str, Callable[[str], object], bool], ...] = (
        ("pattern_bandwidth_bytes_per_s", "'<pattern>@<side>' -> bytes/s", split_key, False),
        ("gemm_times_ms", "GEMM or call key (llm_perf_opt.hardware.gemms) -> per-repeat ms", split_gemm_key, True))
    for name, what, parse, listed in keyed:
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise CeilingsError(f"{path}: {name} must map {what}")
        for key, value in table.items():
            try:
                parse(str(key))
            except UserError as exc:
                raise CeilingsError(f"{path}: {name}: {exc}") from None
            if listed and (not isinstance(value, list) or not value):
                raise CeilingsError(f"{path}: {name}.{key}: expected a list of ms per call")
            for v in value if listed else [value]:
                _positive(f"{path}: {name}.{key}", v)
    try:
        data["method"] = BenchMethod(**method)
        return MeasuredCeilings(**data)
    except TypeError as exc:
        raise CeilingsError(f"{path}: {exc}") from None


@define(kw_only=True, frozen=True)
class EffectivePeaks:
    """The peaks a roofline / MFU computation divides by, and where each came from."""

    gpu_key: str = field(metadata={"help": "catalogue key"})
    flops_per_s: Mapping[DType, float] = field(metadata={"help": "dtype -> FLOP/s used as the peak"})
    flops_origin: Mapping[DType, PeakSource] = field(metadata={"help": "dtype -> datasheet or measured"})
    memory_bandwidth_bytes_per_s: float = field(metadata={"help": "bytes/s used as the bandwidth peak"})
    bandwidth_origin: PeakSource = field(metadata={"help": "datasheet or measured"})
    memory_capacity_bytes: int = field(metadata={"help": "device memory size, bytes (catalogue)"})
    source_ref: str = field(metadata={"help": "citation: catalogue entry and its sources, plus the ceilings run"})

    @property
    def cuda_core_flops_per_s(self) -> float:
        """Non-tensor FP32 peak, FLOP/s (the fp32 entry)."""
        return self.flops_per_s[DType.FP32]

    def peak_flops_per_s(self, dtype: DType | str) -> float:
        """FLOP/s for ``dtype``; UserError if the GPU has no peak for it."""
        dt = _dtype(dtype)
        if dt not in self.flops_per_s:
            raise UserError(f"GPU {self.gpu_key!r} has no {dt} peak; available: "
                            f"{', '.join(str(d) for d in self.flops_per_s)}")
        return self.flops_per_s[dt]

    @property
    def source(self) -> PeakSource:
        """MEASURED if any number came from a ceilings file, else DATASHEET."""
        origins = [*self.flops_origin.values(), self.bandwidth_origin]
        return PeakSource.MEASURED if PeakSource.MEASURED in origins else PeakSource.DATASHEET


def effective_peaks(spec: GpuSpec, ceilings: MeasuredCeilings | None = None) -> EffectivePeaks:
    """Datasheet peaks of ``spec``, replaced by measured ceilings where ``ceilings`` has them.

    Raises UserError when the ceilings were measured on another GPU than ``spec``.
    """
    flops = {d: spec.peak_flops_per_s(d) for d in spec.dtypes}
    origin = dict.fromkeys(flops, PeakSource.DATASHEET)
    bandwidth, bw_origin = spec.memory_bandwidth_bytes_per_s, PeakSource.DATASHEET
    cited = sorted({s.source.title for s in spec.sources.values()})
    ref = f"catalogue {spec.key} ({'; '.join(cited)})"
    if ceilings is not None:
        if ceilings.gpu_key != spec.key:
            raise UserError(f"ceilings were measured on {ceilings.gpu_key or ceilings.device_name!r}, "
                            f"not on {spec.key!r}")
        for name, value in ceilings.matmul_flops_per_s.items():
            dt = parse_dtype(name)
            flops[dt], origin[dt] = value, PeakSource.MEASURED
        bandwidth, bw_origin = ceilings.memory_bandwidth_bytes_per_s, PeakSource.MEASURED
        measured = ", ".join([*ceilings.matmul_flops_per_s, "memory bandwidth"])
        ref += (f"; measured {measured} on {ceilings.device_name} at {ceilings.date_utc or 'unknown date'} "
                "(llm-perf-opt hw bench)")
    return EffectivePeaks(gpu_key=spec.key, flops_per_s=flops, flops_origin=origin,
                          memory_bandwidth_bytes_per_s=bandwidth, bandwidth_origin=bw_origin,
                          memory_capacity_bytes=spec.memory_bytes, source_ref=ref)


# ------------------------------------------------------------------------------------------- measuring


def cuda_event_timer(fn: Callable[[], object], *, warmup: int, repeats: int) -> list[float]:
    """Time ``fn`` with CUDA events: ``warmup`` untimed calls, then one event pair per repeat (ms)."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    pairs = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize()
    return [float(s.elapsed_time(e)) for s, e in pairs]


def _torch_dtype(dtype: DType) -> Any:
    import torch

    return {DType.BF16: torch.bfloat16, DType.FP16: torch.float16,
            DType.TF32: torch.float32, DType.FP32: torch.float32}[dtype]


def measure_matmul(dtype: DType, n: int, *, device: str, timer: Timer, warmup: int, repeats: int,
                   inner: int) -> tuple[float, list[float]]:
    """(median FLOP/s, per-repeat ms per matmul) of ``n x n @ n x n`` in ``dtype`` on ``device``.

    TF32 is measured as float32 with TF32 matmuls allowed; FP32 with them disallowed.
    """
    import torch

    if dtype not in BENCH_DTYPES:
        raise UserError(f"cannot benchmark {dtype} matmuls; choose from {', '.join(map(str, BENCH_DTYPES))}")
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=_torch_dtype(dtype), generator=gen)
    b = torch.randn(n, n, device=device, dtype=_torch_dtype(dtype), generator=gen)
    out = torch.empty(n, n, device=device, dtype=_torch_dtype(dtype))

    def run() -> None:
        for _ in range(inner):
            torch.matmul(a, b, out=out)

    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype is DType.TF32
    try:
        times = timer(run, warmup=warmup, repeats=repeats)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    per_op = [t / inner for t in times]
    return rate_from_times(matmul_flops(n, n, n), per_op), per_op


def measure_copy(buffer_bytes: int, *, device: str, timer: Timer, warmup: int, repeats: int,
                 inner: int) -> tuple[float, list[float]]:
    """(median bytes/s counting read + write, per-repeat ms per copy) of a ``buffer_bytes`` device copy."""
    import torch

    numel = buffer_bytes // 4
    gen = torch.Generator(device=device).manual_seed(0)
    src = torch.randn(numel, device=device, dtype=torch.float32, generator=gen)
    dst = torch.empty_like(src)

    def run() -> None:
        for _ in range(inner):
            dst.copy_(src)

    times = timer(run, warmup=warmup, repeats=repeats)
    per_op = [t / inner for t in times]
    return rate_from_times(copy_bytes_moved(numel * 4), per_op), per_op


#: Tiny kernels timed per repeat of the kernel-floor measurement (few enough for the host to stay ahead
#: of the device behind a queued 8192^3 matmul).
FLOOR_KERNELS = 200


def measure_kernel_floor(*, device: str, repeats: int) -> float:
    """Median device seconds per tiny kernel: ``FLOOR_KERNELS`` in-place adds
    on a 1-element tensor issued behind a queued matmul, timed by CUDA events around the adds alone, so
    the host is ahead and the events see the device's own time per kernel (run time and the gap to the
    next one). CUDA only."""
    import torch

    x = torch.zeros(1, device=device)
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)

    def busy() -> None:
        for _ in range(3):
            a @ a  # ~5 ms of queued work on an H100-class GPU

    per_kernel_s = [queued_cuda_timer(lambda: x.add_(1.0), FLOOR_KERNELS, keep_busy=busy)
                    for _ in range(repeats + 1)]
    return statistics.median(per_kernel_s[1:])  # the first repeat warms up


#: Small kernels per burst of the kernel-gap measurements, and the matmuls (8192^3 bf16, ~1.5 ms each on an
#: H100-class GPU) queued before each burst so that the host, slowed by the profiler, stays ahead.
GAP_KERNELS = 200
GAP_BUSY_MATMULS = 12
#: a gap longer than this (us) means the device waited for the host: not a queued gap
GAP_QUEUED_MAX_US = 5.0


#: a kernel of the gap mix runs for at most this long (us); longer ones are the matmuls queued ahead of it
GAP_SMALL_US = 20.0


def small_kernel_gaps_us(kernels: Sequence[tuple[str, float, float]]) -> tuple[list[float], list[float]]:
    """(gaps, durations) in us of the small kernels (at most ``GAP_SMALL_US`` long) of a device trace
    ``kernels`` = (name, start us, end us), whatever their names: each gap is the next kernel's start minus
    the previous one's end, for consecutive kernels that are both small."""
    ordered = sorted(kernels, key=lambda k: k[1])
    small = [end - start <= GAP_SMALL_US for _, start, end in ordered]
    gaps = [b[1] - a[2] for (a, b, sa, sb) in zip(ordered, ordered[1:], small, small[1:], strict=False) if sa and sb]
    return gaps, [end - start for (_, start, end), s in zip(ordered, small, strict=True) if s]


#: kinds of kernel in :func:`gap_mix`
GAP_MIX_KINDS = 5


def gap_mix(device: str) -> Callable[[], object]:
    """A launcher that issues one small kernel per call, cycling through a model's kinds of launch: a
    1-element fp32 add, a 4096-element bf16 multiply, a 64x64x64 bf16 matmul, an fp32 softmax over 8x1024
    and a 4096-element bf16 copy (each well under GAP_SMALL_US of work). Kernels of one kind queued back to
    back leave a shorter gap between them than a model's mix does."""
    import torch

    one = torch.zeros(1, device=device)
    vec = torch.ones(4096, device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(vec)
    mat = torch.randn(64, 64, device=device, dtype=torch.bfloat16)
    out = torch.empty_like(mat)
    rows = torch.randn(8, 1024, device=device)
    kinds: tuple[Callable[[], object], ...] = (  # GAP_MIX_KINDS of them
        lambda: one.add_(1.0), lambda: vec.mul_(1.0), lambda: torch.mm(mat, mat, out=out),
        lambda: torch.softmax(rows, -1), lambda: dst.copy_(vec))
    state = {"next": 0}

    def launch() -> object:
        i = state["next"]
        state["next"] = (i + 1) % len(kinds)
        return kinds[i]()

    return launch


def kernel_gap_from_trace(kernels: Sequence[tuple[str, float, float]]) -> tuple[float, float]:
    """(median gap s, median duration s) of the small kernels of a trace (see :func:`small_kernel_gaps_us`),
    over the gaps of at most ``GAP_QUEUED_MAX_US``. UserError when fewer than half the gaps are that short
    (the host fell behind a stream; a graph replay, with no host between its kernels, passes)."""
    gaps, durations = small_kernel_gaps_us(kernels)
    if not gaps:
        raise UserError("kernel gap: the profiler trace holds no two consecutive small kernels (no CUDA kernel "
                        "events recorded?)")
    queued = [g for g in gaps if g <= GAP_QUEUED_MAX_US]
    if len(queued) < len(gaps) / 2:
        raise UserError(f"kernel gap: {len(queued)} of {len(gaps)} gaps between the small kernels were queued "
                        f"(<= {GAP_QUEUED_MAX_US:g} us): the host did not stay ahead of the device")
    return statistics.median(queued) * 1e-6, statistics.median(durations) * 1e-6


def device_trace(fn: Callable[[], object], *, device: str) -> list[tuple[str, float, float]]:
    """Run ``fn`` under torch.profiler (CPU + CUDA activities), wait for ``device``, and return the CUDA
    device events recorded as (kernel name, start us, end us). CUDA only."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize(device)
    return [(e.name, float(e.time_range.start), float(e.time_range.end)) for e in prof.events()
            if e.device_type == DeviceType.CUDA]


def queued_trace(launch: Callable[[], object], *, device: str, bursts: int
                 ) -> list[tuple[str, float, float]]:
    """Device trace (kernel name, start us, end us) of ``bursts`` bursts of ``GAP_KERNELS`` calls of ``launch``
    queued behind ``GAP_BUSY_MATMULS`` matmuls (one untraced burst first), from :func:`device_trace`. CUDA
    only."""
    import torch

    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)

    def burst() -> None:
        for _ in range(GAP_BUSY_MATMULS):
            a @ a
        for _ in range(GAP_KERNELS):
            launch()

    def traced() -> None:
        for _ in range(max(1, bursts)):
            burst()

    burst()
    torch.cuda.synchronize(device)
    return device_trace(traced, device=device)


def measure_kernel_gap(*, device: str, repeats: int) -> tuple[float, float]:
    """(median gap s, median duration s) of the small kernels of :func:`gap_mix` queued back to back behind
    matmuls (:func:`queued_trace` of ``repeats`` bursts): the device's own time between one queued kernel's
    end and the next one's start, which kernel durations (and so the per-stage device time of an operator
    table) leave out. CUDA only."""
    return kernel_gap_from_trace(queued_trace(gap_mix(device), device=device, bursts=repeats))


#: untraced rounds of the gap mix on a side stream before the graph captures it (torch's CUDA graph warm-up)
GRAPH_WARMUP_CALLS = 3


def graph_trace(launch: Callable[[], object], *, device: str, repeats: int) -> list[tuple[str, float, float]]:
    """Device trace (kernel name, start us, end us) of ``GAP_KERNELS`` calls of ``launch`` captured in one
    ``torch.cuda.CUDAGraph`` (after a warm-up on a side stream, as torch's CUDA graph docs require) and
    replayed ``repeats`` times (at least once; one untraced replay first), from :func:`device_trace`.
    UserError (one line) when the capture fails. CUDA only."""
    import torch

    current = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        for _ in range(GRAPH_WARMUP_CALLS * GAP_MIX_KINDS):
            launch()
    current.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for _ in range(GAP_KERNELS):
                launch()
    except RuntimeError as exc:  # a capture the driver refuses: the gap is not measured (one line)
        torch.cuda.synchronize(device)
        raise UserError(f"CUDA-graph kernel gap: the capture failed ({str(exc).splitlines()[0] if str(exc) else exc!r})"
                        ) from None

    def replays() -> None:
        for _ in range(max(1, repeats)):
            graph.replay()

    graph.replay()
    torch.cuda.synchronize(device)
    return device_trace(replays, device=device)


def measure_graph_kernel_gap(*, device: str, repeats: int) -> tuple[float, float]:
    """(median gap s, median duration s) of the small kernels of :func:`gap_mix` replayed from one CUDA graph
    (:func:`graph_trace`): the device's own time between kernels replayed from a graph, where no host launch
    stands between them (smaller than :func:`measure_kernel_gap`'s queued gap). UserError (one line) when the
    capture fails. CUDA only."""
    return kernel_gap_from_trace(graph_trace(gap_mix(device), device=device, repeats=repeats))


def require_cuda() -> None:
    """Raise NoGpuError unless torch sees a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise NoGpuError("no CUDA GPU visible (torch.cuda.is_available() is False); "
                         "hw bench measures the local GPU and needs one")


def run_bench(*, spec: GpuSpec | None, device_index: int = 0, dtypes: Sequence[DType] = DEFAULT_DTYPES,
              matmul_size: int = DEFAULT_MATMUL_SIZE, warmup: int = DEFAULT_WARMUP,
              repeats: int = DEFAULT_REPEATS, inner: int = DEFAULT_INNER, copy_bytes: int | None = None,
              timer: Timer = cuda_event_timer, device: str | None = None,
              pattern_sides: Sequence[int] = DEFAULT_PATTERN_SIDES, pattern_scores: int = DEFAULT_PATTERN_SCORES,
              progress: Callable[[str], None] | None = None,
              checkpoint: Callable[[MeasuredCeilings], None] | None = None,
              gemm_keys: Sequence[str] = (), gemm_workloads: Sequence[str] = (),
              gemm_timer: QueuedTimer | None = None) -> MeasuredCeilings:
    """Measure matmul FLOP/s per dtype, copy bandwidth and, at each of ``pattern_sides`` (none: skipped),
    the access-pattern bandwidths of :mod:`llm_perf_opt.hardware.patterns` on CUDA device ``device_index``,
    then the device time of each GEMM in ``gemm_keys`` (:func:`add_gemm_times`; the shapes of
    ``gemm_workloads``, recorded as such).

    ``spec`` (the catalogue entry of the device, or None if uncatalogued) sizes the copy buffer from
    its L2. ``device``/``timer`` exist so tests can run the arithmetic on CPU with a fake timer.
    ``checkpoint`` receives the ceilings measured before the access patterns (so a caller can keep them
    if the patterns fail). Running out of device memory is a UserError naming the measurement.
    """
    import torch

    if matmul_size <= 0 or warmup < 0 or repeats <= 0 or inner <= 0:
        raise UserError("matmul size, repeats and inner must be > 0 and warmup >= 0")
    if device is None:
        require_cuda()
        device = f"cuda:{device_index}"
        torch.cuda.set_device(device_index)
        name = torch.cuda.get_device_name(device_index)
        free, _total = torch.cuda.mem_get_info(device_index)
    else:
        name, free = device, None
    buffer = copy_buffer_bytes(spec.l2_bytes if spec else None, free, copy_bytes)
    flops: dict[str, float] = {}
    times: dict[str, list[float]] = {}
    what = "the matmuls"
    try:
        for dt in dtypes:
            what = f"the {dt} matmul ({matmul_size}^3; lower --size)"
            rate, per_op = measure_matmul(dt, matmul_size, device=device, timer=timer, warmup=warmup,
                                          repeats=repeats, inner=inner)
            flops[str(dt)], times[str(dt)] = rate, per_op
            if progress:
                progress(f"matmul {dt} {matmul_size}^3: {rate / 1e12:.1f} TFLOP/s")
        what = f"the {buffer / GIB:.2f} GiB copy (lower --copy-mib)"
        bandwidth, copy_times = measure_copy(buffer, device=device, timer=timer, warmup=warmup,
                                             repeats=repeats, inner=inner)
        if progress:
            progress(f"copy {buffer / GIB:.2f} GiB: {bandwidth / 1e12:.3f} TB/s (read + write)")
        floor_s: float | None = None
        gap_s: float | None = None
        gap_dur_s: float | None = None
        graph_gap_s: float | None = None
        if device.startswith("cuda"):
            what = "the kernel floor"
            floor_s = measure_kernel_floor(device=device, repeats=repeats)
            if progress:
                progress(f"kernel floor ({FLOOR_KERNELS} tiny kernels queued): {floor_s * 1e6:.2f} us per kernel")
            what = "the kernel gap"
            try:
                gap_s, gap_dur_s = measure_kernel_gap(device=device, repeats=repeats)
            except UserError as exc:  # the other ceilings stand; the gap stays unmeasured
                if progress:
                    progress(f"kernel gap not measured: {exc}")
            else:
                if progress:
                    progress(f"kernel gap ({GAP_KERNELS} small kernels queued, profiler trace): {gap_s * 1e6:.2f} us "
                             f"between kernels, {gap_dur_s * 1e6:.2f} us each")
            what = "the CUDA-graph kernel gap"
            try:
                graph_gap_s, graph_dur_s = measure_graph_kernel_gap(device=device, repeats=repeats)
            except UserError as exc:  # the other ceilings stand; the graph gap stays unmeasured
                if progress:
                    progress(f"CUDA-graph kernel gap not measured: {exc}")
            else:
                if progress:
                    progress(f"kernel gap ({GAP_KERNELS} small kernels replayed from a CUDA graph, profiler trace): "
                             f"{graph_gap_s * 1e6:.2f} us between kernels, {graph_dur_s * 1e6:.2f} us each")
        ceilings = MeasuredCeilings(
            gpu_key=spec.key if spec else None,
            device_name=name,
            matmul_flops_per_s=flops,
            memory_bandwidth_bytes_per_s=bandwidth,
            method=BenchMethod(matmul_size=matmul_size, warmup=warmup, repeats=repeats, inner=inner,
                               copy_buffer_bytes=buffer,
                               timer="cuda-events" if timer is cuda_event_timer
                               else getattr(timer, "__name__", "custom")),
            torch_version=str(torch.__version__),
            cuda_version=torch.version.cuda,
            date_utc=datetime.now(UTC).isoformat(timespec="seconds"),
            host=platform.node(),
            matmul_times_ms=times,
            copy_times_ms=copy_times,
            kernel_floor_s=floor_s,
            kernel_gap_s=gap_s,
            kernel_gap_duration_s=gap_dur_s,
            kernel_gap_graph_s=graph_gap_s,
        )
        if checkpoint is not None:
            checkpoint(ceilings)
        if pattern_sides:
            what = (f"the access patterns at sides {','.join(map(str, pattern_sides))} "
                    "(choose smaller --pattern-sides, or none)")
            p_rates, p_times, p_groups = measure_patterns(pattern_sides, device=device, timer=timer,
                                                          warmup=warmup, repeats=repeats, inner=inner,
                                                          scores=pattern_scores, progress=progress)
            ceilings = attrs.evolve(ceilings, pattern_bandwidth_bytes_per_s=p_rates, pattern_times_ms=p_times,
                                    method=attrs.evolve(ceilings.method, pattern_scores=pattern_scores,
                                                        pattern_groups=p_groups))
    except torch.cuda.OutOfMemoryError:
        raise UserError(f"out of device memory while measuring {what}") from None
    if not gemm_keys:
        return ceilings
    if checkpoint is not None:
        checkpoint(ceilings)
    return add_gemm_times(ceilings, gemm_keys, gemm_workloads, device=device, repeats=repeats, timer=gemm_timer,
                          progress=progress)


class GemmTimingStopped(UserError):
    """GEMM timing stopped (out of memory, interrupted) before every shape was timed; ``partial`` holds the
    ceilings with the shapes timed so far."""

    def __init__(self, message: str, partial: MeasuredCeilings) -> None:
        super().__init__(message)
        self.partial = partial


def add_gemm_times(ceilings: MeasuredCeilings, keys: Sequence[str], workloads: Sequence[str], *, device: str,
                   repeats: int, timer: QueuedTimer | None = None,
                   progress: Callable[[str], None] | None = None) -> MeasuredCeilings:
    """``ceilings`` with the device time per call of each GEMM in ``keys`` (llm_perf_opt.hardware.gemms,
    queued behind other work; ``timer`` defaults to CUDA events) added to the GEMMs it holds (a key timed
    again is replaced) and ``workloads`` added to their sources. Running out of device memory, an interrupt
    or a timing the host could not get ahead of raises GemmTimingStopped (naming the GEMM) with the shapes
    timed before it added."""
    import torch

    if not keys:
        raise UserError("GEMM timing: no GEMM shape to time")
    done: dict[str, list[float]] = {}
    todo = sorted(set(keys))

    def note(line: str) -> None:
        if progress:
            progress(f"[{len(done) + 1}/{len(todo)}] {line}")

    for key in todo:
        try:
            done.update({k: [t * 1e3 for t in v] for k, v in measure_gemms(
                [key], device=device, repeats=repeats, timer=timer or queued_cuda_timer, progress=note).items()})
        except (torch.cuda.OutOfMemoryError, KeyboardInterrupt, UserError) as exc:
            why = ("out of device memory" if isinstance(exc, torch.cuda.OutOfMemoryError)
                   else f"stopped ({exc})" if isinstance(exc, UserError) else "interrupted")
            raise GemmTimingStopped(f"{why} while timing GEMM {key} ({len(done)} of {len(todo)} shapes timed)",
                                    _with_gemms(ceilings, done, workloads)) from None
    return _with_gemms(ceilings, done, workloads)


def _with_gemms(ceilings: MeasuredCeilings, times_ms: dict[str, list[float]], workloads: Sequence[str]
                ) -> MeasuredCeilings:
    """``ceilings`` with ``times_ms`` merged into its GEMM times (new keys win) and ``workloads`` appended to
    its GEMM workloads (each once, in order)."""
    merged = {**{k: list(v) for k, v in (ceilings.gemm_times_ms or {}).items()}, **times_ms}
    sources = list(dict.fromkeys([*(ceilings.gemm_workloads or []), *workloads]))
    return attrs.evolve(ceilings, gemm_times_ms=merged, gemm_workloads=sources)
