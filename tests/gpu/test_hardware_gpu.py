"""On a real GPU: detection resolves a catalogue entry and the measured ceilings are plausible."""

from __future__ import annotations

import pytest

from llm_perf_opt.hardware.bench import run_bench
from llm_perf_opt.hardware.catalog import load_catalog
from llm_perf_opt.hardware.detect import detect_gpu
from llm_perf_opt.hardware.patterns import PATTERNS

pytestmark = pytest.mark.gpu


def test_detect_resolves_the_local_gpu() -> None:
    gpu = detect_gpu()
    assert gpu is not None, "no CUDA GPU visible"
    assert gpu.catalog_key is not None, gpu.catalog_error
    spec = load_catalog().get(gpu.catalog_key)
    if spec.sm_count is not None:
        assert gpu.sm_count == spec.sm_count
    assert spec.matches_memory(gpu.memory_total_bytes)


def test_measured_ceilings_below_and_near_the_datasheet() -> None:
    gpu = detect_gpu()
    assert gpu is not None and gpu.catalog_key is not None
    spec = load_catalog().get(gpu.catalog_key)
    ceilings = run_bench(spec=spec, matmul_size=4096, warmup=5, repeats=10, inner=5)
    ratios = ceilings.ratios_to(spec)
    # A measured rate above the dense datasheet peak means a wrong (e.g. sparse) catalogue figure;
    # far below it means a broken benchmark. Bounds are loose on purpose (clocks, power caps).
    for name in ("bf16", "fp16"):
        assert 0.3 < ratios[name] <= 1.05, (name, ratios)
    assert 0.5 < ratios["memory_bandwidth"] <= 1.05, ratios


def test_kernel_floor_and_access_patterns_are_plausible() -> None:
    gpu = detect_gpu()
    assert gpu is not None and gpu.catalog_key is not None
    spec = load_catalog().get(gpu.catalog_key)
    ceilings = run_bench(spec=spec, matmul_size=2048, warmup=2, repeats=5, inner=2, pattern_sides=[14, 64])
    # a queued tiny kernel costs the device about a microsecond or two, not nothing and not a host launch
    assert ceilings.kernel_floor_s is not None and 0.2e-6 < ceilings.kernel_floor_s < 10e-6
    # the gap between queued kernels is part of the floor (run time + gap), and the tiny kernel's duration
    # is the rest of it
    gap, dur = ceilings.kernel_gap_s, ceilings.kernel_gap_duration_s
    assert gap is not None and dur is not None and 0.1e-6 < gap < ceilings.kernel_floor_s
    assert gap + dur == pytest.approx(ceilings.kernel_floor_s, rel=0.35)
    ratios = ceilings.pattern_ratios()
    assert set(ratios) == {f"{p}@{s}" for p in PATTERNS for s in (14, 64)}
    # the contiguous patterns run near the copy rate; the broadcast outer add far below it
    assert 0.7 < ratios["bias_add@64"] < 1.3 and ratios["outer_add@64"] < 0.5


def test_the_graph_kernel_gap_is_smaller_than_the_queued_one() -> None:
    from llm_perf_opt.hardware.bench import measure_graph_kernel_gap, measure_kernel_gap

    gap, _ = measure_kernel_gap(device="cuda", repeats=5)
    graph_gap, graph_dur = measure_graph_kernel_gap(device="cuda", repeats=5)
    # replayed from a graph, no host launch stands between the kernels: the device's gap shrinks
    # (on an H200: 0.26 us for the mix in a graph, 0.27-0.29 us in a graph-replayed decode step,
    # 0.96-0.99 us queued on a stream)
    assert 0 < graph_gap < gap, (graph_gap, gap)
    assert 0 < graph_dur < 10e-6, graph_dur


def test_gemm_times_are_device_times_and_see_the_alignment() -> None:
    import time

    import torch

    from llm_perf_opt.hardware.gemms import gemm_flops, gemm_program, measure_gemms, queued_cuda_timer

    keys = ["bmm_nt@16x257x257x64", "bmm_nt@16x256x256x64", "linear_bias@1x257x1024x1024"]
    times = {k: sorted(v)[len(v) // 2] for k, v in measure_gemms(keys, device="cuda", repeats=5).items()}
    assert set(times) == set(keys) and all(0 < t < 1e-3 for t in times.values())
    # CLIP's odd 257-token scores run on slower kernels than the aligned 256-token ones (per FLOP)
    rate = {k: gemm_flops(k) / t for k, t in times.items()}
    assert rate["bmm_nt@16x257x257x64"] < rate["bmm_nt@16x256x256x64"]
    # queued behind other work the device time is timed, not the host's issue time: back-to-back calls of a
    # tiny GEMM issued without queued work take at least the host's time per call
    fn = gemm_program("linear_bias@1x257x1024x1024", "cuda")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / 200
    assert queued_cuda_timer(fn, 20) <= wall * 1.1


def test_a_routed_experts_call_is_timed_on_the_device() -> None:
    """Base b1's prefill experts call (~50 kernels): the timer gets the host ahead (doubling its spin) and
    times the kernels' summed durations plus at most a few microseconds of gap per kernel, well under the
    host's back-to-back pace."""
    import time

    import torch
    from torch.profiler import ProfilerActivity, profile

    from llm_perf_opt.hardware.gemms import gemm_program, measure_gemms

    key = "experts_grouped_mm@64x6x282x1280x896"
    (per_call,) = measure_gemms([key], device="cuda", repeats=5).values()
    t = sorted(per_call)[2]
    fn = gemm_program(key, "cuda")
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
    device_events = [e for e in prof.events() if e.device_type.name == "CUDA"]
    kernels = sum(e.device_time_total for e in device_events) * 1e-6 / 10
    launches = len(device_events) / 10
    t0 = time.perf_counter()
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / 50
    assert 0.9 * kernels < t < kernels + launches * 4e-6, (t, kernels, launches)
    assert t < wall * 1.1


def test_host_probe_on_the_gpu_is_a_launch_cost() -> None:
    import torch

    from llm_perf_opt.hardware.host_speed import measure_host_speed

    speed = measure_host_speed(torch.device("cuda", 0), samples=3, interval_s=0.0)
    for kind in ("add", "module"):
        # a few us to a few tens of us per op: a host launch, neither free nor a sync
        assert 1.0 < speed.probes[kind].median_us < 100.0, (kind, speed.probes[kind].samples_us)


def test_decode_step_probe_counts_a_real_step_and_prices_its_launches() -> None:
    import torch

    from llm_perf_opt.hardware.host_speed import measure_host_speed

    speed = measure_host_speed(torch.device("cuda", 0), kinds=["module"], samples=3, interval_s=0.0,
                               decode_step=True)
    module = speed.probes["module"]
    assert module.device_launches is not None and module.aten_calls is not None
    assert module.decode_step_launches is not None and module.decode_step_calls is not None
    # a 12-layer decode step launches hundreds of kernels, several times the tiny two-layer forward's
    assert module.decode_step_launches > 3 * module.device_launches > 0
    assert module.decode_step_calls > module.decode_step_launches
    # a real step's host us per launch is of the order of the probe's us per call (1.45 on the H200)
    assert module.decode_ratio is not None and 0.7 < module.decode_ratio < 3.0, module.decode_ratio_samples
    # SAM on a Tiny page: 12 blocks of launches, two rel-pos lookups per block that each sync the host
    assert module.sam_mode == "tiny" and module.sam_launches is not None and module.sam_launches > 300
    assert module.sam_syncs is not None and 24 <= module.sam_syncs <= 26  # + the page copied to the device
    assert module.sam_ratio is not None and 0.7 < module.sam_ratio < 5.0, module.sam_ratio_samples
