"""Roofline arithmetic: closed-form decode sums, per-layer max(compute, memory), peaks, memory peak."""

from __future__ import annotations

import random

import pytest

from llm_perf_opt.analytic.calibration import Calibration
from llm_perf_opt.analytic.layers.common import Linear
from llm_perf_opt.analytic.layers.decoder import RoutedExperts, expected_distinct_experts
from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.analytic.roofline import (
    RooflinePeaks,
    node_times,
    sum_linear,
    sum_max_linear,
    summed_node_times,
)
from llm_perf_opt.analytic.workloads import get_profile, with_overrides
from llm_perf_opt.data.common import PeakSource
from llm_perf_opt.hardware import effective_peaks, load_catalog
from llm_perf_opt.hardware.bench import BenchMethod, MeasuredCeilings
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.vocab import DType, OperatorCategory, Stage

SPEC = load_catalog().get("h100-sxm")
PEAKS = RooflinePeaks.from_effective(effective_peaks(SPEC), DType.BF16)


def test_sum_linear_and_sum_max_linear_match_brute_force():
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 60)
        f0, f1, g0, g1 = (rng.uniform(-5, 5) for _ in range(4))

        def lin(a, b, i, n=n):
            return a if n == 1 else a + (b - a) * i / (n - 1)

        brute = sum(max(lin(f0, f1, i), lin(g0, g1, i)) for i in range(n))
        assert sum_max_linear(f0, f1, g0, g1, n) == pytest.approx(brute, rel=1e-12, abs=1e-9)
        assert sum_linear(f0, f1, n, 0, n) == pytest.approx(sum(lin(f0, f1, i) for i in range(n)), abs=1e-9)


def test_leaf_time_is_max_of_compute_and_memory():
    small = Linear("x", Stage.DECODE, tokens=1, in_features=4096, out_features=4096, bias=False, act_bytes=2,
                   weight_bytes=2)
    big = Linear("y", Stage.PREFILL, tokens=8192, in_features=4096, out_features=4096, bias=False, act_bytes=2,
                 weight_bytes=2)
    for layer, bound in ((small, "memory"), (big, "compute")):
        t = node_times(layer, PEAKS)[id(layer)]
        compute = layer.forward_tensor_core_flops() / PEAKS.tensor_core_flops_per_s
        memory = layer.forward_cal_io() / PEAKS.memory_bytes_per_s
        assert t.time_s == pytest.approx(max(compute, memory))
        assert t.bound.value == bound


def test_decode_sum_over_steps_equals_per_step_sum():
    cfg = DeepseekOCRConfig.default()
    wl = with_overrides(get_profile("dsocr-base-v1"), max_new_tokens=41, attention="eager")
    model = AnalyticModel(cfg, wl)
    n = model.shape.decode_forwards
    first = model.decode_step(model.shape.decode_kv_len(0))
    last = model.decode_step(model.shape.decode_kv_len(n - 1))
    summed = summed_node_times(first, last, n, PEAKS)[id(first)].time_s
    brute = 0.0
    flops = 0.0
    for i in range(n):
        step = model.decode_step(model.shape.decode_kv_len(i))
        brute += node_times(step, PEAKS)[id(step)].time_s
        flops += step.forward_flops()
    assert summed == pytest.approx(brute, rel=1e-12)
    # FLOPs are linear in L: steps x the mean-length step is exact
    assert model.stages[Stage.DECODE].forward_flops() * n == pytest.approx(flops, rel=1e-12)


def test_measured_ceilings_replace_datasheet_and_calibration_adds_launch_cost():
    from llm_perf_opt.runners.dsocr_analyzer import DeepseekOCRStaticAnalyzer

    ceilings = MeasuredCeilings(
        gpu_key="h100-sxm", device_name="NVIDIA H100 80GB HBM3", matmul_flops_per_s={"bf16": 786e12},
        memory_bandwidth_bytes_per_s=3.03e12,
        method=BenchMethod(matmul_size=8192, warmup=3, repeats=10, inner=1, copy_buffer_bytes=2**31))
    analyzer = DeepseekOCRStaticAnalyzer()
    cfg = DeepseekOCRConfig.default()
    wl = get_profile("dsocr-base-v1")
    sheet = analyzer.analyze(cfg, wl, "h100-sxm", max_depth=1)
    measured = analyzer.analyze(cfg, wl, "h100-sxm", ceilings, max_depth=1)
    assert sheet.peaks.source is PeakSource.DATASHEET and measured.peaks.source is PeakSource.MEASURED
    assert measured.peaks.tensor_core_flops_per_s == 786e12
    assert measured.model_totals.time_ms > sheet.model_totals.time_ms
    assert measured.model_totals.total_flops == sheet.model_totals.total_flops
    cal = Calibration(gpu_key="h100-sxm", launch_overhead_s=5e-6)
    slow = analyzer.analyze(cfg, wl, "h100-sxm", calibration=cal, max_depth=1)
    assert slow.peaks.launch_overhead_ms == pytest.approx(5e-3)
    assert slow.decode.per_token.time_ms > sheet.decode.per_token.time_ms


def test_routed_experts_weight_traffic():
    assert expected_distinct_experts(64, 6, 1) == pytest.approx(6.0)
    assert expected_distinct_experts(64, 6, 10_000) == pytest.approx(64.0)
    uniform = RoutedExperts("e", Stage.DECODE, tokens=1, hidden=1280, intermediate=896, experts=64, top_k=6,
                            act_bytes=2, weight_bytes=2)
    counted = RoutedExperts("e", Stage.DECODE, tokens=1, hidden=1280, intermediate=896, experts=64, top_k=6,
                            act_bytes=2, weight_bytes=2, tokens_per_expert=[1] * 6 + [0] * 58)
    assert uniform.forward_tensor_core_flops() == counted.forward_tensor_core_flops() == 6 * 6 * 1280 * 896
    assert uniform.experts_hit == pytest.approx(6.0) and counted.experts_hit == 6
    weights_read = 6 * 3 * 1280 * 896 * 2
    assert counted.ops[OperatorCategory.MOE_EXPERTS][2] >= weights_read
    assert uniform.forward_memory_weight() == 64 * 3 * 1280 * 896 * 2


def test_activation_memory_is_a_peak_not_a_sum():
    model = AnalyticModel(DeepseekOCRConfig.default(), get_profile("dsocr-base-v1"))
    stage = model.stages[Stage.PREFILL]
    leaves = [layer for _, layer in stage.walk() if not layer.children]
    assert stage.forward_memory_activation() < sum(leaf.activation_bytes for leaf in leaves)
    assert stage.forward_memory_activation() >= max(leaf.activation_bytes for leaf in leaves)
    # backward keeps every leaf's activations: the sum
    assert stage.backward_memory_activation() == pytest.approx(sum(leaf.activation_bytes for leaf in leaves))


def test_backward_counterparts_of_a_linear_and_of_a_stage():
    # Y = X W^T: dX = dY W and dW = dY^T X are two products of the forward's size; the traffic is twice the
    # forward's plus one write of the weight gradients (as large as the weights)
    lin = Linear("proj", Stage.PREFILL, tokens=10, in_features=64, out_features=32, bias=True, act_bytes=2,
                 weight_bytes=2)
    assert lin.backward_tensor_core_flops() == 2 * (2 * 10 * 64 * 32)
    assert lin.backward_cuda_core_flops() == 2 * (10 * 32)
    weights = 2 * (64 * 32 + 32)
    assert lin.backward_memory_weight() == weights
    io = 2 * 10 * (64 + 32) + weights
    assert lin.backward_cal_io() == 2 * io + weights
    assert lin.backward_arithmetic_intensity() == pytest.approx(2 * (2 * 10 * 64 * 32 + 10 * 32) / (2 * io + weights))
    assert lin.backward_memory_kvcache() == 0.0
    tree = AnalyticModel(DeepseekOCRConfig.default(), get_profile("dsocr-base-v1")).stages[Stage.PREFILL]
    assert tree.backward_tensor_core_flops() == pytest.approx(2 * tree.forward_tensor_core_flops())
    assert tree.backward_cal_io() == pytest.approx(2 * tree.forward_cal_io() + tree.forward_memory_weight())


def test_flash_skips_the_causal_triangle():
    cfg = DeepseekOCRConfig.default()
    base = get_profile("dsocr-base-v1")
    sdpa = AnalyticModel(cfg, with_overrides(base, attention="sdpa")).stages[Stage.PREFILL]
    flash = AnalyticModel(cfg, with_overrides(base, attention="flash")).stages[Stage.PREFILL]
    eager = AnalyticModel(cfg, with_overrides(base, attention="eager")).stages[Stage.PREFILL]
    assert flash.forward_tensor_core_flops() < sdpa.forward_tensor_core_flops() == eager.forward_tensor_core_flops()
    assert eager.forward_cal_io() > sdpa.forward_cal_io()


def test_a_tree_memo_gives_the_sums_of_the_tree_and_the_model_keeps_its_steps() -> None:
    from llm_perf_opt.analytic.base import TreeMemo

    model = AnalyticModel(DeepseekOCRConfig.default(), with_overrides(get_profile("dsocr-base-v1"), batch_size=3))
    memo = TreeMemo()
    for tree in model.stages.values():
        for _, node in tree.walk():
            assert node.category_costs(memo) == node.category_costs()
            assert node.forward_memory_weight(memo) == node.forward_memory_weight()
            assert node.forward_memory_activation(memo) == node.forward_memory_activation()
            assert node.forward_memory_kvcache(memo) == node.forward_memory_kvcache()
        assert tree.category_costs(memo) is tree.category_costs(memo)  # summed once
    # the model's own decode steps are built once per KV length; a step with other routing is built anew
    kv = model.shape.decode_kv_len(0)
    assert model.decode_step(kv) is model.decode_step(kv)
    assert model.decode_step(model.decode_mean_kv_len) is model.stages[Stage.DECODE]
    assert model.decode_step(kv, routing={}) is not model.decode_step(kv)
    assert model.weight_bytes_total() == model.root().forward_memory_weight()


def test_decode_steps_share_what_does_not_depend_on_the_kv_length() -> None:
    from llm_perf_opt.analytic.layers.decoder import DecoderLayer

    model = AnalyticModel(DeepseekOCRConfig.default(), with_overrides(get_profile("dsocr-base-v1"), batch_size=2))
    first, last = model.decode_step(300), model.decode_step(1300)
    layers = [(a, b) for a, b in zip(first.children, last.children, strict=True) if isinstance(a, DecoderLayer)]
    assert len(layers) == model.config.language.num_hidden_layers
    for a, b in layers:
        for ca, cb in zip(a.children, b.children, strict=True):
            assert (ca is cb) == (ca.name != "self_attn"), ca.name
    # the same numbers as steps built on their own (an explicit routing builds a step anew, sharing nothing with
    # the other steps; its layers still share within it)
    for kv, step in ((300, first), (1300, last)):
        alone = model.decode_step(kv, routing={})
        assert step.category_costs() == alone.category_costs()
        assert step.forward_memory_activation() == alone.forward_memory_activation()
        assert step.forward_memory_kvcache() == alone.forward_memory_kvcache()
        assert step.param_count() == alone.param_count()
