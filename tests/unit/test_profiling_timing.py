"""Stage timers, per-pass records on disk, aggregation and MFU arithmetic."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

from llm_perf_opt.data.common import Stats
from llm_perf_opt.profiling.aggregate import aggregate
from llm_perf_opt.profiling.mfu import Peaks, StageWork, compute_utilization
from llm_perf_opt.profiling.records import STATUS_OK, STATUS_OOM, PassRecord, RecordWriter, read_records
from llm_perf_opt.profiling.timers import (
    ModuleHostProbe,
    StageRecorder,
    aten_calls,
    decode_step_times,
    host_probe_us,
)
from llm_perf_opt.vocab import DECODE_STEP_RANGE, Stage


def test_cpu_recorder_times_nested_and_repeated_ranges() -> None:
    rec = StageRecorder("cpu")
    with rec.scope("prefill"):
        with rec.scope("vision.sam"):
            time.sleep(0.01)
        with rec.scope("vision.sam"):  # SAM over tiles, then over the global view: summed
            time.sleep(0.01)
        time.sleep(0.005)
    for step in range(3):
        with rec.step_scope(step):
            time.sleep(0.002 * (step + 1))
    out = rec.collect()
    assert out["vision.sam"] >= 20.0
    assert out["prefill"] >= out["vision.sam"] + 5.0
    steps = decode_step_times(out)
    assert len(steps) == 3 and steps[2] >= 6.0 and steps[0] >= 2.0
    assert DECODE_STEP_RANGE.format(step=2) in out
    assert rec.collect() == {}  # collected once, then cleared


def test_decode_step_times_sort_numerically() -> None:
    ranges = {"decode.step.10": 3.0, "decode.step.2": 2.0, "decode.step.0": 1.0, "decode": 9.0, "prefill": 4.0}
    assert decode_step_times(ranges) == [1.0, 2.0, 3.0]


def test_timing_off_records_nothing() -> None:
    rec = StageRecorder("cpu", timing=False)
    with rec.scope("decode"):
        pass
    assert rec.collect() == {}


def _record(i: int, *, prefill: float, decode: float, status: str = STATUS_OK, batch: int = 1) -> PassRecord:
    return PassRecord(
        pass_index=i, batch_index=i, repeat_index=0, image_indices=list(range(i * batch, i * batch + batch)),
        image_names=[f"p{j}" for j in range(batch)], status=status,
        stage_ms={"vision.sam": prefill / 4, "vision.clip": prefill / 8, "projector": 1.0, "prefill": prefill,
                  "decode": decode} if status == STATUS_OK else {},
        decode_step_ms=[decode / 4] * 4 if status == STATUS_OK else [], e2e_ms=prefill + decode + 5.0,
        prompt_tokens=280 * batch, image_tokens=256 * batch, image_slots=273 * batch, num_tiles=[0] * batch,
        generated_tokens=4 * batch, decode_steps=4, decode_forwards=3, preprocess_ms=5.0, load_ms=2.0,
    )


def test_records_are_appended_one_line_each_and_torn_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "passes.jsonl"
    with RecordWriter(path) as w:
        w.append(_record(0, prefill=100, decode=50))
        w.append(_record(1, prefill=110, decode=55))
    with open(path, "a") as fh:  # a record cut short by a crash
        fh.write('{"pass_index": 2, "stage_ms": {"pre')
    got = read_records(path)
    assert [r.pass_index for r in got] == [0, 1]
    assert got[1].stage_ms["prefill"] == 110
    assert len(path.read_text().splitlines()) == 3
    assert read_records(tmp_path / "missing.jsonl") == []
    assert json.loads(path.read_text().splitlines()[0])["status"] == "ok"
    assert os.path.getsize(path) > 0


def test_aggregate_statistics_tokens_and_pages() -> None:
    recs = [_record(0, prefill=100, decode=50), _record(1, prefill=120, decode=70),
            _record(2, prefill=0, decode=0, status=STATUS_OOM)]
    agg = aggregate(recs)
    assert len(agg.ok_records) == 2
    assert agg.stage_ms[Stage.PREFILL] == Stats.from_values([100, 120])
    assert agg.stage_ms[Stage.PREFILL].std == pytest.approx(10.0)
    assert agg.stage_tokens_per_s[Stage.DECODE].mean == pytest.approx((4 / 0.05 + 4 / 0.07) / 2)
    assert agg.stage_tokens_per_s[Stage.PREFILL].p50 == pytest.approx((280 / 0.1 + 280 / 0.12) / 2)
    assert agg.pages_per_s is not None
    assert agg.pages_per_s.mean == pytest.approx((1 / 0.155 + 1 / 0.195) / 2)
    assert agg.decode_ms_per_token is not None and agg.decode_ms_per_token.mean == pytest.approx(15.0)
    assert agg.decode_step_ms is not None and agg.decode_step_ms.count == 8
    assert agg.decode_step_ms.p50 == pytest.approx(15.0)
    # one StageTiming per measured pass and stage; vision stages count image tokens
    assert len(agg.timings) == 2 * 5
    sam = [t for t in agg.timings if t.stage is Stage.VISION_SAM]
    assert all(t.tokens == 256 for t in sam)


def test_aggregate_of_nothing_is_empty() -> None:
    agg = aggregate([_record(0, prefill=0, decode=0, status=STATUS_OOM)])
    assert agg.ok_records == [] and agg.stage_ms == {} and agg.pages_per_s is None


def test_mfu_is_flops_over_time_over_peak() -> None:
    recs = [_record(0, prefill=100, decode=50), _record(1, prefill=100, decode=150)]
    work = {Stage.PREFILL: StageWork(flops=2e12, bytes=1e9), Stage.DECODE: StageWork(flops=1e11, bytes=3e9),
            Stage.VISION_SAM: StageWork(flops=1e12, bytes=1e8)}
    peaks = Peaks(gpu_key="x", flops_per_s=1e15, bytes_per_s=2e12, origin="datasheet")
    util = compute_utilization(recs, lambda r: work, peaks)
    # prefill: 4e12 FLOPs over 0.2 s at 1e15 FLOP/s
    assert util.stage_mfu[Stage.PREFILL] == pytest.approx(4e12 / 0.2 / 1e15)
    assert util.stage_mbu[Stage.DECODE] == pytest.approx(6e9 / 0.2 / 2e12)
    assert util.model_mfu == pytest.approx((4e12 + 2e11) / 0.4 / 1e15)
    assert util.vision_mfu == pytest.approx(2e12 / 0.05 / 1e15)
    assert Stage.VISION_CLIP not in util.stage_mfu
    assert all(0 < v < 1.5 for v in util.stage_mfu.values())
    assert math.isclose(util.stage_seconds[Stage.DECODE], 0.2)


def test_host_probe_is_the_median_loop_time_per_op(monkeypatch: pytest.MonkeyPatch) -> None:
    import llm_perf_opt.profiling.timers as timers

    assert 0 < host_probe_us("cpu", ops=50) < 10_000  # a real measurement on this host
    # three loops of 100 ops lasting 3, 1 and 2 ms on a fake clock: 30, 10, 20 us per op -> median 20
    ticks = iter([0.0, 0.003, 1.0, 1.001, 2.0, 2.002])
    monkeypatch.setattr(timers.time, "perf_counter", lambda: next(ticks))
    assert host_probe_us("cpu", ops=100, reps=3) == pytest.approx(20.0)


def test_module_probe_counts_the_aten_calls_and_takes_the_median_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import llm_perf_opt.profiling.timers as timers
    from llm_perf_opt.models.deepseek_ocr.modeling import tiny_decoder_program

    x = torch.zeros(4)
    assert aten_calls(lambda: (x.add_(1.0), x.view(2, 2).mul(2.0))) == 3  # in-place add, view, mul
    assert x[0] == 1.0  # the counted call ran
    probe = ModuleHostProbe(lambda: x.add_(1.0).add_(1.0), "cpu")
    assert probe.ops == 2 and x[0] == 1.0 + 3 * 2.0  # two warm-up calls and the counted one, 2 adds each
    # three forwards lasting 3, 1 and 2 ms on a fake clock, 2 aten calls each: 1500, 500, 1000 us -> 1000
    ticks = iter([0.0, 0.003, 1.0, 1.001, 2.0, 2.002])
    monkeypatch.setattr(timers.time, "perf_counter", lambda: next(ticks))
    assert probe.probe(reps=3) == pytest.approx(1000.0)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="no aten call"):
        ModuleHostProbe(lambda: None, "cpu")
    # the decoder's own code at tiny widths: a dense and a MoE layer, each implementation a real measurement
    counts = {}
    for impl in ("grouped_mm", "eager"):
        real = ModuleHostProbe(tiny_decoder_program(device="cpu", experts_implementation=impl), "cpu")
        counts[impl] = real.ops
        assert 0 < real.probe() < 10_000
    assert counts["grouped_mm"] > 100 and counts["eager"] != counts["grouped_mm"]
