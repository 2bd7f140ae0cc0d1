"""Measured ceilings: timing arithmetic (fake timer on CPU), calibration-file round trip, effective peaks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_perf_opt.data.common import PeakSource
from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.bench import (
    BenchMethod,
    CeilingsError,
    MeasuredCeilings,
    NoGpuError,
    copy_buffer_bytes,
    copy_bytes_moved,
    effective_peaks,
    load_ceilings,
    matmul_flops,
    rate_from_times,
    run_bench,
    save_ceilings,
)
from llm_perf_opt.hardware.catalog import GIB, MIB, load_catalog
from llm_perf_opt.vocab import DType


class FakeTimer:
    """Runs fn once per call (so the code path is exercised) and returns canned per-repeat times in ms."""

    def __init__(self, times_ms: list[list[float]]) -> None:
        self.queue = list(times_ms)
        self.calls: list[tuple[int, int]] = []

    def __call__(self, fn, *, warmup: int, repeats: int) -> list[float]:
        fn()
        self.calls.append((warmup, repeats))
        times = self.queue.pop(0)
        assert len(times) == repeats
        return times


def test_flop_and_byte_counts() -> None:
    assert matmul_flops(8192, 8192, 8192) == 2 * 8192**3
    assert matmul_flops(2, 3, 4) == 48
    assert copy_bytes_moved(2 * GIB) == 4 * GIB


def test_rate_from_times_uses_the_median() -> None:
    # 1e12 FLOP per call; median of (1, 2, 100) ms = 2 ms -> 5e14 FLOP/s; the outlier does not move it
    assert rate_from_times(1e12, [1.0, 100.0, 2.0]) == pytest.approx(5e14)
    assert rate_from_times(1e9, [4.0, 2.0], ops_per_call=2) == pytest.approx(2 * 1e9 / 3e-3)
    with pytest.raises(ValueError):
        rate_from_times(1.0, [])
    with pytest.raises(ValueError):
        rate_from_times(1.0, [1.0, 0.0])


def test_reference_h100_numbers_round_trip_through_the_math() -> None:
    """786 TFLOP/s at 8192^3 is 1.3987 ms per matmul; 3.03 TB/s on 2 GiB buffers is 1.4174 ms per copy."""
    ms_matmul = matmul_flops(8192, 8192, 8192) / 786e12 * 1e3
    assert rate_from_times(matmul_flops(8192, 8192, 8192), [ms_matmul] * 3) == pytest.approx(786e12)
    ms_copy = copy_bytes_moved(2 * GIB) / 3.03e12 * 1e3
    assert rate_from_times(copy_bytes_moved(2 * GIB), [ms_copy]) == pytest.approx(3.03e12)


def test_copy_buffer_sizing() -> None:
    l2 = 50 * MIB
    assert copy_buffer_bytes(l2, None) == 2 * GIB
    assert copy_buffer_bytes(400 * MIB, None) == 8 * 400 * MIB  # 8 x L2 beats 2 GiB
    assert copy_buffer_bytes(l2, 4 * GIB) == GIB  # src + dst within half the free memory
    assert copy_buffer_bytes(l2, None, requested=512 * MIB) == 512 * MIB
    with pytest.raises(UserError, match="4 x L2"):
        copy_buffer_bytes(l2, None, requested=100 * MIB)


def test_run_bench_on_cpu_with_fake_timer() -> None:
    n, inner, repeats = 64, 2, 3
    # each timed repeat covers `inner` ops: bf16 median 4 ms -> 2 ms/op; fp16 8 ms -> 4 ms/op; copy 1 ms -> 0.5
    timer = FakeTimer([[4.0, 3.0, 5.0], [8.0, 8.0, 9.0], [1.0, 1.0, 1.0]])
    ceilings = run_bench(spec=None, dtypes=[DType.BF16, DType.FP16], matmul_size=n, warmup=1, repeats=repeats,
                         inner=inner, copy_bytes=4 * MIB, timer=timer, device="cpu", pattern_sides=[])
    assert timer.calls == [(1, 3)] * 3
    assert ceilings.gpu_key is None and ceilings.device_name == "cpu"
    assert ceilings.matmul_flops_per_s["bf16"] == pytest.approx(2 * n**3 / 2e-3)
    assert ceilings.matmul_flops_per_s["fp16"] == pytest.approx(2 * n**3 / 4e-3)
    assert ceilings.memory_bandwidth_bytes_per_s == pytest.approx(2 * 4 * MIB / 0.5e-3)
    assert ceilings.matmul_times_ms["bf16"] == [2.0, 1.5, 2.5]
    assert ceilings.method.copy_buffer_bytes == 4 * MIB
    assert ceilings.method.matmul_size == n and ceilings.method.inner == inner
    assert ceilings.flops_per_s("bfloat16") == ceilings.matmul_flops_per_s["bf16"]
    assert ceilings.flops_per_s("tf32") is None


def test_run_bench_copy_buffer_must_exceed_the_l2() -> None:
    spec = load_catalog().get("h100-sxm")  # 50 MiB L2: a 4 MiB copy would measure the cache, not DRAM
    with pytest.raises(UserError, match="4 x L2"):
        run_bench(spec=spec, dtypes=[DType.BF16], matmul_size=8, repeats=1, copy_bytes=4 * MIB,
                  device="cpu", timer=FakeTimer([[1.0]]))


def test_run_bench_rejects_bad_arguments() -> None:
    with pytest.raises(UserError):
        run_bench(spec=None, matmul_size=0, device="cpu", timer=FakeTimer([]))
    with pytest.raises(UserError, match="cannot benchmark fp8"):
        run_bench(spec=None, dtypes=[DType.FP8], matmul_size=8, repeats=1, copy_bytes=MIB, device="cpu",
                  timer=FakeTimer([[1.0]]))


def test_run_bench_without_cuda_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(NoGpuError) as info:
        run_bench(spec=None)
    assert "\n" not in str(info.value)


def _ceilings(gpu_key: str | None = "h100-sxm") -> MeasuredCeilings:
    return MeasuredCeilings(
        gpu_key=gpu_key, device_name="NVIDIA H100 80GB HBM3",
        matmul_flops_per_s={"bf16": 786e12, "fp16": 780e12}, memory_bandwidth_bytes_per_s=3.03e12,
        method=BenchMethod(matmul_size=8192, warmup=5, repeats=20, inner=5, copy_buffer_bytes=2 * GIB),
        torch_version="2.11.0+cu130", cuda_version="13.0", driver_version="580.159.04",
        date_utc="2026-11-22T05:00:00+00:00", host="gpu-host",
        matmul_times_ms={"bf16": [1.4, 1.41], "fp16": [1.41]}, copy_times_ms=[1.42, 1.43])


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_ceilings_round_trip(tmp_path: Path, suffix: str) -> None:
    original = _ceilings()
    path = save_ceilings(original, tmp_path / f"sub/ceilings{suffix}")
    loaded = load_ceilings(path)
    assert loaded == original


def test_ceilings_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CeilingsError, match="not found"):
        load_ceilings(tmp_path / "absent.json")
    with pytest.raises(CeilingsError, match=r"\.json, \.yaml"):
        save_ceilings(_ceilings(), tmp_path / "c.txt")
    data = _ceilings().as_dict()
    data["matmul_flops_per_s"] = {"bf16": -1.0}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CeilingsError, match="matmul_flops_per_s.bf16"):
        load_ceilings(bad)
    data = _ceilings().as_dict()
    del data["method"]
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CeilingsError, match="'method' missing"):
        load_ceilings(bad)
    data = _ceilings().as_dict()
    data["format_version"] = 99
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CeilingsError, match="format_version"):
        load_ceilings(bad)


def test_effective_peaks_datasheet_and_measured() -> None:
    spec = load_catalog().get("h100-sxm")
    sheet = effective_peaks(spec, None)
    assert sheet.source is PeakSource.DATASHEET
    assert sheet.peak_flops_per_s("bf16") == spec.peak_flops_per_s("bf16")
    assert sheet.cuda_core_flops_per_s == spec.cuda_core_fp32_flops_per_s
    assert sheet.memory_bandwidth_bytes_per_s == spec.memory_bandwidth_bytes_per_s
    assert "NVIDIA H100 Tensor Core GPU Datasheet" in sheet.source_ref

    measured = effective_peaks(spec, _ceilings())
    assert measured.source is PeakSource.MEASURED
    assert measured.peak_flops_per_s(DType.BF16) == 786e12
    assert measured.flops_origin[DType.BF16] is PeakSource.MEASURED
    assert measured.peak_flops_per_s("tf32") == spec.peak_flops_per_s("tf32")  # not measured: datasheet
    assert measured.flops_origin[DType.TF32] is PeakSource.DATASHEET
    assert measured.memory_bandwidth_bytes_per_s == 3.03e12
    assert measured.bandwidth_origin is PeakSource.MEASURED
    assert "hw bench" in measured.source_ref
    assert measured.memory_capacity_bytes == spec.memory_bytes

    ratios = _ceilings().ratios_to(spec)
    assert ratios["bf16"] == pytest.approx(786 / 989.5)
    assert ratios["memory_bandwidth"] == pytest.approx(3.03 / 3.35)


def test_effective_peaks_refuses_ceilings_of_another_gpu() -> None:
    spec = load_catalog().get("a100-sxm4-80gb")
    with pytest.raises(UserError, match="not on 'a100-sxm4-80gb'"):
        effective_peaks(spec, _ceilings())
    with pytest.raises(UserError, match="no fp8 peak"):
        effective_peaks(spec).peak_flops_per_s("fp8")


def test_unknown_dtype_names_are_user_errors() -> None:
    with pytest.raises(UserError, match="unknown dtype"):
        _ceilings().flops_per_s("int8")
    with pytest.raises(UserError, match="unknown dtype"):
        effective_peaks(load_catalog().get("h100-sxm")).peak_flops_per_s("int8")


def test_kernel_gap_from_a_trace() -> None:
    from llm_perf_opt.hardware.bench import kernel_gap_from_trace, small_kernel_gaps_us

    # three small kernels of mixed kinds queued 1 us apart, a long matmul, two more: the gaps next to the
    # matmul are not counted, the kinds do not matter
    trace = [("add", 0.0, 0.9), ("mul", 1.9, 2.8), ("mm", 3.8, 4.7), ("gemm", 5.0, 50.0),
             ("softmax", 60.0, 60.9), ("copy", 62.1, 63.0)]
    gaps, durations = small_kernel_gaps_us(list(reversed(trace)))  # order of the trace does not matter
    assert gaps == pytest.approx([1.0, 1.0, 1.2]) and durations == pytest.approx([0.9] * 5)
    gap_s, dur_s = kernel_gap_from_trace(trace)
    assert gap_s == pytest.approx(1.0e-6) and dur_s == pytest.approx(0.9e-6)
    # a host that fell behind leaves long gaps: refused, not reported as the device's gap
    slow = [("add", 20.0 * i, 20.0 * i + 0.9) for i in range(10)]
    with pytest.raises(UserError, match="did not stay ahead"):
        kernel_gap_from_trace(slow)
    with pytest.raises(UserError, match="no two consecutive small kernels"):
        kernel_gap_from_trace([])


def test_the_gap_mix_cycles_through_its_kinds() -> None:
    import torch

    from llm_perf_opt.hardware.bench import GAP_MIX_KINDS, gap_mix

    launch = gap_mix("cpu")
    outs = [launch() for _ in range(2 * GAP_MIX_KINDS)]
    shapes = [tuple(o.shape) for o in outs if isinstance(o, torch.Tensor)]
    assert shapes[:GAP_MIX_KINDS] == [(1,), (4096,), (64, 64), (8, 1024), (4096,)]
    assert shapes[GAP_MIX_KINDS:] == shapes[:GAP_MIX_KINDS]  # the second round repeats the first
    assert float(outs[GAP_MIX_KINDS][0]) == 2.0  # the 1-element add ran twice


def test_ceilings_kernel_gap_is_checked(tmp_path: Path) -> None:
    import attrs

    from llm_perf_opt.hardware.bench import CeilingsError, load_ceilings, save_ceilings

    base = load_ceilings(save_ceilings(_ceilings(), tmp_path / "c.json"))
    assert base.kernel_gap_s is None
    kept = load_ceilings(save_ceilings(attrs.evolve(base, kernel_gap_s=1e-6, kernel_gap_duration_s=9e-7),
                                       tmp_path / "g.json"))
    assert kept.kernel_gap_s == 1e-6 and kept.kernel_gap_duration_s == 9e-7
    raw = json.loads((tmp_path / "g.json").read_text())
    raw["kernel_gap_s"] = -1.0
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(CeilingsError, match="kernel_gap_s must be a number >= 0"):
        load_ceilings(tmp_path / "bad.json")


def test_ceilings_graph_kernel_gap_is_checked(tmp_path: Path) -> None:
    import attrs

    base = _ceilings()
    assert base.kernel_gap_graph_s is None
    kept = load_ceilings(save_ceilings(attrs.evolve(base, kernel_gap_s=9.9e-7, kernel_gap_graph_s=3e-7),
                                       tmp_path / "g.yaml"))
    assert kept.kernel_gap_graph_s == 3e-7 and kept.kernel_gap_s == 9.9e-7
    assert load_ceilings(save_ceilings(attrs.evolve(base, kernel_gap_graph_s=0.0),
                                       tmp_path / "zero.json")).kernel_gap_graph_s == 0.0
    raw = json.loads(save_ceilings(kept, tmp_path / "g.json").read_text())
    del raw["kernel_gap_graph_s"]  # a file written before the field existed
    (tmp_path / "old.json").write_text(json.dumps(raw))
    assert load_ceilings(tmp_path / "old.json").kernel_gap_graph_s is None
    for bad in (-1e-7, "0.3", True):
        raw["kernel_gap_graph_s"] = bad
        (tmp_path / "bad.json").write_text(json.dumps(raw))
        with pytest.raises(CeilingsError, match="kernel_gap_graph_s must be a number >= 0") as info:
            load_ceilings(tmp_path / "bad.json")
        assert len(str(info.value).splitlines()) == 1


def test_graph_kernel_gap_traces_replays_of_one_captured_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.cuda's streams and graphs and torch.profiler's profile are faked on CPU: each replay of the
    captured graph records GAP_KERNELS tiny kernels (1.0 us each, 0.3 us apart, replays 10 us apart) and a
    host event while the profiler runs; the warm-up, capture, replays, device_trace and the parsing are real."""
    import contextlib
    import types
    from collections.abc import Iterator

    import torch
    import torch.profiler
    from torch.autograd import DeviceType

    from llm_perf_opt.hardware import bench

    log: list[str] = []
    recorded: list[Any] = []
    state = {"profiling": False, "clock": 0.0}

    def event(name: str, start: float, end: float, device_type: Any) -> Any:
        return types.SimpleNamespace(name=name, time_range=types.SimpleNamespace(start=start, end=end),
                                     device_type=device_type)

    class FakeProfile:
        def __init__(self, *, activities: list[Any]) -> None:
            log.append("profile " + ",".join(sorted(a.name for a in activities)))

        def __enter__(self) -> FakeProfile:
            state["profiling"] = True
            return self

        def __exit__(self, *exc: object) -> None:
            state["profiling"] = False

        def events(self) -> list[Any]:
            return list(recorded)

    class FakeGraph:
        def replay(self) -> None:
            log.append("replay")
            if not state["profiling"]:
                return
            t = float(state["clock"])
            recorded.append(event("cudaGraphLaunch", t - 5.0, t - 3.0, DeviceType.CPU))
            for _ in range(bench.GAP_KERNELS):
                recorded.append(event("add_kernel", t, t + 1.0, DeviceType.CUDA))
                t += 1.3
            state["clock"] = t + 10.0 - 0.3

    class FakeStream:
        def __init__(self, name: str) -> None:
            self.name = name

        def wait_stream(self, other: FakeStream) -> None:
            log.append(f"{self.name} waits for {other.name}")

    @contextlib.contextmanager
    def on(stream: FakeStream) -> Iterator[None]:
        log.append(f"on {stream.name}")
        yield
        log.append(f"off {stream.name}")

    @contextlib.contextmanager
    def capture(graph: FakeGraph) -> Iterator[None]:
        assert isinstance(graph, FakeGraph)
        log.append("capture")
        yield
        log.append("captured")

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream("current"))
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: FakeStream("side"))
    monkeypatch.setattr(torch.cuda, "stream", on)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("sync"))
    monkeypatch.setattr(torch.profiler, "profile", FakeProfile)

    gap_s, dur_s = bench.measure_graph_kernel_gap(device="cpu", repeats=3)
    assert gap_s == pytest.approx(0.3e-6) and dur_s == pytest.approx(1.0e-6)
    assert log == ["side waits for current", "on side", "off side", "current waits for side", "capture", "captured",
                   "replay", "sync", "profile CPU,CUDA", "replay", "replay", "replay", "sync"]
    # the shared trace helper keeps the device's events only
    recorded.clear()
    trace = bench.device_trace(FakeGraph().replay, device="cpu")
    assert len(trace) == bench.GAP_KERNELS and {name for name, _, _ in trace} == {"add_kernel"}
    assert trace[1][1] - trace[0][2] == pytest.approx(0.3)
