"""The timeline model's decode in groups of forwards at their own KV lengths (AnalyticModel.decode_segments):
a partition of the forwards, exact sums of work, and a decode whose device time overtakes the host's as the
cache grows no longer timed at its mean step."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_perf_opt.analytic.calibration import load_calibration
from llm_perf_opt.analytic.model import DECODE_KV_SEGMENTS, AnalyticModel
from llm_perf_opt.analytic.report import build_report
from llm_perf_opt.analytic.roofline import RooflinePeaks
from llm_perf_opt.analytic.timeline_model import simulate_pass
from llm_perf_opt.analytic.workloads import get_profile, with_overrides
from llm_perf_opt.hardware import effective_peaks, load_catalog
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.vocab import Stage, parse_dtype

ROOT = Path(__file__).resolve().parents[2]
#: a prior (nothing fitted) with the H200's measured device model, as calibrate --prior writes it
PRIOR = ROOT / "reports" / "compare" / "cross-session-h200-20261204T210208Z" / "calibration-h200-prior.json"


def _model(mode: str, batch: int, tokens: int, ngram: int = 0) -> AnalyticModel:
    wl = with_overrides(get_profile("dsocr-standard-v1"), mode=mode, batch_size=batch, max_new_tokens=tokens,
                        no_repeat_ngram_size=ngram)
    return AnalyticModel(DeepseekOCRConfig.default(), wl)


def test_segments_partition_the_forwards_at_their_mean_kv() -> None:
    m = _model("base", 2, 100)
    segs = m.decode_segments()
    assert len(segs) == DECODE_KV_SEGMENTS and sum(n for n, _ in segs) == m.shape.decode_forwards == 99
    assert segs[0][1] == m.shape.decode_kv_len(0) + (segs[0][0] - 1) / 2
    assert segs[-1][1] == m.shape.final_kv_len - (segs[-1][0] - 1) / 2  # the last forward attends final_kv_len
    sizes = [n for n, _ in segs]
    assert max(sizes) - min(sizes) <= 1
    for (n0, kv0), (n1, kv1) in zip(segs, segs[1:], strict=False):  # consecutive groups, no gap, no overlap
        assert kv1 - kv0 == (n0 + n1) / 2
    mean = sum(n * kv for n, kv in segs) / m.shape.decode_forwards
    assert mean == pytest.approx(m.decode_mean_kv_len, rel=1e-12)
    few = _model("base", 1, 4)  # fewer forwards than segments: one per forward
    assert few.decode_segments() == [(1, float(few.shape.decode_kv_len(j))) for j in range(3)]
    assert _model("base", 1, 1).decode_segments() == []
    with pytest.raises(ValueError, match="segments must be >= 1"):
        m.decode_segments(0)


def test_pass_blocks_refuse_segments_that_are_not_the_forwards() -> None:
    from llm_perf_opt.analytic.timeline_model import PassBlocks

    with pytest.raises(ValueError, match="decode segments hold 3 forwards, the pass 4"):
        PassBlocks({Stage.DECODE.value: []}, 4, (([], 3),))
    with pytest.raises(ValueError, match="no decode stage"):
        PassBlocks({}, 3, (([], 3),))


def test_segment_work_sums_to_the_mean_step_times_the_forwards() -> None:
    m = _model("gundam", 4, 300, ngram=20)
    mean = m.stages[Stage.DECODE]
    steps = m.decode_segment_steps()
    for attr in ("forward_tensor_core_flops", "forward_cuda_core_flops", "forward_cal_io"):
        total = sum(getattr(step, attr)() * n for step, n in steps)
        assert total == pytest.approx(getattr(mean, attr)() * m.shape.decode_forwards, rel=1e-9)


def _decode_s(m: AnalyticModel, segments: int | None) -> float:
    cal = load_calibration(PRIOR)
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get(cal.gpu_key)), parse_dtype(cal.dtype))
    segs = m.decode_segment_steps(segments) if segments else ()
    return simulate_pass({Stage.DECODE: m.stages[Stage.DECODE]}, m.shape.decode_forwards, peaks, cal,
                         decode_segments=segs).stage_s[Stage.DECODE.value]


def test_a_decode_that_turns_device_bound_is_timed_per_segment() -> None:
    m = _model("small", 448, 1024)  # ban off: host-bound early, device-bound late in the decode (H200 prior)
    every = _decode_s(m, m.shape.decode_forwards)  # each forward at its own KV length
    mean_step = _decode_s(m, None)
    assert mean_step < 0.95 * every  # the mean step misses the device-bound tail
    assert _decode_s(m, DECODE_KV_SEGMENTS) == pytest.approx(every, rel=5e-3)
    host_bound = _model("small", 64, 1024, ngram=20)  # no crossing: the groups change nothing
    assert _decode_s(host_bound, DECODE_KV_SEGMENTS) == pytest.approx(_decode_s(host_bound, None), rel=1e-9)


def test_the_report_times_the_decode_by_segments() -> None:
    cal = load_calibration(PRIOR)
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get(cal.gpu_key)), parse_dtype(cal.dtype))
    m = _model("small", 448, 1024)
    rep = build_report(m, peaks, efficiency=cal, max_depth=1)
    whole = simulate_pass(m.stages, m.shape.decode_forwards, peaks, cal, decode_segments=m.decode_segment_steps())
    assert rep.decode.total.time_ms == pytest.approx(whole.stage_s[Stage.DECODE.value] * 1e3, rel=1e-12)
    assert rep.decode.total.time_ms == pytest.approx(_decode_s(m, DECODE_KV_SEGMENTS) * 1e3, rel=1e-5)
    assert rep.decode.per_token.time_ms == pytest.approx(rep.decode.total.time_ms / m.shape.decode_forwards)
