"""what-if: exact reproduction with no change, right direction for one change, sweeps, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import attrs
import pytest
from compare_fixtures import FX

from llm_perf_opt.analytic.calibration import Calibration, CalibrationError, save_calibration
from llm_perf_opt.compare.analytic import load_analytic_report
from llm_perf_opt.compare.analyzer_bridge import CalibratedBaseError
from llm_perf_opt.compare.whatif import (
    COLUMNS,
    Scenario,
    WhatIfError,
    expand_sweep,
    row_from_report,
    run_what_if,
)
from llm_perf_opt.data.analytic import AnalyticModelReport, OCRWorkloadProfile
from llm_perf_opt.data.io import dump_json
from llm_perf_opt.hardware.catalog import UnknownGpuError
from llm_perf_opt.runners import what_if_cli
from llm_perf_opt.vocab import Stage


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report exported by the current analyzer (tiny config, base mode, batch 1, 8 new tokens, H100)."""
    return dump_json(FX.base_report(FX.workload()), tmp_path_factory.mktemp("wi") / "analytic-base-b1.json")


@pytest.fixture(scope="module")
def report(report_file: Path) -> AnalyticModelReport:
    return load_analytic_report(report_file)


def one(report: AnalyticModelReport, **changes):
    (row,) = run_what_if(report, [Scenario(**changes)])
    return row


def test_no_change_reproduces_the_report_exactly(report: AnalyticModelReport) -> None:
    row = one(report)
    assert attrs.asdict(row) == attrs.asdict(row_from_report(report))
    assert row.total_ms == report.model_totals.time_ms
    assert row.decode_ms == report.stage_totals["decode"].time_ms  # type: ignore[index]
    assert row.memory_total_bytes == report.memory.total_bytes
    assert row.max_batch_size == report.memory.max_batch_size


def _full_size_report(wl: OCRWorkloadProfile, tmp_path: Path) -> AnalyticModelReport:
    """The full-size model's report of ``wl`` on the H100 (datasheet peaks), exported and loaded back."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.report import build_report
    from llm_perf_opt.analytic.roofline import RooflinePeaks
    from llm_perf_opt.hardware.bench import effective_peaks
    from llm_perf_opt.hardware.catalog import load_catalog
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig

    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get("h100-sxm")), wl.dtype)
    return load_analytic_report(dump_json(build_report(AnalyticModel(DeepseekOCRConfig.default(), wl), peaks),
                                          tmp_path / "r.json"))


def test_no_change_also_exact_for_the_full_size_model(tmp_path: Path) -> None:
    from llm_perf_opt.analytic.workloads import get_profile

    rep = _full_size_report(get_profile("dsocr-standard-v1"), tmp_path)
    assert attrs.asdict(one(rep)) == attrs.asdict(row_from_report(rep))
    assert one(rep).memory_peak_stage == rep.memory.peak_stage == "vision.sam"  # eager SAM's scores


def test_a_long_decode_moves_the_memory_peak_to_the_kv_cache(tmp_path: Path) -> None:
    from llm_perf_opt.analytic.workloads import get_profile, with_overrides

    wl = with_overrides(get_profile("dsocr-standard-v1"), mode="small", image_size=(640, 640), attention="sdpa",
                        max_new_tokens=64)
    rep = _full_size_report(wl, tmp_path)
    short, long = one(rep), one(rep, max_new_tokens=7000)
    assert short.memory_peak_stage == "vision.sam" and long.memory_peak_stage == "decode"
    # past the turn the peak grows with the KV cache alone: weights + final KV cache + decode's activations
    assert long.memory_total_bytes > short.memory_total_bytes
    assert long.memory_total_bytes < long.weights_bytes + long.kv_cache_bytes + long.activation_peak_bytes


def test_each_change_moves_the_right_way(report: AnalyticModelReport) -> None:
    base = one(report)
    faster = one(report, gpu="b200")
    assert faster.gpu_key == "b200"
    for col in ("vision_sam_ms", "vision_clip_ms", "prefill_ms", "decode_ms", "total_ms"):
        assert getattr(faster, col) < getattr(base, col), col
    assert faster.pages_per_day > base.pages_per_day
    shorter = one(report, max_new_tokens=4)
    assert shorter.decode_ms < base.decode_ms and shorter.total_ms < base.total_ms
    assert shorter.vision_sam_ms == base.vision_sam_ms
    bigger = one(report, batch_size=8)
    assert bigger.pages_per_s > base.pages_per_s
    assert bigger.memory_total_bytes > base.memory_total_bytes
    more_tiles = one(report, mode="gundam", image_width_px=1700, image_height_px=2200)
    assert more_tiles.tiles == 6 and more_tiles.vision_sam_ms > base.vision_sam_ms
    assert more_tiles.prefill_tokens > base.prefill_tokens
    longer_prompt = one(report, prompt_text_tokens=500)
    assert longer_prompt.prefill_ms > base.prefill_ms
    fp32 = one(report, dtype="fp32")
    assert fp32.weights_bytes == 2 * base.weights_bytes and fp32.total_ms > base.total_ms


def test_calibration_on_off(report: AnalyticModelReport, tmp_path: Path) -> None:
    cal = Calibration(gpu_key="h100-sxm", compute_efficiencies={"gemm": 0.5},
                      bandwidth_efficiencies={"gemm": 0.5, "attention": 0.5}, launch_overhead_s=5e-6)
    off, on = run_what_if(report, [Scenario(), Scenario(calibrated=True)], calibration=cal)
    assert not off.calibrated and on.calibrated
    assert on.total_ms > off.total_ms and on.decode_ms > off.decode_ms
    with pytest.raises(CalibrationError, match="not 'b200'"):
        run_what_if(report, [Scenario(gpu="b200", calibrated=True)], calibration=cal)
    with pytest.raises(WhatIfError, match="no --calibration"):
        run_what_if(report, [Scenario(calibrated=True)])


def test_sweep_is_cartesian_and_written(report: AnalyticModelReport, report_file: Path, tmp_path: Path) -> None:
    scenarios = expand_sweep(gpus=["h100-sxm", "a100-sxm4-80gb"], batch_sizes=[1, 2, 4], max_new_tokens=[4, 8])
    assert len(scenarios) == 12
    out = tmp_path / "sweep"
    rc = what_if_cli.main(["--report", str(report_file), "--gpu", "h100-sxm", "a100-sxm4-80gb", "--batch-size", "1",
                           "2", "4", "--max-new-tokens", "4", "8", "--out", str(out), "--name", "s", "--quiet"])
    assert rc == 0
    with (out / "s.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 13
    data = json.loads((out / "s.json").read_text())
    assert len(data["rows"]) == 12 and list(data["columns"]) == list(COLUMNS)
    assert all(data["columns"][c] for c in COLUMNS)  # every column documented
    # CSV floats are lossless
    direct = run_what_if(report, scenarios)
    assert float(rows[1][COLUMNS.index("total_ms")]) == direct[0].total_ms


def test_bad_input_is_one_line(report: AnalyticModelReport, report_file: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnknownGpuError, match="unknown GPU 'h999'"):
        run_what_if(report, expand_sweep(gpus=["h100-sxm", "h999"]))
    assert what_if_cli.main(["--report", str(report_file), "--gpu", "h999", "--out", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    raw = json.loads(report_file.read_text())
    raw["schema_version"] = "llm-perf-opt.analytic-report/0"
    (tmp_path / "old.json").write_text(json.dumps(raw))
    assert what_if_cli.main(["--report", str(tmp_path / "old.json"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "schema_version" in err
    with pytest.raises(WhatIfError, match="batch_size must be >= 1"):
        run_what_if(report, [Scenario(batch_size=0)])
    calibrated = attrs.evolve(report, peaks=attrs.evolve(report.peaks, launch_overhead_ms=0.01))
    with pytest.raises(CalibratedBaseError, match="computed with a calibration"):
        run_what_if(calibrated, [Scenario()])
    # a report of the timeline model (calibrate --prior) has no efficiencies and no launch cost in its peaks:
    # its note names the calibration, and it is refused too (its times would silently become the roofline's)
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.report import build_report
    from llm_perf_opt.analytic.roofline import RooflinePeaks
    from llm_perf_opt.compare.calibrate import prior_calibration
    from llm_perf_opt.hardware.bench import effective_peaks
    from llm_perf_opt.hardware.catalog import load_catalog

    prior = prior_calibration("h100-sxm", "bf16")
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get("h100-sxm")), report.workload.dtype)
    timeline = build_report(AnalyticModel(report.model.config, report.workload), peaks, efficiency=prior)
    assert not timeline.peaks.efficiencies and not timeline.peaks.launch_overhead_ms
    with pytest.raises(CalibratedBaseError, match="computed with a calibration"):
        run_what_if(timeline, [Scenario()])
    cal_file = save_calibration(Calibration(gpu_key="h100-sxm"), tmp_path / "c.json")
    assert what_if_cli.main(["--report", str(report_file), "--calibration", str(cal_file), "--gpu", "l4",
                             "--out", str(tmp_path)]) == 2
    assert "not 'l4'" in capsys.readouterr().err


def test_calibrated_row_equals_the_analyzer_run_with_the_calibration(report: AnalyticModelReport) -> None:
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.report import build_report
    from llm_perf_opt.compare.analyzer_bridge import peaks_for
    from llm_perf_opt.hardware.catalog import load_catalog

    cal = Calibration(gpu_key="h100-sxm", compute_efficiencies={"attention": 0.4},
                      bandwidth_efficiencies={"gemm": 0.6}, launch_overhead_s=8e-6,
                      stage_launch_overhead_s={"decode": 20e-6, "vision.sam": 3e-6})
    direct = build_report(AnalyticModel(report.model.config, report.workload),
                          peaks_for(report, load_catalog().get("h100-sxm"), report.workload.dtype), efficiency=cal)
    (row,) = run_what_if(report, [Scenario(calibrated=True)], calibration=cal)
    assert attrs.asdict(row) == attrs.asdict(row_from_report(direct, calibrated=True))
    # the per-stage launch cost reaches the analyzer: decode kernels cost 20 us, not 8 us
    plain = attrs.evolve(cal, stage_launch_overhead_s={})
    (row_plain,) = run_what_if(report, [Scenario(calibrated=True)], calibration=plain)
    assert row.decode_ms > row_plain.decode_ms and row.prefill_ms == row_plain.prefill_ms


def test_tiles_set_the_gundam_grid(report: AnalyticModelReport) -> None:
    rows = run_what_if(report, expand_sweep(modes=["gundam"], tiles=[(1, 1), (2, 2), (3, 2), (3, 3)]))
    assert [r.tiles for r in rows] == [0, 4, 6, 9]
    assert (rows[2].image_width_px, rows[2].image_height_px) == (1280, 1920)
    assert rows[0].vision_sam_ms < rows[1].vision_sam_ms < rows[2].vision_sam_ms < rows[3].vision_sam_ms
    with pytest.raises(WhatIfError, match="crop .gundam. mode only"):
        run_what_if(report, [Scenario(tiles=(2, 2))])  # the report is in base mode
    with pytest.raises(WhatIfError, match="tile count"):
        run_what_if(report, [Scenario(mode="gundam", tiles=(4, 3))])


def _timeline_cal(**changes) -> Calibration:
    """A timeline calibration of the H100 fixture: 20 us per kernel on the host at an add_ probe of 8 us/op,
    a 1 us device gap between queued kernels and a device factor on SAM."""
    base = Calibration(gpu_key="h100-sxm", time_model="timeline", kernel_floor_s=2e-6, host_sync_s=30e-6,
                       stage_host_s_per_kernel={s: 20e-6 for s in ("vision.sam", "vision.clip", "projector",
                                                                   "prefill", "decode")},
                       host_probe_us=8.0, host_probe_exponent=1.0, kernel_gap_s=1e-6,
                       stage_device_scale={"vision.sam": 1.5})
    return attrs.evolve(base, **changes)


def test_host_probe_moves_calibrated_times_with_host_speed(report: AnalyticModelReport) -> None:
    cal = _timeline_cal()
    own, *rows = run_what_if(report, [Scenario(calibrated=True)] + [
        Scenario(calibrated=True, host_probe_us=p) for p in (8.0, 0.0, 4.0, 16.0)], calibration=cal)
    same, free, fast, slow = rows
    # the calibration's own probe changes nothing; the row names the probe either way
    assert own.host_probe_us == same.host_probe_us == 8.0
    assert attrs.asdict(own) | {"scenario_id": 0} == attrs.asdict(same) | {"scenario_id": 0}
    # the tiny model's kernels are far shorter than their issue cost: decode follows the host
    assert free.decode_ms < fast.decode_ms < same.decode_ms < slow.decode_ms
    assert 1.8 < slow.decode_ms / same.decode_ms <= 2.0
    assert free.host_probe_us == 0.0 and free.decode_ms < 0.2 * same.decode_ms
    # memory does not depend on the host
    assert free.memory_total_bytes == slow.memory_total_bytes


def test_host_probe_zero_leaves_the_device_time(report: AnalyticModelReport) -> None:
    """With a host that issues work for free, every stage lasts its device time: the sum of its blocks (with
    the stage's device factor) and the device's gap after each kernel."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.timeline_model import pass_blocks
    from llm_perf_opt.compare.analyzer_bridge import peaks_for
    from llm_perf_opt.hardware.catalog import load_catalog

    cal = _timeline_cal()
    # host speed moves host costs only: the device's gap and factors stay
    for p in (0.0, 4.0, 16.0):
        moved = cal.for_host_probe(p)
        assert moved.kernel_gap_s == cal.kernel_gap_s and moved.stage_device_scale == cal.stage_device_scale
    (row,) = run_what_if(report, [Scenario(calibrated=True, host_probe_us=0.0)], calibration=cal)
    model = AnalyticModel(report.model.config, report.workload)
    peaks = peaks_for(report, load_catalog().get("h100-sxm"), report.workload.dtype)
    blocks = pass_blocks(model.stages, 1, peaks, cal, kernel_floor_s=cal.kernel_floor_s,
                         device_scale=cal.stage_device_scale, call_gap_s=cal.kernel_gap_s).stages
    for stage, column in (("vision.sam", "vision_sam_ms"), ("vision.clip", "vision_clip_ms"),
                          ("prefill", "prefill_ms")):
        device_ms = sum(b.device_s + b.kernels * cal.kernel_gap_s for b in blocks[stage]) * 1e3
        assert getattr(row, column) == pytest.approx(device_ms, rel=1e-9)


def test_host_probe_zero_stands_for_cuda_graphs(report: AnalyticModelReport) -> None:
    """Probe 0 is the stages replayed from CUDA graphs: no host cost and the graph's gap between kernels
    (when the calibration has one); any other probe keeps the stream's gap."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.timeline_model import pass_blocks
    from llm_perf_opt.compare.analyzer_bridge import peaks_for
    from llm_perf_opt.hardware.catalog import load_catalog

    cal = _timeline_cal(kernel_gap_graph_s=0.3e-6)
    free, slow = cal.for_host_probe(0.0), cal.for_host_probe(4.0)
    assert free.graph_stages == [st.value for st in Stage] and free.kernel_gap_s == 1e-6
    assert all(free.stage_gap_s(st.value) == 0.3e-6 for st in Stage)
    assert not slow.graph_stages and slow.stage_gap_s("decode") == 1e-6
    assert _timeline_cal().for_host_probe(0.0).stage_gap_s("decode") == 1e-6  # no graph gap measured: the stream's
    free_host = [Scenario(calibrated=True, host_probe_us=0.0)]
    (graphs,) = run_what_if(report, free_host, calibration=cal)
    (stream,) = run_what_if(report, free_host, calibration=_timeline_cal())
    model = AnalyticModel(report.model.config, report.workload)
    peaks = peaks_for(report, load_catalog().get("h100-sxm"), report.workload.dtype)
    blocks = pass_blocks(model.stages, 1, peaks, cal, kernel_floor_s=cal.kernel_floor_s,
                         device_scale=cal.stage_device_scale, call_gap_s=cal.kernel_gap_s).stages
    for stage, column in (("vision.sam", "vision_sam_ms"), ("prefill", "prefill_ms")):
        kernels = sum(b.kernels for b in blocks[stage])
        device_ms = sum(b.device_s for b in blocks[stage]) * 1e3
        assert getattr(graphs, column) == pytest.approx(device_ms + kernels * 0.3e-3, rel=1e-9)
        assert getattr(stream, column) - getattr(graphs, column) == pytest.approx(kernels * 0.7e-3, rel=1e-6)


def test_decode_alone_in_cuda_graphs(report: AnalyticModelReport, report_file: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """--cuda-graphs decode: decode as with no host cost, the other stages as on the scenario's host."""
    cal = _timeline_cal(kernel_gap_graph_s=0.3e-6)
    own, decode_only, slow_decode_only, free = run_what_if(report, [
        Scenario(calibrated=True), Scenario(calibrated=True, graph_stages=("decode",)),
        Scenario(calibrated=True, host_probe_us=16.0, graph_stages=("decode",)),
        Scenario(calibrated=True, host_probe_us=0.0)], calibration=cal)
    assert own.graph_stages == "" and decode_only.graph_stages == "decode" and decode_only.host_probe_us == 8.0
    assert free.graph_stages == "vision.sam+vision.clip+projector+prefill+decode"
    # decode does not depend on the host any more: the same with every stage in graphs and at any probe
    assert decode_only.decode_ms == pytest.approx(free.decode_ms, rel=1e-9)
    assert slow_decode_only.decode_ms == pytest.approx(free.decode_ms, rel=1e-9)
    assert decode_only.decode_ms < 0.2 * own.decode_ms
    # the stages before it keep the scenario's host (the tiny model's are host bound)
    assert decode_only.vision_sam_ms == pytest.approx(own.vision_sam_ms, rel=1e-9)
    assert slow_decode_only.vision_sam_ms > own.vision_sam_ms > free.vision_sam_ms
    # the sweep axis, the column and the refusals
    scenarios = expand_sweep(calibrated=[False, True], host_probes_us=[None, 4.0],
                             graph_stages=[None, ("decode",)])
    assert len(scenarios) == 1 + 2 * 2 and scenarios[0].graph_stages is None
    assert [sc.graph_stages for sc in scenarios[1:]] == [None, ("decode",), None, ("decode",)]
    with pytest.raises(WhatIfError, match="calibrated scenarios only"):
        expand_sweep(graph_stages=[("decode",)])
    with pytest.raises(WhatIfError, match="calibrated scenarios only"):
        run_what_if(report, [Scenario(graph_stages=("decode",))], calibration=cal)
    with pytest.raises(WhatIfError, match="--cuda-graphs decode: .*additive"):
        run_what_if(report, [Scenario(calibrated=True, graph_stages=("decode",))],
                    calibration=Calibration(gpu_key="h100-sxm"))
    path = save_calibration(cal, tmp_path / "cal.json")
    out = tmp_path / "w"
    assert what_if_cli.main(["--report", str(report_file), "--calibration", str(path), "--calibrated", "both",
                             "--cuda-graphs", "none", "decode", "all", "--out", str(out), "--name", "g"]) == 0
    assert "decode" in capsys.readouterr().out
    with (out / "g.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["graph_stages"] for r in rows] == ["", "", "decode", free.graph_stages]
    payload = json.loads((out / "g.json").read_text())
    assert payload["schema_version"] == "llm-perf-opt.what-if/6" and "graph_stages" in payload["columns"]
    assert payload["scenarios"][2] == {"calibrated": True, "graph_stages": ["decode"]}
    with pytest.raises(SystemExit):
        what_if_cli.main(["--report", str(report_file), "--calibration", str(path), "--cuda-graphs", "vision"])
    assert "CUDA-graph stages 'vision'" in capsys.readouterr().err
    assert what_if_cli.main(["--report", str(report_file), "--calibration", str(path), "--calibrated", "off",
                             "--cuda-graphs", "decode"]) == 2
    assert "--cuda-graphs applies to calibrated scenarios" in capsys.readouterr().err


def test_host_probe_sweep_and_bad_input(report: AnalyticModelReport, report_file: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    scenarios = expand_sweep(batch_sizes=[1, 2], calibrated=[False, True], host_probes_us=[0.0, 4.0, 8.0])
    assert len(scenarios) == 2 * (1 + 3)
    assert [s.host_probe_us for s in scenarios[:4]] == [None, 0.0, 4.0, 8.0]
    cal_file = save_calibration(_timeline_cal(), tmp_path / "t.json")
    out = tmp_path / "hp"
    assert what_if_cli.main(["--report", str(report_file), "--calibration", str(cal_file), "--calibrated", "both",
                             "--host-probe-us", "0", "8", "--out", str(out), "--name", "h", "--quiet"]) == 0
    with (out / "h.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["host_probe_us"] for r in rows] == ["", "0.0", "8.0"]
    assert json.loads((out / "h.json").read_text())["scenarios"][1] == {"calibrated": True, "host_probe_us": 0.0}
    # one line each: an additive calibration, a timeline one fitted without a probe, no calibration, a bad value
    with pytest.raises(WhatIfError, match="additive"):
        run_what_if(report, [Scenario(calibrated=True, host_probe_us=4.0)], calibration=Calibration(gpu_key="h100-sxm"))
    with pytest.raises(WhatIfError, match="no host probe"):
        run_what_if(report, [Scenario(calibrated=True, host_probe_us=4.0)],
                    calibration=_timeline_cal(host_probe_us=0.0))
    # no host cost needs no reference probe
    (free,) = run_what_if(report, [Scenario(calibrated=True, host_probe_us=0.0)],
                          calibration=_timeline_cal(host_probe_us=0.0))
    assert free.host_probe_us == 0.0 and free.decode_ms > 0
    with pytest.raises(WhatIfError, match="calibrated scenarios only"):
        run_what_if(report, [Scenario(host_probe_us=4.0)], calibration=_timeline_cal())
    with pytest.raises(WhatIfError, match="calibrated scenarios only"):
        expand_sweep(calibrated=[False], host_probes_us=[4.0])
    with pytest.raises(WhatIfError, match="out of range"):
        run_what_if(report, [Scenario(calibrated=True, host_probe_us=1e300)],
                    calibration=_timeline_cal(host_probe_exponent=2.0))
    assert what_if_cli.main(["--report", str(report_file), "--host-probe-us", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--host-probe-us" in err
    assert what_if_cli.main(["--report", str(report_file), "--calibration", str(cal_file), "--calibrated", "off",
                             "--host-probe-us", "4", "--out", str(out)]) == 2
    assert "drop --calibrated off" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        what_if_cli.main(["--report", str(report_file), "--calibration", str(cal_file), "--host-probe-us", "-1"])
    assert "must be a finite number >= 0" in capsys.readouterr().err


def test_jobs_give_the_rows_of_one_process(report: AnalyticModelReport, report_file: Path, tmp_path: Path) -> None:
    # 8 distinct analyses (and repeats of them) over 2 spawned processes: the same rows, in scenario order
    scenarios = expand_sweep(gpus=["h100-sxm", "a100-sxm4-80gb"], batch_sizes=[1, 2], max_new_tokens=[4, 8],
                             calibrated=[False]) * 2
    seen: list[int] = []
    serial = run_what_if(report, scenarios)
    parallel = run_what_if(report, scenarios, jobs=2, on_row=lambda r: seen.append(r.scenario_id))
    assert parallel == serial and [r.scenario_id for r in parallel] == list(range(16))
    assert sorted(seen) == list(range(16))
    with pytest.raises(WhatIfError, match="jobs must be >= 1"):
        run_what_if(report, scenarios, jobs=0)
    with pytest.raises(SystemExit):
        what_if_cli.main(["--report", str(report_file), "--jobs", "-1", "--out", str(tmp_path)])


def test_a_sweep_that_stops_keeps_the_rows_done(report_file: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from llm_perf_opt.compare import whatif

    # a failing scenario (more positions than the model has) after two good ones: one line, rows kept
    out = tmp_path / "fail"
    assert what_if_cli.main(["--report", str(report_file), "--max-new-tokens", "4", "8", "100000", "--out", str(out),
                             "--name", "s", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exceeds" in err and "the 2 of 3 rows done are in" in err
    data = json.loads((out / "s.json").read_text())
    assert data["complete"] is False and len(data["scenarios"]) == 3
    assert [r["max_new_tokens"] for r in data["rows"]] == [4, 8]
    assert len((out / "s.csv").read_text().splitlines()) == 3
    # Ctrl-C during the third analysis: exit 130, the two rows done written
    real = whatif.default_analyzer()
    calls: list[int] = []

    def stops(*a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(whatif, "default_analyzer", lambda: stops)
    out = tmp_path / "int"
    assert what_if_cli.main(["--report", str(report_file), "--batch-size", "1", "2", "3", "4", "--out", str(out),
                             "--name", "s", "--quiet"]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted" in err and "2 of 4 rows" in err
    data = json.loads((out / "s.json").read_text())
    assert data["complete"] is False and [r["batch_size"] for r in data["rows"]] == [1, 2]
    # a whole sweep says so
    monkeypatch.setattr(whatif, "default_analyzer", lambda: real)
    assert what_if_cli.main(["--report", str(report_file), "--out", str(out), "--name", "w", "--quiet"]) == 0
    assert json.loads((out / "w.json").read_text())["complete"] is True


def test_a_failing_scenario_in_a_worker_is_its_one_line_error(report: AnalyticModelReport) -> None:
    from llm_perf_opt.analytic.workloads import WorkloadError

    # the 100,000-token scenario fails inside a spawned process: the same error type and message arrive
    # here, and the rows handed on before it are good ones, each once
    scenarios = expand_sweep(max_new_tokens=[4, 8, 100_000, 16], batch_sizes=[1, 2])
    seen: list[int] = []
    with pytest.raises(WorkloadError, match="exceeds the model's"):
        run_what_if(report, scenarios, jobs=2, on_row=lambda r: seen.append(r.scenario_id))
    assert len(seen) == len(set(seen))
    assert all(scenarios[i].max_new_tokens != 100_000 for i in seen)


def test_one_model_per_workload_gives_the_rows_of_a_model_per_scenario(report: AnalyticModelReport,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # GPUs outermost, as a planner writes a sweep: each workload comes back once per GPU and calibration
    from llm_perf_opt.analytic import model as model_mod
    from llm_perf_opt.compare.analyzer_bridge import analyze_like

    cal = Calibration(gpu_key="h100-sxm", compute_efficiencies={"gemm": 0.5},
                      bandwidth_efficiencies={"gemm": 0.5, "attention": 0.5}, launch_overhead_s=5e-6)
    scenarios = expand_sweep(gpus=["h100-sxm", "a100-sxm4-80gb", "b200"], batch_sizes=[1, 2],
                             max_new_tokens=[4, 8], calibrated=[False])
    scenarios += expand_sweep(gpus=["h100-sxm"], batch_sizes=[1, 2], max_new_tokens=[4, 8], calibrated=[True])

    def fresh(base, wl, gpu, eff):  # a model built for every analysis
        return analyze_like(base, wl, gpu, efficiency=eff)

    built: list[object] = []
    init = model_mod.AnalyticModel.__init__

    def counting(self, *args, **kwargs):
        built.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(model_mod.AnalyticModel, "__init__", counting)
    shared = run_what_if(report, scenarios, calibration=cal)
    assert len(built) == 4  # 4 workloads, each built once for its 4 analyses
    assert shared == run_what_if(report, scenarios, calibration=cal, analyzer=fresh)
    assert len(built) == 4 + 16


def test_analyze_like_refuses_a_model_of_another_workload(report: AnalyticModelReport) -> None:
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.compare.analyzer_bridge import analyze_like

    other = attrs.evolve(report.workload, batch_size=report.workload.batch_size + 1)
    with pytest.raises(ValueError, match="not the base's config on this workload"):
        analyze_like(report, report.workload, model=AnalyticModel(report.model.config, other))
    model = AnalyticModel(report.model.config, report.workload)
    assert analyze_like(report, report.workload, model=model) == analyze_like(report, report.workload)
