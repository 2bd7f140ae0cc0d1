"""Stage timers: NVTX ranges plus CUDA events (GPU) or synchronised host clocks (CPU).

One :class:`StageRecorder` times one pass (one image batch, one repeat). Its
:meth:`StageRecorder.scope` is the ``scope(stage_name)`` hook the model calls
around ``vision.sam``, ``vision.clip`` and ``projector``; the runner opens
``prefill``, ``decode`` and ``decode.step.{i}`` itself. On CUDA each range
records a pair of CUDA events on the current stream (no synchronisation
inside the pass); :meth:`StageRecorder.collect` synchronises once and reads
every elapsed time. On CPU, work is synchronous and ``time.perf_counter``
around each range is exact up to Python overhead.

A range name used more than once in a pass (SAM over the tiles and over the
global view) is summed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from llm_perf_opt.vocab import DECODE_STEP_RANGE


class StageRecorder:
    """Times named ranges of one pass.

    ``device``: where the model runs ('cuda' -> CUDA events, else host clock).
    ``nvtx``: push an NVTX range per scope (CUDA only; what Nsight Systems shows).
    ``record_function``: also open a ``torch.profiler.record_function`` range
    (used in the profiler pass so the operator table can be split by stage).
    ``timing``: False turns timing off and leaves only the ranges (for the
    overhead benchmark's baseline, set nvtx and record_function False too).
    """

    def __init__(self, device: torch.device | str, *, nvtx: bool = True, record_function: bool = False,
                 timing: bool = True) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.nvtx = nvtx and self.cuda
        self.record_function = record_function
        self.timing = timing
        self._cuda_pairs: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
        self._host_ms: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def _range(self, name: str) -> Iterator[None]:
        rf: AbstractContextManager[Any] = (
            torch.profiler.record_function(name) if self.record_function else contextlib.nullcontext()
        )
        if self.nvtx:
            torch.cuda.nvtx.range_push(name)
        try:
            with rf:
                if not self.timing:
                    yield
                elif self.cuda:
                    start = torch.cuda.Event(enable_timing=True)
                    end = torch.cuda.Event(enable_timing=True)
                    start.record()
                    try:
                        yield
                    finally:
                        end.record()
                        self._cuda_pairs.append((name, start, end))
                else:
                    t0 = time.perf_counter()
                    try:
                        yield
                    finally:
                        self._host_ms.append((name, (time.perf_counter() - t0) * 1e3))
        finally:
            if self.nvtx:
                torch.cuda.nvtx.range_pop()

    def scope(self, name: str) -> AbstractContextManager[None]:
        """Context manager timing the range ``name`` (a vocab.Stage string or a decode-step name)."""
        return self._range(name)

    def step_scope(self, step: int) -> AbstractContextManager[None]:
        """Range of decode step ``step`` (``decode.step.{step}``)."""
        return self._range(DECODE_STEP_RANGE.format(step=step))

    def collect(self) -> dict[str, float]:
        """Synchronise once and return elapsed ms per range name (repeated names summed).

        Also returns the per-step decode times under their own names. Clears the recorder.
        """
        out: dict[str, float] = {}
        if self._cuda_pairs:
            torch.cuda.synchronize(self.device)
            for name, start, end in self._cuda_pairs:
                out[name] = out.get(name, 0.0) + float(start.elapsed_time(end))
        for name, ms in self._host_ms:
            out[name] = out.get(name, 0.0) + ms
        self._cuda_pairs.clear()
        self._host_ms.clear()
        return out


def decode_step_times(ranges_ms: dict[str, float]) -> list[float]:
    """The ``decode.step.{i}`` times of a collected pass, in step order (ms)."""
    prefix, suffix = DECODE_STEP_RANGE.split("{step}")
    steps: list[tuple[int, float]] = []
    for name, ms in ranges_ms.items():
        if name.startswith(prefix) and name.endswith(suffix):
            index = name[len(prefix):len(name) - len(suffix)] if suffix else name[len(prefix):]
            if index.isdigit():
                steps.append((int(index), ms))
    return [ms for _, ms in sorted(steps)]


def host_sync(device: torch.device | str) -> None:
    """Wait for all queued device work (no-op on CPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


#: tiny eager ops per host-speed probe (each a separate kernel launch on CUDA)
PROBE_OPS = 200


def host_probe_us(device: torch.device | str, *, ops: int = PROBE_OPS, reps: int = 3) -> float:
    """Host microseconds per eager op: the issue cost of ``ops`` in-place adds on a 1-element tensor.

    The device work of each op is far shorter than its issue cost, so the loop
    measures the host alone (Python, dispatcher, launch) at the moment of the
    call; the median of ``reps`` loops. Taken before and after every timed pass, it tells
    how fast the host was during that pass (shared machines vary by 2x).
    """
    dev = torch.device(device)
    x = torch.zeros(1, device=dev)
    times = []
    for _ in range(reps):
        host_sync(dev)
        t0 = time.perf_counter()
        for _ in range(ops):
            x.add_(1.0)
        times.append((time.perf_counter() - t0) / ops * 1e6)
    host_sync(dev)
    times.sort()
    return times[len(times) // 2]


class _AtenCount(TorchDispatchMode):
    """Counts the aten calls that reach the dispatcher's Python mode (views and in-place ops included)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.calls += 1
        return func(*args, **(kwargs or {}))


def aten_calls(fn: Callable[[], Any]) -> int:
    """aten calls one run of ``fn`` dispatches (a counting dispatch mode around one untimed call)."""
    counter = _AtenCount()
    with counter:
        fn()
    return counter.calls


def device_activity(fn: Callable[[], Any], device: torch.device | str) -> tuple[int, int] | None:
    """(device launches, host syncs) of one call of ``fn`` on ``device``, under torch.profiler: the launches
    are its device events (kernels, memcpys, memsets; as the run's stage timelines count them,
    llm_perf_opt.profiling.timeline.DEVICE_CATS), the syncs its stream/device/event synchronize calls
    (timeline.SYNC_CALLS). None off CUDA (no device launches there)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from llm_perf_opt.profiling.timeline import SYNC_CALLS

    def traced(call: Callable[[], Any]) -> tuple[int, int]:
        host_sync(dev)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            call()
            host_sync(dev)
        events = list(prof.events())
        return (sum(1 for e in events if e.device_type == DeviceType.CUDA),
                sum(1 for e in events if e.device_type == DeviceType.CPU and e.name in SYNC_CALLS))

    # the closing host_sync is ours, not ``fn``'s: its own trace says what it adds
    _, own_syncs = traced(lambda: None)
    launches, syncs = traced(fn)
    return launches, max(syncs - own_syncs, 0)


def device_launches(fn: Callable[[], Any], device: torch.device | str) -> int | None:
    """Device launches of one call of ``fn`` (:func:`device_activity`); None off CUDA."""
    activity = device_activity(fn, device)
    return None if activity is None else activity[0]


class ModuleHostProbe:
    """Host microseconds per aten call of a program that follows the model's own host code path.

    Where :func:`host_probe_us` times one tiny op in a loop, this times a whole tiny forward of the
    decoder (``llm_perf_opt.models.deepseek_ocr.modeling.tiny_decoder_program``: module calls,
    transformers' attention, router and experts code, the KV cache), whose kernels take next to no
    device time, so the host's issue time is what is measured. Built once (two warm-up calls and one
    counted call); each :meth:`probe` is the median over ``reps`` forwards of the forward's host time
    divided by :attr:`ops`, the aten calls it dispatches. With ``count_launches`` (CUDA), one more untimed
    call under the profiler counts :attr:`launches`, the device launches per forward (of this tiny
    forward only: a full-width decode step makes other calls per launch, which ``hw probe --decode-step``
    times instead).
    """

    def __init__(self, fn: Callable[[], Any], device: torch.device | str, *, count_launches: bool = False) -> None:
        self.fn = fn
        self.device = torch.device(device)
        fn()
        fn()
        #: aten calls per forward (> 0)
        self.ops = aten_calls(fn)
        if self.ops < 1:
            raise ValueError("host probe program dispatches no aten call")
        #: device launches per forward (None: not counted, or not on CUDA)
        self.launches = device_launches(fn, self.device) if count_launches else None
        host_sync(self.device)

    def probe(self, reps: int = 3) -> float:
        """Median host us per aten call over ``reps`` forwards (the device synced before each)."""
        times = []
        for _ in range(reps):
            host_sync(self.device)
            t0 = time.perf_counter()
            self.fn()
            times.append((time.perf_counter() - t0) / self.ops * 1e6)
        host_sync(self.device)
        times.sort()
        return times[len(times) // 2]
