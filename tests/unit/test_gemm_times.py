"""Measured GEMM times: keys, lookup, the analytic layers' GEMM tags, the timeline model, files, bench (CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import pytest

from llm_perf_opt.analytic.base import IO, LAUNCH, TC
from llm_perf_opt.analytic.calibration import (
    Calibration,
    CalibrationError,
    load_calibration,
    save_calibration,
)
from llm_perf_opt.analytic.gemm_shapes import tree_gemm_keys
from llm_perf_opt.analytic.layers.common import AttentionCore, Linear
from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.analytic.timeline_model import PassBlocks, run_timeline, simulate_pass, stage_blocks
from llm_perf_opt.analytic.workloads import get_profile, with_overrides
from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.bench import (
    CeilingsError,
    MeasuredCeilings,
    load_ceilings,
    run_bench,
    save_ceilings,
)
from llm_perf_opt.hardware.catalog import MIB
from llm_perf_opt.hardware.gemms import (
    NEAREST_MAX_LOG_DISTANCE,
    gemm_flops,
    gemm_key,
    gemm_time,
    measure_gemms,
    split_gemm_key,
)
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.vocab import DType, OperatorCategory, Stage

ROOT = Path(__file__).resolve().parents[2]


def test_keys_parse_and_count_flops() -> None:
    key = gemm_key("bmm_nt", 16, 257, 257, 64)
    assert key == "bmm_nt@16x257x257x64"
    assert split_gemm_key(key) == ("bmm_nt", (16, 257, 257, 64))
    assert gemm_flops(key) == 2.0 * 16 * 257 * 257 * 64
    for bad in ("bmm_tt@1x2x3x4", "linear@1x2x3", "linear@1x0x3x4", "linear@1x2.5x3x4", "outer_add@64"):
        with pytest.raises(UserError, match="not a GEMM key"):
            split_gemm_key(bad)
    with pytest.raises(UserError, match="unknown GEMM kind"):
        gemm_key("conv", 1, 2, 3, 4)
    with pytest.raises(UserError, match="integer dimensions >= 1"):
        gemm_key("linear", 1, 2.5, 3, 4)  # type: ignore[arg-type]
    # a routed-experts call: E x k x T x H x I, the FLOPs of both products of every (token, expert) pair
    moe = gemm_key("experts_grouped_mm", 64, 6, 282, 1280, 896)
    assert split_gemm_key(moe) == ("experts_grouped_mm", (64, 6, 282, 1280, 896))
    assert gemm_flops(moe) == 6.0 * 282 * 6 * 1280 * 896
    with pytest.raises(UserError, match="expected 5 integer dimensions"):
        gemm_key("experts_grouped_mm", 64, 6, 282, 1280)
    rope = gemm_key("rope", 4, 282, 10, 10, 128)
    assert split_gemm_key(rope) == ("rope", (4, 282, 10, 10, 128)) and gemm_flops(rope) == 0.0
    router = gemm_key("moe_router", 1128, 1280, 64, 6)  # T x H x E x k: the fp32 gate GEMM's FLOPs
    assert split_gemm_key(router) == ("moe_router", (1128, 1280, 64, 6))
    assert gemm_flops(router) == 2.0 * 1128 * 1280 * 64
    for bad in ("experts_grouped_mm@64x6x282x1280", "experts_grouped_mm@1x2x3x4x5x6", "linear@1x2x3x4x5",
                "rope@4x282x10x128", "moe_router@1128x1280x64"):
        with pytest.raises(UserError, match="not a GEMM key"):
            split_gemm_key(bad)


def test_lookup_exact_then_nearest_rate_of_the_same_kind_and_alignment() -> None:
    times = {"linear@1x256x1024x1024": 4e-6, "bmm_nt@16x257x257x64": 12e-6, "bmm_nt@16x256x256x64": 5e-6}
    assert gemm_time(times, "linear@1x256x1024x1024") == 4e-6
    # 300 rows instead of 256 (a linear's row count does not change the alignment): same rate, more FLOPs
    assert gemm_time(times, "linear@1x300x1024x1024") == pytest.approx(4e-6 * 300 / 256)
    # an odd 255-token bmm takes the odd 257-token shape's rate, not the aligned 256-token one's
    assert gemm_time(times, "bmm_nt@16x255x255x64") == pytest.approx(12e-6 * 255 * 255 / (257 * 257))
    assert gemm_time(times, "bmm_nn@16x257x64x257") is None  # kind never measured
    assert gemm_time(times, "linear@1x256x1004x1024") is None  # N not a multiple of 8: another alignment
    far = math.exp(NEAREST_MAX_LOG_DISTANCE) * 256 * 1.01
    assert gemm_time(times, f"linear@1x{math.ceil(far)}x1024x1024") is None  # too far to lend its rate


def test_lookups_keep_their_answers_per_mapping_and_follow_a_changed_one() -> None:
    times = {"linear@1x256x1024x1024": 4e-6, "bmm_nt@16x257x257x64": 12e-6, "rope@4x200x10x10x128": 40e-6,
             "rope@4x400x10x10x128": 60e-6, "not a key": 1.0}
    asks = ["linear@1x300x1024x1024", "bmm_nt@16x255x255x64", "rope@4x300x10x10x128", "bmm_nn@16x257x64x257"]
    fresh = [gemm_time(dict(times), k) for k in asks]  # a new mapping each time: parsed anew
    assert fresh == [pytest.approx(4e-6 * 300 / 256), pytest.approx(12e-6 * 255 * 255 / (257 * 257)),
                     pytest.approx(50e-6), None]
    assert [gemm_time(times, k) for k in asks] == fresh == [gemm_time(times, k) for k in asks]  # asked twice
    twin = dict(times)  # equal contents, another mapping: the same answers
    assert [gemm_time(twin, k) for k in asks] == fresh
    times["linear@1x256x1024x1024"] = 8e-6  # changed in place, same size: answers follow the new value
    assert gemm_time(times, asks[0]) == pytest.approx(8e-6 * 300 / 256)
    times["bmm_nn@16x259x64x259"] = 7e-6  # a new kind timed: the kind never measured now has a rate
    assert gemm_time(times, asks[3]) == pytest.approx(7e-6 * 257 * 257 / (259 * 259))
    assert gemm_time(twin, asks[0]) == fresh[0]  # the twin is not changed by the other's edits


def test_experts_calls_are_interpolated_in_the_token_count() -> None:
    def key(t: int, e: int = 64) -> str:
        return gemm_key("experts_grouped_mm", e, 6, t, 1280, 896)

    times = {key(1): 50e-6, key(4): 56e-6, key(282): 140e-6, key(1128): 460e-6, key(100, e=8): 1e-6}
    assert gemm_time(times, key(282)) == 140e-6
    assert gemm_time(times, key(2)) == pytest.approx(50e-6 + 6e-6 / 3)
    assert gemm_time(times, key(564)) == pytest.approx(140e-6 + 320e-6 * (564 - 282) / (1128 - 282))
    # beyond the timed counts: from the nearest within a factor 2 along the line through the next timed count
    # on its side (a call has a fixed cost); further off, nothing
    assert gemm_time(times, key(2000)) == pytest.approx(460e-6 + 320e-6 / 846 * (2000 - 1128))
    assert gemm_time(times, key(8)) == pytest.approx(56e-6 + 2e-6 * 4)  # decode at batch 8 from 1 and 4
    assert gemm_time(times, key(2400)) is None
    # timed counts more than COUNT_INTERPOLATE_MAX_RATIO apart do not bracket: 100 is within 2x of none
    assert gemm_time(times, key(100)) is None
    assert gemm_time(times, key(160)) == pytest.approx(140e-6 - 320e-6 / 846 * (282 - 160))
    assert gemm_time({key(282): 140e-6}, key(160)) == pytest.approx(140e-6 * 160 / 282)  # one count: in proportion
    assert gemm_time({key(282): 1.0}, key(282, e=32)) is None  # another expert count never lends its time
    # the rotary embedding: by its B x T tokens, at the same heads and head dim only
    rope = {"rope@4x200x10x10x128": 40e-6, "rope@4x400x10x10x128": 60e-6, "rope@1x300x10x10x64": 1.0}
    assert gemm_time(rope, "rope@4x300x10x10x128") == pytest.approx(50e-6)
    assert gemm_time(rope, "rope@2x300x10x10x128") == pytest.approx(40e-6 - 20e-6 / 800 * 200)
    assert gemm_time(rope, "rope@4x300x10x10x64") is None  # 1200 tokens: 4x the one count of that head dim
    # one token count timed at two splits: the split nearest the wanted one lends its time, whatever the order
    split = {"rope@1x1128x10x10x128": 90e-6, "rope@4x282x10x10x128": 70e-6, "rope@4x564x10x10x128": 120e-6}
    for order in (split, dict(reversed(list(split.items())))):
        assert gemm_time(order, "rope@4x423x10x10x128") == pytest.approx(95e-6)  # 4x282 and 4x564, halfway
        assert gemm_time(order, "rope@1x1692x10x10x128") == pytest.approx(90e-6 + (120e-6 - 90e-6) / 2)


def test_linear_and_eager_attention_tag_their_gemms_without_changing_the_totals() -> None:
    lin = Linear("q", Stage.VISION_CLIP, tokens=257, in_features=1024, out_features=4096, bias=True, act_bytes=2,
                 weight_bytes=2)
    (tag, vec), = lin.gemm_ops[OperatorCategory.GEMM].items()
    assert tag == "linear_bias@1x257x4096x1024" and vec == lin.ops[OperatorCategory.GEMM]
    half = Linear("q", Stage.DECODE, tokens=1, in_features=8, out_features=8, bias=False, act_bytes=2,
                  weight_bytes=2, compute_tokens=2.5)
    assert not half.gemm_ops  # a fractional token count is no GEMM shape

    common: dict[str, Any] = dict(groups=16, head_dim=64, fused=False, causal_skip=False, act_bytes=2,
                                  weight_bytes=2, score_bytes=2, prob_bytes=4, has_bias=False, eager_launches=6,
                                  eager_bytes_per_score=6 * 2 + 16)
    core = AttentionCore("core", Stage.VISION_CLIP, q_len=257, k_len=257, **common)
    gemms = core.gemm_ops[OperatorCategory.ATTENTION]
    assert set(gemms) == {"bmm_nt@16x257x257x64", "bmm_nn@16x257x64x257"}
    total = core.ops[OperatorCategory.ATTENTION]
    scores = 16 * 257 * 257
    assert total[TC] == 4 * scores * 64 and total[LAUNCH] == 6
    assert total[IO] == 2 * 2 * 16 * 64 * (2 * 257) + scores * (6 * 2 + 16)  # the eager chain's bytes, as before
    assert sum(v[TC] for v in gemms.values()) == total[TC] and all(v[LAUNCH] == 1 for v in gemms.values())
    # a decode group at a mean (fractional) KV length: keys at the nearest whole length (half up), the
    # FLOPs and bytes those of the exact length, as the one-op form gives them
    mean_kv = AttentionCore("core", Stage.DECODE, q_len=1, k_len=300.5, **common)
    assert set(mean_kv.gemm_ops[OperatorCategory.ATTENTION]) == {"bmm_nt@16x1x301x64", "bmm_nn@16x1x64x301"}
    assert all(c == pytest.approx(300.5 / 301) for c in mean_kv.gemm_calls[OperatorCategory.ATTENTION].values())
    below = AttentionCore("core", Stage.DECODE, q_len=1, k_len=300.25, **common)
    assert set(below.gemm_ops[OperatorCategory.ATTENTION]) == {"bmm_nt@16x1x300x64", "bmm_nn@16x1x64x300"}
    with pytest.raises(ValueError, match="gemm_calls"):
        mean_kv.op(OperatorCategory.ATTENTION, tc_flops=1.0, launches=1, gemm_calls=0.5)  # no key
    with pytest.raises(ValueError, match="gemm_calls"):
        mean_kv.op(OperatorCategory.ATTENTION, tc_flops=0.0, launches=1, gemm="bmm_nt@16x1x301x64", gemm_calls=0)
    one_op = AttentionCore("core", Stage.DECODE, q_len=1, k_len=300.5, **{**common, "eager_launches": 1})
    assert not one_op.gemm_ops
    split, whole_op = mean_kv.ops[OperatorCategory.ATTENTION], one_op.ops[OperatorCategory.ATTENTION]
    assert split[TC] == pytest.approx(4 * 16 * 300.5 * 64) and split[TC] == pytest.approx(whole_op[TC])
    assert split[IO] == pytest.approx(whole_op[IO]) and split[1] == pytest.approx(whole_op[1])


class _Peaks:
    tensor_core_flops_per_s = 1e15
    cuda_core_flops_per_s = 1e14
    memory_bytes_per_s = 4e12


def test_the_timeline_model_charges_a_measured_gemm_its_time() -> None:
    lin = Linear("fc", Stage.VISION_CLIP, tokens=257, in_features=1024, out_features=1024, bias=True,
                 act_bytes=2, weight_bytes=2)
    cal = Calibration(gpu_key="h200", kernel_floor_s=2e-6)
    (roof,) = stage_blocks(lin, _Peaks(), cal, kernel_floor_s=2e-6)
    vec = lin.ops[OperatorCategory.GEMM]
    assert roof.device_s == pytest.approx(max(vec[TC] / 1e15 + vec[1] / 1e14, vec[IO] / 4e12) + 2e-6)
    timed = attrs.evolve(cal, gemm_times_s={"linear_bias@1x257x1024x1024": 5.2e-6})
    (meas,) = stage_blocks(lin, _Peaks(), timed, kernel_floor_s=2e-6)
    assert meas.device_s == pytest.approx(5.2e-6)  # the measured time includes the floor


def test_the_routed_experts_are_one_timed_call_of_the_grouped_mm_forward() -> None:
    from llm_perf_opt.analytic.layers.decoder import RoutedExperts

    common: dict[str, Any] = dict(hidden=64, intermediate=32, experts=8, top_k=2, act_bytes=2, weight_bytes=2)
    moe = RoutedExperts("experts", Stage.PREFILL, tokens=100, **common)
    key = "experts_grouped_mm@8x2x100x64x32"
    vec = moe.ops[OperatorCategory.MOE_EXPERTS]
    assert moe.gemm_ops == {OperatorCategory.MOE_EXPERTS: {key: vec}}  # everything, CUDA's launches included
    assert moe.gemm_calls == {OperatorCategory.MOE_EXPERTS: {key: 1.0}} and vec[LAUNCH] > 20
    for impl in ("eager", "batched_mm"):
        assert not RoutedExperts("experts", Stage.PREFILL, tokens=100, implementation=impl, **common).gemm_ops
    # measured routing counts: the bench's randomly routed call does not stand for them
    assert not RoutedExperts("experts", Stage.PREFILL, tokens=100, tokens_per_expert=[25] * 8, **common).gemm_ops

    cal = Calibration(gpu_key="h200", kernel_floor_s=2e-6)
    (roof,) = stage_blocks(moe, _Peaks(), cal, kernel_floor_s=2e-6)
    (meas,) = stage_blocks(moe, _Peaks(), attrs.evolve(cal, gemm_times_s={key: 80e-6}), kernel_floor_s=2e-6)
    assert meas.device_s == pytest.approx(80e-6) and roof.device_s != pytest.approx(80e-6)
    assert meas.kernels == roof.kernels == vec[LAUNCH]  # the host still issues every kernel
    # the bench's queued time holds the stream gap after each of the call's kernels; the blocks hold kernel
    # time, and a device-bound timeline with that gap gives the measured call time back
    timed = attrs.evolve(cal, gemm_times_s={key: 80e-6}, kernel_gap_s=1e-6, time_model="timeline",
                         stage_host_s_per_kernel={s.value: 0.0 for s in Stage})
    (net,) = stage_blocks(moe, _Peaks(), timed, kernel_floor_s=2e-6, call_gap_s=1e-6)
    assert net.device_s == pytest.approx(80e-6 - vec[LAUNCH] * 1e-6)
    queue = run_timeline(PassBlocks({Stage.PREFILL.value: [net]}, 0), {s.value: 0.0 for s in Stage}, 0.0, 1e-6)
    assert queue.stage_s[Stage.PREFILL.value] == pytest.approx(80e-6)
    (floored,) = stage_blocks(moe, _Peaks(), timed, kernel_floor_s=2e-6, call_gap_s=10e-6)
    assert floored.device_s == 0.0  # never below zero
    # through simulate_pass: on a stream the call takes its measured time; replayed from a CUDA graph, its
    # kernels' stream gaps give way to the graph's
    graphs = attrs.evolve(timed, kernel_gap_graph_s=0.3e-6, stage_host_s_per_kernel={s.value: 1e-9 for s in Stage})
    stream = simulate_pass({Stage.PREFILL: moe}, 0, _Peaks(), graphs).stage_s[Stage.PREFILL.value]
    assert stream == pytest.approx(80e-6, rel=1e-3)
    replayed = simulate_pass({Stage.PREFILL: moe}, 0, _Peaks(), graphs.with_graph_stages(["prefill"]))
    assert replayed.stage_s[Stage.PREFILL.value] == pytest.approx(80e-6 - vec[LAUNCH] * (1e-6 - 0.3e-6))
    with pytest.raises(ValueError, match="already has GEMM or pattern tags"):
        moe.timed_call(OperatorCategory.MOE_EXPERTS, key)
    with pytest.raises(ValueError, match="nothing in"):
        moe.timed_call(OperatorCategory.GEMM, key)
    fresh = RoutedExperts("experts", Stage.PREFILL, tokens=100, implementation="eager", **common)
    with pytest.raises(ValueError, match="FLOPs"):
        fresh.timed_call(OperatorCategory.MOE_EXPERTS, "experts_grouped_mm@8x2x99x64x32")


def test_the_decoder_rotary_embedding_is_one_timed_call() -> None:
    from llm_perf_opt.analytic.layers.llama import ApplyRotary, LlamaAttention

    rot = ApplyRotary("rotary", Stage.PREFILL, tokens=4 * 282, heads_q=10, heads_kv=10, head_dim=128, act_bytes=2,
                      weight_bytes=2, batch=4)
    vec = rot.ops[OperatorCategory.ELEMENTWISE]
    assert rot.gemm_ops == {OperatorCategory.ELEMENTWISE: {"rope@4x282x10x10x128": vec}} and vec[LAUNCH] == 10
    assert not ApplyRotary("rotary", Stage.PREFILL, tokens=282, heads_q=10, heads_kv=10, head_dim=128,
                           act_bytes=2, weight_bytes=2).gemm_ops  # no batch given: no shape
    attn = LlamaAttention("self_attn", Stage.DECODE, batch=2, q_len=1, kv_len=300.5, hidden=1280, heads_q=10,
                          heads_kv=10, head_dim=128, fused=False, causal_skip=False, act_bytes=2, weight_bytes=2)
    (rotary,) = [c for c in attn.children if isinstance(c, ApplyRotary)]
    assert set(rotary.gemm_ops[OperatorCategory.ELEMENTWISE]) == {"rope@2x1x10x10x128"}
    cal = Calibration(gpu_key="h200", kernel_floor_s=2e-6, gemm_times_s={"rope@4x282x10x10x128": 70e-6})
    (block,) = stage_blocks(rot, _Peaks(), cal, kernel_floor_s=2e-6)
    assert block.device_s == pytest.approx(70e-6) and block.kernels == 10


def test_the_moe_router_is_one_timed_call() -> None:
    from llm_perf_opt.analytic.layers.decoder import MoERouter

    common: dict[str, Any] = dict(hidden=1280, experts=64, top_k=6, act_bytes=2, weight_bytes=2)
    router = MoERouter("gate", Stage.PREFILL, tokens=1128, **common)
    vec = router.ops[OperatorCategory.MOE_ROUTER]
    # the fp32 gate GEMM and the casts, softmax and top-k around it: one call of the timed key
    assert router.gemm_ops == {OperatorCategory.MOE_ROUTER: {"moe_router@1128x1280x64x6": vec}}
    assert vec[LAUNCH] == 6 and vec[TC] == 2.0 * 1128 * 1280 * 64
    assert not MoERouter("gate", Stage.DECODE, tokens=2.5, **common).gemm_ops  # no whole token count
    cal = Calibration(gpu_key="h200", kernel_floor_s=2e-6, gemm_times_s={"moe_router@1128x1280x64x6": 35e-6})
    (block,) = stage_blocks(router, _Peaks(), cal, kernel_floor_s=2e-6)
    assert block.device_s == pytest.approx(35e-6) and block.kernels == 6
    # untimed: the roofline, which charges the fp32 GEMM at the bf16 tensor-core rate
    (roof,) = stage_blocks(router, _Peaks(), Calibration(gpu_key="h200", kernel_floor_s=2e-6), kernel_floor_s=2e-6)
    assert roof.device_s != pytest.approx(35e-6)
    # the tree tags every MoE layer's router: the bench's default workloads time them
    model = AnalyticModel(DeepseekOCRConfig.default(), with_overrides(get_profile("dsocr-base-v1"), batch_size=4))
    assert "moe_router@1128x1280x64x6" in tree_gemm_keys(model.stages)


def test_calibration_and_ceilings_files_keep_the_gemm_times(tmp_path: Path) -> None:
    cal = Calibration(gpu_key="h200", gemm_times_s={"bmm_nt@16x257x257x64": 12e-6})
    back = load_calibration(save_calibration(cal, tmp_path / "cal.json"))
    assert back.gemm_times_s == cal.gemm_times_s and back.gemm_time_s("bmm_nt@16x257x257x64") == 12e-6
    assert "1 GEMM shapes timed" in attrs.evolve(back, time_model="timeline",
                                                 stage_host_s_per_kernel={"decode": 2e-5}).describe()
    with pytest.raises(CalibrationError, match="gemm_times_s"):
        Calibration(gpu_key="h200", gemm_times_s={"bmm@1x2x3x4": 1e-6})
    with pytest.raises(CalibrationError, match=r"gemm_times_s\[linear@1x2x3x4\] must be > 0"):
        Calibration(gpu_key="h200", gemm_times_s={"linear@1x2x3x4": 0.0})

    committed = load_ceilings(ROOT / "reports" / "hardware" / "h200" / "hw-ceilings.json")
    assert "base:1" in committed.gemm_workloads
    assert committed.gemm_times_s()["bmm_nt@16x257x257x64"] > 0
    # the large-batch runs' shapes were added to it (results-h200 section 21), the earlier ones kept
    assert {"base:32", "small:64", "gundam:8"} <= set(committed.gemm_workloads)
    assert {"experts_grouped_mm@64x6x9024x1280x896", "experts_grouped_mm@64x6x1128x1280x896"} <= set(
        committed.gemm_times_ms)
    # ...but not the experts call at the decode steps' 8-64 tokens: its bench time disagrees with a graph replay
    assert not {f"experts_grouped_mm@64x6x{t}x1280x896" for t in (8, 16, 32, 64)} & set(committed.gemm_times_ms)
    path = save_ceilings(committed, tmp_path / "c.json")
    assert load_ceilings(path).gemm_times_ms == committed.gemm_times_ms
    data = json.loads(path.read_text())
    data["gemm_times_ms"] = {"linear@1x2x3x4": []}
    path.write_text(json.dumps(data))
    with pytest.raises(CeilingsError, match="expected a list of ms per call"):
        load_ceilings(path)
    data["gemm_times_ms"] = {"gemm@1": [1.0]}
    path.write_text(json.dumps(data))
    with pytest.raises(CeilingsError, match="not a GEMM key"):
        load_ceilings(path)


def test_bench_times_the_gemms_it_is_given_on_cpu() -> None:
    from test_hardware_bench import FakeTimer

    calls: list[int] = []

    def queued(fn: Any, n: int) -> float:
        fn()  # the GEMM program runs (on CPU here)
        calls.append(n)
        return 3e-6

    keys = ["linear_bias@1x5x8x16", "bmm_nt@2x3x4x8", "bmm_nn@2x3x8x4", "linear@1x5x8x16",
            "experts_grouped_mm@8x2x5x16x24", "rope@2x3x4x2x8",
            "moe_router@5x16x8x2"]  # transformers' modules run, on CPU
    times = measure_gemms(keys, device="cpu", repeats=2, timer=queued)
    assert set(times) == set(keys) and all(v == [3e-6, 3e-6] for v in times.values())
    assert len(calls) == 3 * len(keys)  # one warm-up repeat each
    c = run_bench(spec=None, dtypes=[DType.BF16], matmul_size=8, warmup=0, repeats=1, inner=1, copy_bytes=MIB,
                  timer=FakeTimer([[1.0]] * 2), device="cpu", pattern_sides=[], gemm_keys=keys[:2],
                  gemm_workloads=["tiny:1"], gemm_timer=queued)
    assert isinstance(c, MeasuredCeilings) and c.gemm_workloads == ["tiny:1"]
    assert c.gemm_times_s() == pytest.approx({keys[0]: 3e-6, keys[1]: 3e-6})
    with pytest.raises(UserError, match="repeats and calls must be >= 1"):
        measure_gemms(keys, device="cpu", repeats=0, timer=queued)


def test_the_workloads_gemm_shapes() -> None:
    from llm_perf_opt.analytic.gemm_shapes import default_gemm_workloads, parse_workload, workload_gemm_keys

    keys = workload_gemm_keys(["base:1"])
    # CLIP's 257-token attention and projections, SAM's 14 x 14 windows (25 windows x 12 heads) and global grid
    for key in ("bmm_nt@16x257x257x64", "bmm_nn@16x257x64x257", "linear_bias@1x257x1024x1024",
                "bmm_nt@300x196x196x64", "bmm_nt@12x4096x4096x64"):
        assert key in keys
    assert set(workload_gemm_keys(["base:4"])) != set(keys)
    assert "gundam:4" in default_gemm_workloads() and parse_workload("Base:2") == ("base", 2)
    for bad, why in (("base", "MODE:BATCH"), ("base:0", "MODE:BATCH"), ("huge:1", "unknown mode"),
                     ("base:1:64", "MODE:BATCH")):  # a census workload takes no new tokens
        with pytest.raises(UserError, match=why):
            parse_workload(bad)


def test_a_gemm_workload_takes_its_new_tokens_and_times_every_decode_group() -> None:
    from llm_perf_opt.analytic.gemm_shapes import (
        GEMM_WORKLOAD_NEW_TOKENS,
        parse_gemm_workload,
        tree_gemm_keys,
        workload_gemm_keys,
    )
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.workloads import get_profile, with_overrides
    from llm_perf_opt.data.common import AttentionKind
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig

    assert parse_gemm_workload("Small:320:1024") == ("small", 320, 1024)
    assert parse_gemm_workload("base:2") == ("base", 2, GEMM_WORKLOAD_NEW_TOKENS)
    for bad in ("small:320:0", "small:320:1024:1", "small::64"):
        with pytest.raises(UserError, match="MODE:BATCH or MODE:BATCH:TOKENS"):
            parse_gemm_workload(bad)
    long = set(workload_gemm_keys(["small:320:1024"]))
    assert long != set(workload_gemm_keys(["small:320"]))  # the decode's attention follows the KV length
    wl = with_overrides(get_profile("dsocr-small-v1"), batch_size=320, attention=AttentionKind.EAGER,
                        max_new_tokens=1024)
    model = AnalyticModel(DeepseekOCRConfig.default(), wl)
    mean_step = tree_gemm_keys(model.stages)
    groups = tree_gemm_keys(step for step, _ in model.decode_segment_steps())
    assert long == mean_step | groups and groups - mean_step  # the groups' steps add shapes of their own
    assert "bmm_nt@3200x1x632x128" in long  # the mean step's QK^T: 320 rows x 10 heads, KV 632


def test_gemm_timing_stopped_keeps_the_shapes_timed_before(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import types

    import torch

    from llm_perf_opt.hardware.bench import GemmTimingStopped, add_gemm_times
    from llm_perf_opt.runners import hw_cli

    base = load_ceilings(ROOT / "reports" / "hardware" / "h200" / "hw-ceilings.json")
    base = attrs.evolve(base, gemm_times_ms={}, gemm_workloads=[])
    keys = ["linear@1x5x8x16", "linear@1x6x8x16", "linear@1x7x8x16"]
    seen: list[int] = []

    def stop_on_the_third(fn: Any, n: int) -> float:
        seen.append(n)
        if len(seen) > 2 * 2:  # two shapes timed (warm-up + 1 repeat each)
            raise KeyboardInterrupt
        return 2e-6

    with pytest.raises(GemmTimingStopped, match=r"interrupted while timing GEMM linear@1x7x8x16 \(2 of 3"
                       ) as info:
        add_gemm_times(base, keys, ["tiny:1"], device="cpu", repeats=1, timer=stop_on_the_third)
    assert set(info.value.partial.gemm_times_ms) == set(keys[:2])

    # hw gemms writes them and says where, in one line
    src = save_ceilings(base, tmp_path / "in.json")

    def stopped(*_a: object, **_k: object) -> Any:
        raise GemmTimingStopped("interrupted while timing GEMM x (1 of 3 shapes timed)",
                                attrs.evolve(base, gemm_times_ms={keys[0]: [0.002]}))

    gpu = types.SimpleNamespace(catalog_key="h200", catalog_error=None, driver_version="1", name="NVIDIA H200")
    monkeypatch.setattr(hw_cli, "detect_gpu", lambda *_a, **_k: gpu)
    monkeypatch.setattr(hw_cli, "add_gemm_times", stopped)
    monkeypatch.setattr(torch.cuda, "set_device", lambda _i: None)
    out = tmp_path / "out.json"
    rc = hw_cli.main(["gemms", "--ceilings", str(src), "--out", str(out), "--gemm-workloads", "tiny:1"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and f"timed before it are in {out}" in err
    assert set(load_ceilings(out).gemm_times_ms) == {keys[0]}


def test_added_gemm_times_keep_the_ones_the_file_holds() -> None:
    """hw gemms adds: shapes timed before stay, a shape timed again takes the new time, and the workloads
    are the union (so a file can grow by workloads, as reports/hardware/h200/hw-ceilings.json did)."""
    from llm_perf_opt.hardware.bench import add_gemm_times

    base = load_ceilings(ROOT / "reports" / "hardware" / "h200" / "hw-ceilings.json")
    base = attrs.evolve(base, gemm_times_ms={"linear@1x5x8x16": [0.001], "linear@1x6x8x16": [0.001]},
                        gemm_workloads=["tiny:1"])
    out = add_gemm_times(base, ["linear@1x6x8x16", "linear@1x7x8x16"], ["tiny:1", "tiny:2"], device="cpu",
                         repeats=1, timer=lambda _fn, _n: 3e-6)
    assert out.gemm_times_ms["linear@1x5x8x16"] == [0.001]  # kept
    assert out.gemm_times_ms["linear@1x6x8x16"] == pytest.approx([0.003])  # timed again: the new time
    assert out.gemm_times_ms["linear@1x7x8x16"] == pytest.approx([0.003])
    assert out.gemm_workloads == ["tiny:1", "tiny:2"]


def test_the_queued_timer_doubles_the_spin_until_the_host_is_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.cuda faked: the device finishes a spin shorter than 4 x SPIN_CYCLES before the host has issued
    the calls, and a synchronize finishes everything; the timer retries with twice the spin (or twice the
    queued work) and keeps the first timing with the host ahead."""
    import torch

    from llm_perf_opt.hardware import gemms

    spins: list[int] = []
    state = {"synced": False, "long_enough": 4 * gemms.SPIN_CYCLES}

    def sleep(cycles: int) -> None:
        spins.append(cycles)
        state["synced"] = False

    def synchronize() -> None:
        state["synced"] = True

    class FakeEvent:
        def __init__(self, enable_timing: bool = False) -> None:
            self.timing = enable_timing

        def record(self) -> None:
            pass

        def query(self) -> bool:  # the event after the spin: done after a sync, or when the spin was short
            return bool(state["synced"]) or sum(spins) < int(state["long_enough"])

        def elapsed_time(self, _end: Any) -> float:
            return 10.0 * len(spins)  # ms: tells which attempt was kept

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    monkeypatch.setattr(torch.cuda, "_sleep", sleep)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    issued: list[int] = []
    assert gemms.queued_cuda_timer(lambda: issued.append(1), 5) == pytest.approx(30.0e-3 / 5)
    assert spins == [gemms.SPIN_CYCLES, 2 * gemms.SPIN_CYCLES, 4 * gemms.SPIN_CYCLES] and len(issued) == 15
    # queued work instead of a spin: queued twice, then four times
    spins.clear()

    def busy() -> None:
        sleep(gemms.SPIN_CYCLES)

    assert gemms.queued_cuda_timer(lambda: None, 5, keep_busy=busy) == pytest.approx(70.0e-3 / 5)
    assert len(spins) == 1 + 2 + 4
    spins.clear()
    state["long_enough"] = 2 ** 62  # never long enough: one clear error, not a host time
    with pytest.raises(UserError, match="host did not get ahead of the device"):
        gemms.queued_cuda_timer(lambda: None, 5)
    assert len(spins) == gemms.MAX_SPIN_DOUBLINGS + 1
