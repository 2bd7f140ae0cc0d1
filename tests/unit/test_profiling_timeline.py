"""Host/device timeline per stage from a Chrome trace: nesting, correlation, backlog, sync time, bad files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from llm_perf_opt.profiling.timeline import TraceError, load_trace, render_timeline_markdown, stage_timelines


def _x(cat: str, name: str, ts: float, dur: float, corr: int | None = None) -> dict:
    e = {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": 1}
    if corr is not None:
        e["args"] = {"correlation": corr}
    return e


TRACE = {"traceEvents": [
    _x("user_annotation", "prefill", 0, 100),
    _x("user_annotation", "vision.sam", 10, 30),
    _x("cuda_runtime", "cudaLaunchKernel", 12, 2, corr=1),
    _x("kernel", "sam_gemm", 20, 30, corr=1),
    _x("cuda_runtime", "cudaLaunchKernel", 45, 2, corr=2),
    _x("kernel", "lm_gemm", 55, 5, corr=2),
    _x("cuda_runtime", "cudaStreamSynchronize", 70, 10, corr=3),
    _x("cuda_runtime", "cudaMemcpyAsync", 85, 4, corr=6),
    _x("gpu_memcpy", "Memcpy HtoD", 86, 1, corr=6),
    _x("gpu_user_annotation", "prefill", 20, 45),  # the device-side copy of a range: ignored
    _x("user_annotation", "decode", 115, 40),  # the enclosing decode range: its steps are used
    _x("user_annotation", "decode.step.0", 120, 10),
    _x("cuda_runtime", "cudaLaunchKernel", 121, 1, corr=4),
    _x("kernel", "step0", 125, 15, corr=4),
    _x("user_annotation", "decode.step.1", 140, 10),
    _x("cuda_runtime", "cudaLaunchKernel", 141, 1, corr=5),
    _x("kernel", "step1", 141, 4, corr=5),
    _x("cuda_runtime", "cudaLaunchKernel", 300, 1, corr=7),  # outside every range
    _x("kernel", "stray", 301, 1, corr=7),
]}


def test_stage_host_and_device_times() -> None:
    rows = {r.stage: r for r in stage_timelines(TRACE)}
    assert list(rows) == ["vision.sam", "prefill", "decode"]
    sam = rows["vision.sam"]
    assert (sam.instances, sam.kernels) == (1, 1)
    assert sam.host_ms == pytest.approx(0.030)
    assert sam.device_span_ms == pytest.approx(0.030) and sam.device_busy_ms == pytest.approx(0.030)
    assert sam.start_backlog_ms == pytest.approx(0.010) and sam.end_backlog_ms == pytest.approx(0.010)
    pre = rows["prefill"]  # the language part: the enclosed SAM range and its kernel are not counted
    assert pre.host_ms == pytest.approx(0.070)
    assert pre.kernels == 2  # lm_gemm and the HtoD copy
    assert pre.device_span_ms == pytest.approx(0.032)  # 55 .. 87
    assert pre.device_busy_ms == pytest.approx(0.006)
    assert pre.sync_ms == pytest.approx(0.010) and pre.copy_call_ms == pytest.approx(0.004)
    # its own work starts when the enclosed SAM range ends (host 40): first kernel at 55
    assert pre.start_backlog_ms == pytest.approx(0.015) and pre.end_backlog_ms == pytest.approx(-0.013)
    dec = rows["decode"]  # mean per step
    assert dec.instances == 2
    assert dec.host_ms == pytest.approx(0.010)
    assert dec.device_span_ms == pytest.approx(0.0095)
    assert dec.start_backlog_ms == pytest.approx(0.003) and dec.end_backlog_ms == pytest.approx(0.0025)
    md = render_timeline_markdown(list(rows.values()))
    assert md.count("\n") == 4 and "| decode | 2 |" in md


def test_trace_files_and_bad_input(tmp_path: Path) -> None:
    p = tmp_path / "trace.json.gz"
    with gzip.open(p, "wt", encoding="utf-8") as fh:
        json.dump(TRACE, fh)
    assert [r.stage for r in stage_timelines(load_trace(p))] == ["vision.sam", "prefill", "decode"]
    with pytest.raises(TraceError, match="no such trace file"):
        load_trace(tmp_path / "missing.json.gz")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(TraceError, match="traceEvents"):
        load_trace(bad)
    broken = tmp_path / "broken.json.gz"
    broken.write_bytes(b"not gzip")
    with pytest.raises(TraceError, match="not a readable Chrome trace"):
        load_trace(broken)


def test_malformed_events_raise_errors_the_runner_catches() -> None:
    """A range without a timestamp is a KeyError/TypeError, which the runner turns into a note."""
    with pytest.raises((KeyError, TypeError, ValueError)):
        stage_timelines({"traceEvents": [{"ph": "X", "cat": "user_annotation", "name": "prefill"}]})
