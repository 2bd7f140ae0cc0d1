"""Access-pattern bandwidths: byte counts against the real tensors, the bench arithmetic (fake timer on CPU),
the ceilings and calibration files, and the timeline model's use of them."""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import pytest
import torch
from test_hardware_bench import FakeTimer

from llm_perf_opt.analytic.base import OpGroup
from llm_perf_opt.analytic.calibration import Calibration, CalibrationError
from llm_perf_opt.analytic.layers.vision import SamAttention, SamBlock
from llm_perf_opt.analytic.timeline_model import stage_blocks
from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.bench import (
    BenchMethod,
    CeilingsError,
    MeasuredCeilings,
    load_ceilings,
    run_bench,
    save_ceilings,
)
from llm_perf_opt.hardware.catalog import MIB
from llm_perf_opt.hardware.patterns import (
    ACTIVATION_PATTERNS,
    PATTERNS,
    UPLOAD_PATTERNS,
    _programs,
    head_windows,
    measure_patterns,
    pattern_bytes,
    pattern_groups,
    pattern_key,
    pattern_ratio,
    split_key,
)
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.vocab import DType, OperatorCategory, Stage


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def test_pattern_bytes_are_the_tensors_read_and_written() -> None:
    groups, side, d = 3, 6, 8
    progs = _programs(groups, side, d, "cpu", channels=16)
    out = {name: progs[name]() for name in PATTERNS}
    scores = groups * side ** 4
    # outer add: writes the (n, s, s, s, s) sum, reads the two (n, s, s, s) einsum outputs
    assert out["outer_add"].shape == (groups, side, side, side, side)
    assert not out["outer_add"].is_contiguous()  # the einsums' permuted layout: the reshape below must copy
    assert pattern_bytes("outer_add", groups, side) == _nbytes(out["outer_add"]) + 2 * 2 * groups * side ** 3
    assert pattern_bytes("permuted_copy", groups, side) == 2 * _nbytes(out["permuted_copy"]) == 4 * scores
    assert out["permuted_copy"].is_contiguous()
    assert pattern_bytes("bias_add", groups, side) == 3 * _nbytes(out["bias_add"])
    assert out["cast_up"].dtype == torch.float32 and out["cast_down"].dtype == torch.bfloat16
    assert pattern_bytes("cast_up", groups, side) == _nbytes(out["cast_up"]) + _nbytes(out["cast_down"])
    assert pattern_bytes("softmax_fp32", groups, side) == 2 * _nbytes(out["softmax_fp32"])
    assert pattern_bytes("cast_down", groups, side) == pattern_bytes("cast_up", groups, side)
    # residual stream: a channel-major (1, s, s, C) view; the add keeps its layout (as SAM's residual adds do)
    assert out["transposed_copy"].is_contiguous() and out["transposed_copy"].shape == (1, side, side, 16)
    assert not out["transposed_add"].is_contiguous()
    assert pattern_bytes("transposed_copy", 1, side, channels=16) == 2 * _nbytes(out["transposed_copy"])
    assert pattern_bytes("transposed_add", 1, side, channels=16) == 3 * _nbytes(out["transposed_add"])
    # the qkv split: about a page of windows, heads of d = 8 channels, copied by the reshape
    m = head_windows(side)
    assert m == 456 and out["head_split"].shape == (3, m * 2, side * side, d) and out["head_split"].is_contiguous()
    assert pattern_bytes("head_split", 1, side, channels=16) == 2 * _nbytes(out["head_split"])
    # one page's upload: the fp32 pixels of a 16 s x 16 s image, arriving as bf16
    assert out["h2d_pageable"].shape == (1, 3, 16 * side, 16 * side) and out["h2d_pageable"].dtype == torch.bfloat16
    assert pattern_bytes("h2d_pageable", 1, side) == 2 * _nbytes(out["h2d_pageable"])


def test_one_group_is_never_measured() -> None:
    # with a single group the permuted sum can be viewed as (1, s^2, s^2): no copy, a meaningless rate
    assert pattern_groups(128) == 2 and pattern_groups(14) == round(2 ** 27 / 14 ** 4)


def test_keys_and_the_nearest_measured_side() -> None:
    assert pattern_key("cast_up", 64) == "cast_up@64" and split_key("cast_up@64") == ("cast_up", 64)
    for bad in ("cast_up", "cast_up@", "nope@4", "cast_up@0", "cast_up@x"):
        with pytest.raises(UserError, match="malformed access-pattern key"):
            split_key(bad)
    with pytest.raises(UserError, match="unknown access pattern"):
        pattern_key("nope", 4)
    ratios = {"softmax_fp32@32": 0.95, "softmax_fp32@64": 0.6, "outer_add@14": 0.15}
    assert pattern_ratio(ratios, "softmax_fp32@64") == 0.6
    assert pattern_ratio(ratios, "softmax_fp32@40") == 0.95  # log-nearer to 32 than to 64
    assert pattern_ratio(ratios, "softmax_fp32@56") == 0.6
    assert pattern_ratio(ratios, "outer_add@80") == 0.15  # the only side measured
    assert pattern_ratio(ratios, "cast_up@64") == 1.0  # not measured: the copy bandwidth


def test_measure_patterns_turns_times_into_bandwidths() -> None:
    n = len(PATTERNS)
    timer = FakeTimer([[2.0, 1.0, 3.0]] * n)  # median 2 ms per repeat of 2 calls: 1 ms per call
    rates, times, groups = measure_patterns([4], device="cpu", timer=timer, warmup=0, repeats=3, inner=2,
                                            scores=2 ** 10)
    assert groups == {"4": 4}
    assert set(rates) == {f"{p}@4" for p in PATTERNS}
    for name in PATTERNS:
        g = 1 if name in (*ACTIVATION_PATTERNS, *UPLOAD_PATTERNS) else 4
        assert rates[f"{name}@4"] == pytest.approx(pattern_bytes(name, g, 4) / 1e-3)
        assert times[f"{name}@4"] == [1.0, 0.5, 1.5]
    with pytest.raises(UserError, match="at least one"):
        measure_patterns([], device="cpu", timer=timer, warmup=0, repeats=1, inner=1)


def test_run_bench_measures_patterns_and_the_file_keeps_them(tmp_path: Path) -> None:
    timer = FakeTimer([[1.0]] * (3 + len(PATTERNS)))
    c = run_bench(spec=None, dtypes=[DType.BF16], matmul_size=8, warmup=0, repeats=1, inner=1, copy_bytes=MIB,
                  timer=timer, device="cpu", pattern_sides=[3], pattern_scores=2 ** 8)
    assert c.method.pattern_scores == 2 ** 8 and c.method.pattern_groups == {"3": 3}
    assert c.pattern_ratios()["cast_up@3"] == pytest.approx(
        pattern_bytes("cast_up", 3, 3) / (2 * MIB))  # same time per call: the byte ratio
    for suffix in (".json", ".yaml"):
        loaded = load_ceilings(save_ceilings(c, tmp_path / f"c{suffix}"))
        assert loaded.pattern_bandwidth_bytes_per_s == c.pattern_bandwidth_bytes_per_s
        assert loaded.method.pattern_groups == {"3": 3}
    none = run_bench(spec=None, dtypes=[DType.BF16], matmul_size=8, warmup=0, repeats=1, inner=1, copy_bytes=MIB,
                     timer=FakeTimer([[1.0]] * 2), device="cpu", pattern_sides=[])
    assert none.pattern_bandwidth_bytes_per_s == {} and none.method.pattern_scores == 0


def test_ceilings_file_with_a_bad_pattern_is_one_line(tmp_path: Path) -> None:
    c = MeasuredCeilings(gpu_key="h200", device_name="NVIDIA H200", matmul_flops_per_s={"bf16": 6e14},
                         memory_bandwidth_bytes_per_s=4e12,
                         method=BenchMethod(matmul_size=8, warmup=0, repeats=1, inner=1, copy_buffer_bytes=MIB),
                         pattern_bandwidth_bytes_per_s={"nope@4": 1e12})
    with pytest.raises(CeilingsError, match="malformed access-pattern key 'nope@4'") as info:
        load_ceilings(save_ceilings(c, tmp_path / "c.json"))
    assert "\n" not in str(info.value)
    bad = save_ceilings(attrs.evolve(c, pattern_bandwidth_bytes_per_s={"cast_up@4": -1.0}), tmp_path / "d.json")
    with pytest.raises(CeilingsError, match="cast_up@4: expected a positive number"):
        load_ceilings(bad)


def test_calibration_keeps_and_checks_pattern_ratios() -> None:
    cal = Calibration(gpu_key="h200", time_model="timeline", stage_host_s_per_kernel={"decode": 1e-5},
                      pattern_bandwidth_ratios={"outer_add@64": 0.14})
    again = Calibration.from_dict(cal.to_dict())
    assert again.pattern_bandwidth_ratios == {"outer_add@64": 0.14}
    assert again.pattern_bandwidth_ratio("outer_add@80") == 0.14 and again.pattern_bandwidth_ratio("cast_up@8") == 1.0
    assert "1 access-pattern bandwidths" in again.describe()
    with pytest.raises(CalibrationError, match="malformed access-pattern key"):
        Calibration(gpu_key="h200", pattern_bandwidth_ratios={"outer_add": 0.5})
    with pytest.raises(CalibrationError, match="must be > 0"):
        Calibration(gpu_key="h200", pattern_bandwidth_ratios={"outer_add@4": 0.0})


class _Peaks:
    tensor_core_flops_per_s = 1e15
    cuda_core_flops_per_s = 1e14
    memory_bytes_per_s = 1e12


def test_pattern_bytes_run_at_the_measured_fraction_of_the_bandwidth() -> None:
    node = OpGroup("n", Stage.VISION_SAM, weight_dtype_bytes=2)
    node.op(OperatorCategory.ATTENTION, io_bytes=1e9, launches=1)  # 1 ms at 1 TB/s
    node.op(OperatorCategory.ATTENTION, io_bytes=2e9, launches=1, pattern="outer_add@64")  # 2 ms at the copy rate
    plain = Calibration(gpu_key="h200")
    slow = Calibration(gpu_key="h200", pattern_bandwidth_ratios={"outer_add@64": 0.25})
    (b_plain,) = stage_blocks(node, _Peaks(), plain)
    (b_slow,) = stage_blocks(node, _Peaks(), slow)
    assert b_plain.device_s == pytest.approx(3e-3)
    assert b_slow.device_s == pytest.approx(1e-3 + 2e-3 / 0.25)
    # the roofline totals do not see the pattern: bytes are bytes
    assert node.forward_cal_io() == 3e9


def test_sam_tags_its_score_and_residual_traffic_with_the_grid_side() -> None:
    cfg = DeepseekOCRConfig.named("default").sam
    glob = SamAttention("attn", Stage.VISION_SAM, cfg, views=1, grid=64, window=0, fused=False, act_bytes=2,
                        weight_bytes=2)
    scores = 12 * 64 ** 4
    tagged: dict[str, float] = {}
    for _, layer in glob.walk():
        for by_key in layer.pattern_io.values():
            for key, nbytes in by_key.items():
                tagged[key] = tagged.get(key, 0.0) + nbytes
    assert tagged == {"outer_add@64": 2 * 2 * 12 * 64 ** 3 + 2 * scores, "permuted_copy@64": 4 * scores,
                      "bias_add@64": 6 * scores, "cast_up@64": 6 * scores, "softmax_fp32@64": 8 * scores,
                      "cast_down@64": 6 * scores,
                      "head_split@64": 3 * 2 * 2 * 64 * 64 * 768}  # two query copies, the output merge
    windowed = SamBlock("b", Stage.VISION_SAM, cfg, views=1, grid=64, window=14, fused=False, act_bytes=2,
                        weight_bytes=2)
    keys = {k for _, layer in windowed.walk() for by_key in layer.pattern_io.values() for k in by_key}
    # the window's scores at side 14, the residual stream (LayerNorm copies, residual adds) at the grid's 64
    assert {split_key(k)[1] for k in keys if not k.startswith("transposed")} == {14}
    assert {"transposed_copy@64", "transposed_add@64"} <= keys
    stream = 64 * 64 * 768
    copies = sum(layer.pattern_io.get(OperatorCategory.MEMORY, {}).get("transposed_copy@64", 0.0)
                 for _, layer in windowed.walk())
    assert copies == 2 * (2 * 2 * stream)  # two LayerNorms, each reads and writes the stream once
    assert math.isclose(sum(v for _, layer in windowed.walk()
                            for v in layer.pattern_io.get(OperatorCategory.ELEMENTWISE, {}).values()),
                        2 * 3 * 2 * stream)  # two residual adds


def test_the_page_upload_moves_fp32_pixels_at_the_pageable_rate() -> None:
    from llm_perf_opt.analytic.layers.vision import SamPatchEmbed

    cfg = DeepseekOCRConfig.named("default").sam
    pe = SamPatchEmbed("patch_embed", Stage.VISION_SAM, cfg, views=2, side_px=1024, act_bytes=2, weight_bytes=2)
    upload = next(c for c in pe.children if c.name == "pixel_upload")
    assert upload.pattern_io == {OperatorCategory.MEMORY: {"h2d_pageable@64": 2 * 3 * 1024 * 1024 * 4}}
    assert pattern_bytes("h2d_pageable", 2, 64) == 2 * 3 * 1024 * 1024 * 4


def test_the_patch_conv_bytes_are_the_analytic_conv_bytes() -> None:
    from llm_perf_opt.analytic.layers.vision import SamPatchEmbed

    cfg = DeepseekOCRConfig.named("default").sam
    pe = SamPatchEmbed("patch_embed", Stage.VISION_SAM, cfg, views=1, side_px=1024, act_bytes=2, weight_bytes=2)
    conv = next(c for c in pe.children if c.name == "projection")
    assert conv.pattern_io == {OperatorCategory.CONV: {"patch_conv@64": conv.forward_cal_io()}}
    assert pattern_bytes("patch_conv", 1, 64) == conv.forward_cal_io()
    out = _programs(1, 2, 8, "cpu", channels=16)["patch_conv"]()
    assert out.shape == (1, 16, 2, 2)


def test_kernel_floor_in_the_ceilings_file(tmp_path: Path) -> None:
    c = MeasuredCeilings(gpu_key="h200", device_name="NVIDIA H200", matmul_flops_per_s={"bf16": 6e14},
                         memory_bandwidth_bytes_per_s=4e12,
                         method=BenchMethod(matmul_size=8, warmup=0, repeats=1, inner=1, copy_buffer_bytes=MIB),
                         kernel_floor_s=1.8e-6)
    assert load_ceilings(save_ceilings(c, tmp_path / "c.json")).kernel_floor_s == 1.8e-6
    with pytest.raises(CeilingsError, match="kernel_floor_s: expected a positive number"):
        load_ceilings(save_ceilings(attrs.evolve(c, kernel_floor_s=-1.0), tmp_path / "d.json"))


def test_out_of_memory_in_the_patterns_keeps_the_ceilings_before_them() -> None:
    class OomAfter(FakeTimer):
        """The fake timer, out of device memory from its third call on (the first access pattern)."""

        def __call__(self, fn, *, warmup: int, repeats: int) -> list[float]:
            if len(self.calls) >= 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return super().__call__(fn, warmup=warmup, repeats=repeats)

    kept: list[MeasuredCeilings] = []
    with pytest.raises(UserError, match=r"out of device memory while measuring the access patterns at sides 3,5 "
                                        r"\(choose smaller --pattern-sides, or none\)") as info:
        run_bench(spec=None, dtypes=[DType.BF16], matmul_size=8, warmup=0, repeats=1, inner=1, copy_bytes=MIB,
                  timer=OomAfter([[1.0], [1.0]]), device="cpu", pattern_sides=[3, 5], pattern_scores=2 ** 8,
                  checkpoint=kept.append)
    assert "\n" not in str(info.value)
    (partial,) = kept
    assert partial.matmul_flops_per_s["bf16"] > 0 and partial.pattern_bandwidth_bytes_per_s == {}
