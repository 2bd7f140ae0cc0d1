"""Host/device timeline per stage from a torch.profiler Chrome trace (``trace.json.gz``).

The stage timers measure the device timeline between two CUDA events; they do
not say whether a stage waited for the host (launch bound) or the host waited
for the device. This module reads the trace the runner writes and, for every
stage range (decode steps pooled as ``decode``), puts side by side:

- ``host_ms``: the range's duration on the host, minus the stage ranges it
  encloses (prefill's language part excludes the vision ranges);
- ``device_span_ms`` / ``device_busy_ms``: first kernel start to last kernel end,
  and the union of kernel intervals, of the kernels launched from inside the range;
- ``sync_ms``: host time inside synchronising CUDA calls (stream/device/event
  synchronize) and ``copy_call_ms`` inside memcpy calls (a pageable copy blocks);
- ``start_backlog_ms``: first kernel start minus the range's host start, or for
  prefill the end of the vision ranges it encloses (how far the device was
  behind when the stage began issuing its own work) and
  ``end_backlog_ms``: last kernel end minus the range's host end (> 0: the host
  left the stage while its work was still queued, i.e. the next stage's
  launches overlap this stage's device time).

Times in the trace are microseconds; everything here is reported in ms, as a
mean per range instance.
"""

from __future__ import annotations

import bisect
import gzip
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from attrs import asdict, define, field

from llm_perf_opt.errors import UserError
from llm_perf_opt.vocab import DECODE_STEP_RANGE, Stage

_STEP_PREFIX = DECODE_STEP_RANGE.split("{", 1)[0]
_STAGES = {s.value for s in Stage}
#: runtime calls during which the host waits for the device
SYNC_CALLS = frozenset({"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize"})
#: runtime copy calls (a copy from pageable memory blocks the host)
COPY_CALLS = frozenset({"cudaMemcpy", "cudaMemcpyAsync"})
#: trace categories of device work
DEVICE_CATS = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})
#: trace categories of host-side CUDA API calls
RUNTIME_CATS = frozenset({"cuda_runtime", "cuda_driver"})


class TraceError(UserError):
    """The trace file is missing or is not a Chrome trace of torch.profiler."""


@define(kw_only=True)
class StageTimeline:
    """Host and device time of one stage, mean per range instance (ms)."""

    stage: str = field(metadata={"help": "Stage string (decode: one decode step)"})
    instances: int = field(metadata={"help": "ranges of this stage in the trace"})
    host_ms: float = field(metadata={"help": "host duration of the range minus enclosed stage ranges, ms"})
    device_span_ms: float = field(metadata={"help": "first kernel start to last kernel end, ms"})
    device_busy_ms: float = field(metadata={"help": "union of the kernel intervals, ms"})
    kernels: float = field(metadata={"help": "device kernels/copies launched from the range"})
    sync_ms: float = field(metadata={"help": "host time in stream/device/event synchronize calls, ms"})
    copy_call_ms: float = field(metadata={"help": "host time in memcpy calls, ms"})
    start_backlog_ms: float = field(metadata={"help": "first kernel start - range host start, ms"})
    end_backlog_ms: float = field(metadata={"help": "last kernel end - range host end, ms (> 0: host ran ahead)"})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for timeline.json."""
        return asdict(self)


def load_trace(path: str | Path) -> dict[str, Any]:
    """Read a Chrome trace (``.json`` or ``.json.gz``); TraceError in one line when unreadable."""
    p = Path(path)
    try:
        if p.suffix == ".gz":
            with gzip.open(p, "rt", encoding="utf-8") as fh:
                raw = json.load(fh)
        else:
            raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TraceError(f"{p}: no such trace file") from None
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(f"{p}: not a readable Chrome trace ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("traceEvents"), list):
        raise TraceError(f"{p}: no 'traceEvents' list (not a torch.profiler Chrome trace)")
    return raw


def _stage_of_range(name: str) -> str | None:
    if name in _STAGES:
        return name
    if name.startswith(_STEP_PREFIX):
        return Stage.DECODE.value
    return None


def _union_us(intervals: Iterable[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


@define
class _Range:
    stage: str
    start: float
    end: float
    children_us: float = 0.0
    children_end: float = float("-inf")
    runtime: list[dict[str, Any]] = field(factory=list)


def stage_timelines(trace: Mapping[str, Any]) -> list[StageTimeline]:
    """Per-stage host/device timeline of a torch.profiler Chrome trace, stages in execution order.

    A range named ``decode`` that encloses the step ranges is ignored in favour of its steps.
    """
    events = [e for e in trace.get("traceEvents", []) if isinstance(e, dict) and e.get("ph") == "X"]
    ranges: list[_Range] = []
    for e in events:
        if e.get("cat") != "user_annotation":
            continue
        stage = _stage_of_range(str(e.get("name", "")))
        if stage is None or e.get("name") == Stage.DECODE.value:
            continue
        ts, dur = float(e["ts"]), float(e.get("dur", 0.0))
        ranges.append(_Range(stage=stage, start=ts, end=ts + dur))
    ranges.sort(key=lambda r: (r.start, -(r.end - r.start)))
    # stage ranges nest (prefill encloses the vision stages) or follow each other: group them under roots
    roots: list[tuple[_Range, list[_Range]]] = []
    for r in ranges:
        if roots and r.start < roots[-1][0].end:
            outer = roots[-1][0]
            if r.end <= outer.end:
                outer.children_us += r.end - r.start
                outer.children_end = max(outer.children_end, r.end)
            roots[-1][1].append(r)
        else:
            roots.append((r, [r]))
    root_starts = [root.start for root, _ in roots]
    device_by_corr: dict[Any, list[tuple[float, float]]] = {}
    for e in events:
        if e.get("cat") in DEVICE_CATS:
            corr = (e.get("args") or {}).get("correlation")
            if corr is not None:
                ts = float(e["ts"])
                device_by_corr.setdefault(corr, []).append((ts, ts + float(e.get("dur", 0.0))))
    for e in events:
        if e.get("cat") not in RUNTIME_CATS:
            continue
        ts = float(e["ts"])
        k = bisect.bisect_right(root_starts, ts) - 1
        if k < 0 or ts >= roots[k][0].end:
            continue  # outside every stage range
        # innermost: the latest-starting range of the group that contains the call
        holder = max((r for r in roots[k][1] if r.start <= ts < r.end), key=lambda r: r.start)
        holder.runtime.append(e)
    out: dict[str, list[dict[str, float]]] = {}
    for r in ranges:
        dev: list[tuple[float, float]] = []
        sync = copy = 0.0
        for call in r.runtime:
            name = str(call.get("name", ""))
            if name in SYNC_CALLS:
                sync += float(call.get("dur", 0.0))
            elif name in COPY_CALLS:
                copy += float(call.get("dur", 0.0))
            corr = (call.get("args") or {}).get("correlation")
            dev.extend(device_by_corr.get(corr, ()))
        host = (r.end - r.start) - r.children_us
        if dev:
            first, last = min(s for s, _ in dev), max(e for _, e in dev)
            span, busy = last - first, _union_us(dev)
            # an enclosing range (prefill) starts its own work after the stage ranges it encloses
            start_backlog, end_backlog = first - max(r.start, r.children_end), last - r.end
        else:
            span = busy = start_backlog = end_backlog = 0.0
        out.setdefault(r.stage, []).append({
            "host": host, "span": span, "busy": busy, "kernels": float(len(dev)), "sync": sync, "copy": copy,
            "start": start_backlog, "end": end_backlog,
        })
    order = [s.value for s in Stage]
    result = []
    for stage in sorted(out, key=order.index):
        rows = out[stage]
        n = len(rows)

        def mean(key: str, rows: list[dict[str, float]] = rows, n: int = n) -> float:
            return sum(row[key] for row in rows) / n / 1e3

        result.append(StageTimeline(
            stage=stage, instances=n, host_ms=mean("host"), device_span_ms=mean("span"),
            device_busy_ms=mean("busy"), kernels=sum(row["kernels"] for row in rows) / n,
            sync_ms=mean("sync"), copy_call_ms=mean("copy"), start_backlog_ms=mean("start"),
            end_backlog_ms=mean("end")))
    return result


def render_timeline_markdown(rows: list[StageTimeline]) -> str:
    """The timeline as a Markdown table (ms per range instance; decode = per step)."""
    lines = ["| stage | ranges | host ms | device span ms | device busy ms | kernels | sync ms | copy-call ms | "
             "backlog at start ms | backlog at end ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r.stage} | {r.instances} | {r.host_ms:.3f} | {r.device_span_ms:.3f} | "
                     f"{r.device_busy_ms:.3f} | {r.kernels:.0f} | {r.sync_ms:.3f} | {r.copy_call_ms:.3f} | "
                     f"{r.start_backlog_ms:.3f} | {r.end_backlog_ms:.3f} |")
    return "\n".join(lines)
