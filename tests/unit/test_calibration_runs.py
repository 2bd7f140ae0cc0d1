"""calibrate on synthetic runs generated from known efficiencies: recovery, held-out error, file format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from compare_fixtures import FX

from llm_perf_opt.analytic.calibration import (
    Calibration,
    CalibrationError,
    check_applies,
    load_calibration,
    save_calibration,
)
from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.compare.calibrate import calibrate, host_s_per_op_from_per_kernel
from llm_perf_opt.compare.runs import load_run
from llm_perf_opt.data.analytic import OCRWorkloadProfile
from llm_perf_opt.runners import calibrate_cli, compare_cli
from llm_perf_opt.runners.compare_cli import build_comparison, predictions_for_run
from llm_perf_opt.vocab import Stage

TRUTH = Calibration(
    gpu_key="h100-sxm",
    compute_efficiencies={"gemm": 0.7, "attention": 0.45, "conv": 0.5, "lm_head": 0.7, "moe_experts": 0.35},
    bandwidth_efficiencies={"gemm": 0.8, "attention": 0.6, "norm": 0.55, "activation/elementwise": 0.65,
                            "memory/other": 0.5, "moe_experts": 0.6, "lm_head": 0.85, "embedding": 0.4,
                            "conv": 0.7, "moe_router": 0.3},
    launch_overhead_s=4e-6,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "base-b1": FX.write_calibrated_run(root / "base-b1", FX.workload("base"), TRUTH),
        "gundam-b1": FX.write_calibrated_run(root / "gundam-b1", FX.workload("gundam", (1700, 2200)), TRUTH),
        "large-b4": FX.write_calibrated_run(root / "large-b4", FX.workload("large", (1280, 1280), batch=4), TRUTH),
    }


def _with_preds(path: Path):
    run = load_run(path)
    return run, predictions_for_run(run)[0]


def test_recovers_known_efficiencies_and_held_out_error(runs: dict[str, Path]) -> None:
    cal = calibrate([_with_preds(runs["base-b1"]), _with_preds(runs["gundam-b1"])], [_with_preds(runs["large-b4"])])
    assert cal.gpu_key == "h100-sxm" and cal.software.torch == "2.11.0+cu130"
    unidentified = set(cal.fit.unidentified)
    checked = 0
    for cat, eff in TRUTH.compute_efficiencies.items():
        if f"compute_efficiency[{cat}]" not in unidentified and cat in cal.compute_efficiencies:
            assert cal.compute_efficiency(cat) == pytest.approx(eff, rel=0.02), cat
            checked += 1
    for cat, eff in TRUTH.bandwidth_efficiencies.items():
        if f"bandwidth_efficiency[{cat}]" not in unidentified and cat in cal.bandwidth_efficiencies:
            assert cal.bandwidth_efficiency(cat) == pytest.approx(eff, rel=0.02), cat
            checked += 1
    assert checked >= 8
    assert cal.launch_overhead_s == pytest.approx(TRUTH.launch_overhead_s, rel=0.02)
    held_before = [e for e in cal.fit.before if e.held_out]
    held_after = [e for e in cal.fit.after if e.held_out]
    assert {e.run_id for e in held_after} == {"large-b4"}
    assert max(abs(e.relative_error) for e in held_before) > 0.3  # the pure roofline is far off
    assert max(abs(e.relative_error) for e in held_after) < 0.01  # the calibration carries over


def test_full_size_config_identifies_compute_efficiencies(tmp_path: Path) -> None:
    """With the real widths, vision and long-prompt prefill matmuls are compute-bound: gemm's ce is fitted."""
    fit = [_with_preds(FX.write_calibrated_run(tmp_path / "g", FX.workload("gundam", (1700, 2200), new_tokens=4),
                                               TRUTH, config="default")),
           _with_preds(FX.write_calibrated_run(tmp_path / "b", FX.workload("base", new_tokens=4, batch=2),
                                               TRUTH, config="default"))]
    cal = calibrate(fit)
    assert "compute_efficiency[gemm]" not in cal.fit.unidentified
    assert cal.compute_efficiency("gemm") == pytest.approx(0.7, rel=0.02)
    assert cal.bandwidth_efficiency("gemm") == pytest.approx(0.8, rel=0.02)
    assert max(abs(e.relative_error) for e in cal.fit.after) < 0.01


def test_calibration_file_roundtrip_and_key(tmp_path: Path) -> None:
    staged = attrs.evolve(TRUTH, stage_launch_overhead_s={"decode": 2e-5})
    back = load_calibration(save_calibration(staged, tmp_path / "staged.json"))
    assert back == staged and back.for_stage("decode").launch_overhead_s == 2e-5
    assert back.for_stage("prefill") is back
    path = save_calibration(TRUTH, tmp_path / "cal.json")
    back = load_calibration(path)
    assert back == TRUTH
    with pytest.raises(CalibrationError, match="for GPU 'h100-sxm', not 'a100-sxm4-80gb'"):
        check_applies(back, "a100-sxm4-80gb")
    raw = json.loads(path.read_text())
    raw["schema_version"] = 99
    (tmp_path / "v99.json").write_text(json.dumps(raw))
    with pytest.raises(CalibrationError, match="schema_version 99"):
        load_calibration(tmp_path / "v99.json")
    with pytest.raises(CalibrationError, match="not found"):
        load_calibration(tmp_path / "none.json")


def test_cli_fit_then_compare_calibrated(runs: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "h100.json"
    rc = calibrate_cli.main(["--run", str(runs["base-b1"]), "--run", str(runs["gundam-b1"]),
                             "--held-out", str(runs["large-b4"]), "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "held-out" in text and "rms stage error on held-out runs" in text
    cal = load_calibration(out)
    cmp, _ = build_comparison(load_run(runs["large-b4"]), calibration=cal)
    for s in cmp.stages:
        assert s.calibrated_ratio == pytest.approx(1.0, abs=0.01), s.stage
    udir = tmp_path / "unified"
    assert compare_cli.main(["--run", str(runs["large-b4"]), "--calibration", str(out), "--out", str(tmp_path / "c"),
                             "--unified-dir", str(udir)]) == 0
    capacity = json.loads((udir / "unified_report.json").read_text())["capacity"][0]
    assert capacity["calibrated_pages_per_s"] == pytest.approx(capacity["measured_pages_per_s"], rel=0.01)
    assert capacity["calibrated_pages_per_s"] < capacity["predicted_pages_per_s"]


def test_mixed_gpus_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    other = FX.write_run(tmp_path / "other-gpu", FX.workload(), {s: 1.0 for s in FX.FIXTURE_RATIOS})
    metrics = other / "torch_profiler" / "metrics.json"
    raw = json.loads(metrics.read_text())
    raw["meta"]["gpu_key"] = "a100-sxm4-80gb"
    metrics.write_text(json.dumps(raw))
    from llm_perf_opt.errors import UserError

    with pytest.raises(UserError, match="mix GPUs"):
        calibrate([_with_preds(runs["base-b1"])], [_with_preds(other)])


#: a timeline-model truth: device efficiencies, a SAM device factor, host costs per stage, sync cost,
#: all relative to a host whose probe reads 5 us per tiny op
TIMELINE_TRUTH = attrs.evolve(
    TRUTH, launch_overhead_s=0.0, time_model="timeline", host_probe_us=5.0, host_sync_s=40e-6,
    stage_host_s_per_kernel={"vision.sam": 30e-6, "vision.clip": 18e-6, "projector": 25e-6, "prefill": 21e-6,
                             "decode": 17e-6},
    stage_device_scale={"vision.sam": 1.5})


@pytest.fixture(scope="module")
def timeline_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("timeline-runs")
    t = TIMELINE_TRUTH
    return {
        "base-b1": FX.write_calibrated_run(root / "base-b1", FX.workload("base", new_tokens=24), t,
                                           config="default", host_probe_us=4.0),
        "gundam-b1": FX.write_calibrated_run(root / "gundam-b1", FX.workload("gundam", (1700, 2200), new_tokens=24),
                                             t, config="default", host_probe_us=6.0),
        "small-b4": FX.write_calibrated_run(root / "small-b4", FX.workload("small", (640, 640), batch=4,
                                                                            new_tokens=24),
                                            t, config="default", host_probe_us=8.0),
    }


def test_timeline_fit_recovers_host_costs_and_predicts_a_held_out_run(timeline_runs: dict[str, Path]) -> None:
    from llm_perf_opt.compare.calibrate import calibrate_timeline

    runs = timeline_runs
    cal = calibrate_timeline([_with_preds(runs["base-b1"]), _with_preds(runs["gundam-b1"])],
                             [_with_preds(runs["small-b4"])], sync_s=TIMELINE_TRUTH.host_sync_s)
    assert cal.timeline and cal.launch_overhead_s == 0.0
    assert cal.host_probe_us == pytest.approx(5.0)  # mean probe of the fitted runs
    assert cal.host_probe_exponent == 1.0  # host costs in proportion to the probe
    for stage, cost in TIMELINE_TRUTH.stage_host_s_per_kernel.items():
        assert cal.host_s_per_kernel(stage) == pytest.approx(cost, rel=0.03), stage
    # the device side: efficiencies x the per-stage factor give the held-out run's SAM device time
    from llm_perf_opt.compare.calibrate import _run_blocks

    held_run, held_preds = _with_preds(runs["small-b4"])
    (blocks, _w), = _run_blocks(held_preds, cal)
    modelled = sum(b.device_s for b in blocks.stages["vision.sam"]) * 1e3
    assert held_run.operator_table is not None
    measured = sum(held_run.operator_table.per_pass()["vision.sam"].values())
    assert modelled == pytest.approx(measured, rel=0.03)
    after = {(e.run_id, e.stage): e for e in cal.fit.after}
    held = [e for (rid, _), e in after.items() if rid == "small-b4"]
    assert len(held) == 5
    # another mode, batch and host speed: the fit carries over
    assert max(abs(e.relative_error) for e in held) < 0.03
    assert max(abs(e.relative_error) for e in cal.fit.before if e.held_out) > 0.5


def test_timeline_cli_and_calibrated_compare_at_the_run_host_speed(timeline_runs: dict[str, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tl.json"
    args = ["--run", str(timeline_runs["base-b1"]), "--run", str(timeline_runs["gundam-b1"]), "--out", str(out)]
    assert calibrate_cli.main([*args, "--time-model", "timeline", "--host-sync-us", "40"]) == 0
    assert "timeline calibration" in capsys.readouterr().out
    cal = load_calibration(out)
    cmp, _ = build_comparison(load_run(timeline_runs["small-b4"]), calibration=cal)
    for s in cmp.stages:
        assert s.calibrated_ratio == pytest.approx(1.0, abs=0.03), s.stage
    # refused combinations: one line, exit 2
    assert calibrate_cli.main([*args, "--time-model", "timeline", "--per-stage-launch"]) == 2
    assert "--time-model timeline" in capsys.readouterr().err


def test_timeline_fit_scales_by_the_module_probe_when_asked(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Runs whose host speed follows the module probe while the add_ probe reads the same everywhere:
    a fit on the module probe carries over to a held-out run at another host speed, one on add_ does not."""
    from llm_perf_opt.compare.calibrate import calibrate_timeline

    truth = attrs.evolve(TIMELINE_TRUTH, host_probe="module", host_probe_us=10.0)
    runs = {
        name: FX.write_calibrated_run(tmp_path / name, wl, truth, config="default", host_probe_us=5.0,
                                      module_probe_us=probe)
        for name, wl, probe in (("base-b1", FX.workload("base", new_tokens=24), 8.0),
                                ("gundam-b1", FX.workload("gundam", (1700, 2200), new_tokens=24), 12.0),
                                ("small-b4", FX.workload("small", (640, 640), batch=4, new_tokens=24), 16.0))}
    assert load_run(runs["small-b4"]).probe_us("module") == pytest.approx(16.0)
    assert load_run(runs["small-b4"]).probe_us("add") == pytest.approx(5.0)
    fit = [_with_preds(runs["base-b1"]), _with_preds(runs["gundam-b1"])]
    held = [_with_preds(runs["small-b4"])]
    errors = {}
    for probe in ("module", "add"):
        cal = calibrate_timeline(fit, held, sync_s=truth.host_sync_s, host_probe=probe)
        assert cal.host_probe == probe and cal.host_probe_exponent == 1.0
        errors[probe] = max(abs(e.relative_error) for e in cal.fit.after if e.held_out)
    assert cal.host_probe_us == pytest.approx(5.0)  # the add_ fit's reference: the fitted runs' mean add_ probe
    assert errors["module"] < 0.03
    assert errors["add"] > 0.15  # the held-out run's host is 1.6x the fitted runs' mean: add_ cannot see it
    # a probe asked for by name that a fitted run lacks: one clear error, not a silent unscaled fit
    from llm_perf_opt.errors import UserError

    bare = FX.write_calibrated_run(tmp_path / "no-module", FX.workload("base", new_tokens=24), truth,
                                   config="default", host_probe_us=5.0, module_probe_us=8.0)
    (bare / "torch_profiler" / "passes.jsonl").write_text(
        '{"pass_index": 0, "status": "ok", "host_probe_us": 5.0}\n', encoding="utf-8")
    with pytest.raises(UserError, match="recorded no module host probe"):
        calibrate_timeline([_with_preds(bare), fit[1]], host_probe="module")
    # exponent 0: no scaling, as the add_ fit here
    cal0 = calibrate_timeline(fit, held, sync_s=truth.host_sync_s, host_probe="module", host_probe_exponent=0.0)
    assert max(abs(e.relative_error) for e in cal0.fit.after if e.held_out) > 0.15
    # the CLI writes the probe into the file; compare reads the run's module probe with it
    out = tmp_path / "module.json"
    assert calibrate_cli.main(["--run", str(runs["base-b1"]), "--run", str(runs["gundam-b1"]), "--out", str(out),
                               "--time-model", "timeline", "--host-sync-us", "40", "--host-probe", "module"]) == 0
    assert "host probe (module) 10.00 us/op" in capsys.readouterr().out
    saved = load_calibration(out)
    assert saved.host_probe == "module"
    cmp, _ = build_comparison(load_run(runs["small-b4"]), calibration=saved)
    for s in cmp.stages:
        assert s.calibrated_ratio == pytest.approx(1.0, abs=0.03), s.stage
    # the probe flags belong to a timeline fit: one line, exit 2
    assert calibrate_cli.main(["--run", str(runs["base-b1"]), "--out", str(out), "--host-probe", "module"]) == 2
    assert "--host-probe only applies with --time-model timeline" in capsys.readouterr().err
    assert calibrate_cli.main(["--run", str(runs["base-b1"]), "--out", str(out), "--time-model", "timeline",
                               "--host-probe-exponent", "-1"]) == 2
    assert "exponent must be a finite number >= 0" in capsys.readouterr().err


def test_calibration_refuses_an_unknown_host_probe() -> None:
    with pytest.raises(CalibrationError, match="host_probe must be one of add, module"):
        attrs.evolve(TIMELINE_TRUTH, host_probe="clock")
    data = attrs.evolve(TIMELINE_TRUTH, host_probe="module").to_dict()
    assert Calibration.from_dict(data).host_probe == "module"
    data.pop("host_probe")  # files written before the field: the add_ probe
    assert Calibration.from_dict(data).host_probe == "add"


def test_timeline_fit_needs_device_times(tmp_path: Path) -> None:
    from llm_perf_opt.compare.calibrate import calibrate_timeline
    from llm_perf_opt.errors import UserError

    run = FX.write_calibrated_run(tmp_path / "no-ops", FX.workload(), TRUTH, with_operators=False)
    with pytest.raises(UserError, match="no CUDA operator table"):
        calibrate_timeline([_with_preds(run)])


PRIOR_TRUTH = Calibration(
    gpu_key="h100-sxm", dtype="bf16", default_compute_efficiency=0.8, default_bandwidth_efficiency=0.9,
    time_model="timeline", stage_host_s_per_kernel={s: 20e-6 for s in ("vision.sam", "vision.clip", "projector",
                                                                        "prefill", "decode")},
    host_sync_s=30e-6)


def test_per_kernel_host_cost_becomes_a_cost_per_dispatched_op() -> None:
    from llm_perf_opt.analytic.base import OpGroup
    from llm_perf_opt.analytic.timeline_model import CUDA_LAUNCH_HOST_WEIGHT
    from llm_perf_opt.vocab import OperatorCategory

    stage = OpGroup("decode", Stage.DECODE, weight_dtype_bytes=2)
    stage.op(OperatorCategory.GEMM, launches=80)
    stage.cuda_op(OperatorCategory.GEMM, 20)  # 100 kernels, 20 of them inside other calls
    # 100 kernels at 1 s make 100 s; the model issues 80 ops + 20 * w ops' worth
    per_op = host_s_per_op_from_per_kernel(1.0, stage)
    assert per_op * (80 + 20 * CUDA_LAUNCH_HOST_WEIGHT) == pytest.approx(100.0)


def test_reference_host_cost_is_read_from_the_reference_baseline() -> None:
    import re

    from llm_perf_opt.compare.calibrate import REFERENCE_HOST_S_PER_KERNEL

    text = (Path(__file__).parents[1] / "data" / "gpu-measurements.md").read_text()
    per_token_ms = float(re.search(r"decode: ([\d.]+) ms per token", text).group(1))  # type: ignore[union-attr]
    kernels = float(re.search(r"about (\d+) CUDA kernels per decoded token", text).group(1))  # type: ignore[union-attr]
    assert pytest.approx(per_token_ms * 1e-3 / kernels) == REFERENCE_HOST_S_PER_KERNEL


def test_prior_predicts_a_run_made_with_its_parameters_and_misses_with_others(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llm_perf_opt.hardware import load_catalog, load_ceilings
    from llm_perf_opt.hardware.bench import BenchMethod, MeasuredCeilings, save_ceilings

    run = FX.write_calibrated_run(tmp_path / "base-b1", FX.workload("base", new_tokens=24), PRIOR_TRUTH,
                                  config="default")
    spec = load_catalog().get("h100-sxm")
    ceilings = save_ceilings(MeasuredCeilings(
        gpu_key="h100-sxm", device_name="NVIDIA H100 80GB HBM3",
        matmul_flops_per_s={"bf16": 0.8 * spec.peak_flops_per_s("bf16")},
        memory_bandwidth_bytes_per_s=0.9 * spec.memory_bandwidth_bytes_per_s,
        method=BenchMethod(matmul_size=8192, warmup=1, repeats=3, inner=1, copy_buffer_bytes=1 << 30)),
        tmp_path / "ceilings.json")
    out = tmp_path / "prior.json"
    base = ["--prior", "--run", str(run), "--out", str(out), "--ceilings", str(ceilings)]
    # --host-us-per-kernel counts CUDA kernels of a decode step; the model's cost per dispatched op is higher
    # by K / (K - 0.7 K_c - X) of the step it was measured on (one Base page, batch 1, whatever the run's
    # workload): ask for the per-kernel cost that makes it 20 us per op
    _run, preds = _with_preds(run)
    measured_on = OCRWorkloadProfile.create(
        profile_id="prior", mode="base", image_width_px=calibrate_cli.PRIOR_PAGE_PX[0],
        image_height_px=calibrate_cli.PRIOR_PAGE_PX[1], prompt_text_tokens=calibrate_cli.PRIOR_PROMPT_TOKENS,
        max_new_tokens=64, dtype=preds[0][0].workload.dtype, attention="eager", experts="grouped_mm")
    decode = AnalyticModel(preds[0][0].model.config, measured_on).stages[Stage.DECODE]
    per_kernel_us = 20.0 / host_s_per_op_from_per_kernel(1.0, decode)
    assert 0.8 < per_kernel_us / 20.0 < 1.0
    assert calibrate_cli.main([*base, "--host-us-per-kernel", f"{per_kernel_us:.6f}", "--host-sync-us", "30"]) == 0
    assert "prior (nothing fitted): 0.800 of the datasheet FLOP rate, 0.900 of its bandwidth" in capsys.readouterr().out
    cal = load_calibration(out)
    assert cal.host_s_per_kernel("vision.sam") == pytest.approx(20e-6, rel=1e-5)
    assert cal.timeline and cal.fit.fitted_runs == () and len(cal.fit.after) == 5
    # a run at another batch and page gets the same cost per op: the conversion is the measured step's
    run4 = FX.write_calibrated_run(tmp_path / "base-b4", FX.workload("base", (800, 1100), batch=4, new_tokens=24),
                                   PRIOR_TRUTH, config="default")
    out4 = tmp_path / "prior-b4.json"
    assert calibrate_cli.main(["--prior", "--run", str(run4), "--out", str(out4), "--ceilings", str(ceilings),
                               "--host-us-per-kernel", f"{per_kernel_us:.6f}", "--host-sync-us", "30"]) == 0
    assert load_calibration(out4).host_s_per_kernel("decode") == pytest.approx(20e-6, rel=1e-5)
    assert max(abs(e.relative_error) for e in cal.fit.after) < 0.03
    # half the host cost: the launch-bound stages come out about half as long
    assert calibrate_cli.main([*base, "--host-us-per-kernel", f"{per_kernel_us / 2:.6f}", "--host-sync-us", "30"]) == 0
    decode = next(e for e in load_calibration(out).fit.after if e.stage == "decode")
    assert -0.6 < decode.relative_error < -0.3
    capsys.readouterr()
    other = tmp_path / "other.json"
    save_ceilings(attrs.evolve(load_ceilings(ceilings), gpu_key="h200"), other)
    assert calibrate_cli.main(["--prior", "--run", str(run), "--out", str(out), "--ceilings", str(other)]) == 2
    assert "measured on 'h200', the runs are on 'h100-sxm'" in capsys.readouterr().err



def test_prior_without_runs_is_written_for_a_catalogue_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llm_perf_opt.compare.calibrate import REFERENCE_HOST_S_PER_KERNEL
    from llm_perf_opt.runners import what_if_cli

    out = tmp_path / "b200-prior.json"
    assert calibrate_cli.main(["--prior", "--gpu", "b200", "--out", str(out)]) == 0
    assert "prior for b200 bf16 (nothing fitted, no run)" in capsys.readouterr().out
    cal = load_calibration(out)
    assert cal.gpu_key == "b200" and cal.timeline and cal.fit.before == () and cal.fit.after == ()
    # the reference per-kernel cost, spread over the dispatched ops of the default decode step
    assert REFERENCE_HOST_S_PER_KERNEL < cal.host_s_per_kernel("prefill") < 1.3 * REFERENCE_HOST_S_PER_KERNEL
    # capacity planning on that GPU from a saved report, with the prior
    report = Path(__file__).parents[1] / "data" / "compare" / "analytic-base-b1.json"
    assert what_if_cli.main(["--report", str(report), "--gpu", "b200", "--calibration", str(out),
                             "--calibrated", "both", "--out", str(tmp_path), "--name", "plan", "--quiet"]) == 0
    rows = {r["calibrated"]: r for r in json.loads((tmp_path / "plan.json").read_text())["rows"]}
    # the prior adds the host's issue time the roofline does not have
    assert rows[True]["decode_ms"] > 2 * rows[False]["decode_ms"]
    capsys.readouterr()
    # no run and no GPU, or an unknown GPU: one line, exit 2
    assert calibrate_cli.main(["--prior", "--out", str(out)]) == 2
    assert "--prior --gpu KEY" in capsys.readouterr().err
    assert calibrate_cli.main(["--prior", "--gpu", "no-such-gpu", "--out", str(out)]) == 2
    assert "unknown GPU 'no-such-gpu'" in capsys.readouterr().err
    # flags that would do nothing are refused, not ignored
    assert calibrate_cli.main(["--prior", "--gpu", "b200", "--shared", "--out", str(out)]) == 2
    assert "--prior fits nothing: drop --shared" in capsys.readouterr().err
    assert calibrate_cli.main(["--run", str(report.parent / "run-base-b1"), "--ceilings", str(out), "--out",
                               str(out)]) == 2
    assert "--ceilings only applies with --prior or --time-model timeline" in capsys.readouterr().err


def test_ceilings_access_patterns_go_into_the_prior_and_the_timeline_fit(
        timeline_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from llm_perf_opt.compare import calibrate as calibrate_mod
    from llm_perf_opt.compare.calibrate import _run_blocks, _stage_device_ms
    from llm_perf_opt.hardware import load_catalog
    from llm_perf_opt.hardware.bench import BenchMethod, MeasuredCeilings, save_ceilings

    spec = load_catalog().get("h100-sxm")
    bw = 0.9 * spec.memory_bandwidth_bytes_per_s
    plain = MeasuredCeilings(gpu_key="h100-sxm", device_name="NVIDIA H100 80GB HBM3",
                             matmul_flops_per_s={"bf16": 0.8 * spec.peak_flops_per_s("bf16")},
                             memory_bandwidth_bytes_per_s=bw,
                             method=BenchMethod(matmul_size=8192, warmup=1, repeats=3, inner=1,
                                                copy_buffer_bytes=1 << 30))
    no_patterns = save_ceilings(plain, tmp_path / "plain.json")
    slow = {f"{p}@{s}": 0.25 * bw for p in ("outer_add", "permuted_copy", "cast_up") for s in (14, 64)}
    with_patterns = save_ceilings(attrs.evolve(plain, pattern_bandwidth_bytes_per_s=slow, kernel_floor_s=2e-6,
                                               kernel_gap_s=1e-6), tmp_path / "pat.json")
    runs = ["--run", str(timeline_runs["base-b1"]), "--run", str(timeline_runs["gundam-b1"])]
    # the prior takes the ratios to the copy bandwidth; SAM's device time grows with them, decode's does not
    out_plain, out_pat = tmp_path / "prior-plain.json", tmp_path / "prior-pat.json"
    assert calibrate_cli.main([*runs, "--prior", "--ceilings", str(no_patterns), "--out", str(out_plain)]) == 0
    assert calibrate_cli.main([*runs, "--prior", "--ceilings", str(with_patterns), "--out", str(out_pat)]) == 0
    cal_plain, cal_pat = load_calibration(out_plain), load_calibration(out_pat)
    assert cal_plain.pattern_bandwidth_ratios == {} and cal_plain.kernel_floor_s == 0.0
    assert cal_pat.pattern_bandwidth_ratios == {k: pytest.approx(0.25) for k in slow}
    assert cal_pat.kernel_floor_s == 2e-6 and cal_pat.kernel_gap_s == 1e-6 and cal_plain.kernel_gap_s == 0.0
    _run, preds = _with_preds(timeline_runs["base-b1"])
    (bp, _), = _run_blocks(preds, cal_plain)
    (bq, _), = _run_blocks(preds, cal_pat)

    def dev(b, stage: str) -> float:
        return sum(x.device_s for x in b.stages[stage])

    assert dev(bq, "vision.sam") > 1.5 * dev(bp, "vision.sam")
    # decode has no pattern: only the floor's 2 us per kernel differs
    kernels = sum(x.kernels for x in bq.stages["decode"])
    assert dev(bq, "decode") == pytest.approx(dev(bp, "decode") + kernels * 2e-6)
    # a timeline fit with --ceilings keeps that device model (efficiencies, patterns) and fits only the
    # per-stage device factors: summed over the fitted runs, the modelled device time of every stage is what
    # their operator tables measured (the gap between queued kernels is not in those times, nor in the factors)
    out_fit = tmp_path / "fit.json"
    # the host terms are fitted with the device's gap in the simulated pass
    fit_gaps: list[float] = []
    real_fit = calibrate_mod.fit_host_terms

    def spy(*a: Any, **k: Any) -> Any:
        fit_gaps.append(k.get("gap_s", 0.0))
        return real_fit(*a, **k)

    monkeypatch.setattr(calibrate_mod, "fit_host_terms", spy)
    assert calibrate_cli.main([*runs, "--time-model", "timeline", "--ceilings", str(with_patterns),
                               "--out", str(out_fit)]) == 0
    assert fit_gaps == [1e-6]
    fit = load_calibration(out_fit)
    assert fit.pattern_bandwidth_ratios == cal_pat.pattern_bandwidth_ratios
    assert fit.default_bandwidth_efficiency == pytest.approx(0.9) and fit.bandwidth_efficiencies == {}
    assert fit.kernel_floor_s == 2e-6 and fit.kernel_gap_s == 1e-6
    assert any("not fitted" in u for u in fit.fit.unidentified)
    for stage in ("vision.sam", "prefill", "decode"):
        modelled = measured = 0.0
        for name in ("base-b1", "gundam-b1"):
            run, preds = _with_preds(timeline_runs[name])
            modelled += _stage_device_ms(_run_blocks(preds, fit))[stage]
            measured += sum(run.operator_table.per_pass()[stage].values())  # type: ignore[union-attr]
        assert modelled == pytest.approx(measured, rel=1e-6), stage
    # the fitted host terms still follow the runs (the truth's device model differs, the stage times fit)
    assert max(abs(e.relative_error) for e in fit.fit.after) < 0.15
    capsys.readouterr()
    # --ceilings fixes the device efficiencies: flags that would shape their fit are refused
    assert calibrate_cli.main([*runs, "--time-model", "timeline", "--ceilings", str(no_patterns), "--shared",
                               "--out", str(out_fit)]) == 2
    assert "drop --shared and --max-efficiency" in capsys.readouterr().err
