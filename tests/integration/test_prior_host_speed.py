"""calibrate --prior --host-speed on committed H200 runs: a prior that follows each run's host probe
(results-h200 section 16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_perf_opt.analytic.calibration import load_calibration
from llm_perf_opt.compare.calibrate import host_s_per_op_from_per_kernel
from llm_perf_opt.hardware.host_speed import load_host_speed
from llm_perf_opt.runners import calibrate_cli

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "reports" / "profile"
HW = ROOT / "reports" / "hardware" / "h200"
STAMP = "20261203T183902Z"  # set 12: Small b1's host was slow (its probes read 10.3 us, Base b1's 7.7)


def _decode(cal_path: Path) -> dict[str, float]:
    """run id -> the prior's relative decode error."""
    return {e.run_id: e.relative_error for e in load_calibration(cal_path).fit.after if e.stage == "decode"}


def test_the_prior_follows_each_runs_module_probe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.compare.runs import load_run
    from llm_perf_opt.runners.compare_cli import predictions_for_run
    from llm_perf_opt.vocab import Stage

    speed_path = HW / "host-speed-decode-1.json"
    runs = ["--run", str(RUNS / f"h200-base-b1-{STAMP}"), "--run", str(RUNS / f"h200-small-b1-{STAMP}")]
    common = [*runs, "--config", "default", "--prior", "--ceilings", str(HW / "hw-ceilings.json")]
    const, follow = tmp_path / "constant.json", tmp_path / "module.json"
    assert calibrate_cli.main([*common, "--out", str(const)]) == 0
    assert calibrate_cli.main([*common, "--host-speed", str(speed_path), "--host-probe", "module",
                               "--out", str(follow)]) == 0
    capsys.readouterr()
    module = load_host_speed(speed_path).probes["module"]
    cal = load_calibration(follow)
    assert cal.host_probe == "module" and cal.host_probe_us == pytest.approx(module.median_us)
    assert cal.host_probe_exponent == 1.0
    # the host cost per kernel is the file's: module median x decode ratio, spread over dispatched ops
    run = load_run(RUNS / f"h200-base-b1-{STAMP}")
    rep = predictions_for_run(run, config="default")[0][0][0]
    decode_stage = AnalyticModel(rep.model.config, rep.workload).stages[Stage.DECODE]
    assert module.us_per_launch is not None
    per_op = host_s_per_op_from_per_kernel(module.us_per_launch * 1e-6, decode_stage)
    assert cal.host_s_per_kernel("decode") == pytest.approx(per_op, rel=1e-9)
    # the constant prior misses Small b1's slow host; the one scaled by each run's probe does not
    before, after = _decode(const), _decode(follow)
    small = f"h200-small-b1-{STAMP}"
    assert before[small] < -0.25 and abs(after[small]) < 0.25
    assert all(abs(e) < 0.25 for e in after.values())


def test_host_speed_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = ["--run", str(RUNS / f"h200-base-b1-{STAMP}"), "--config", "default"]
    out = str(tmp_path / "prior.json")
    speed = str(HW / "host-speed-decode-1.json")
    no_ratio = RUNS / "h200-host-probe" / f"probe-before-{STAMP}.json"  # hw probe without --decode-step
    cpu = tmp_path / "cpu.json"
    data = json.loads(Path(speed).read_text())
    cpu.write_text(json.dumps({**data, "device": "cpu", "device_name": "cpu"}))
    other = tmp_path / "h100.json"
    other.write_text(json.dumps({**data, "device_name": "NVIDIA H100 80GB HBM3"}))
    cases = [
        ([*run, "--host-speed", speed, "--out", out], "--host-speed only applies with --prior"),
        ([*run, "--prior", "--host-speed", speed, "--host-us-per-kernel", "20", "--out", out],
         "drop --host-us-per-kernel"),
        ([*run, "--prior", "--host-probe", "module", "--out", out], "or --prior --host-speed"),
        ([*run, "--prior", "--host-speed", str(no_ratio), "--out", out], "hw probe --decode-step"),
        ([*run, "--prior", "--host-speed", str(cpu), "--out", out], "not a GPU"),
        ([*run, "--prior", "--host-speed", str(other), "--out", out], "probed on 'NVIDIA H100 80GB HBM3'"),
        ([*run, "--prior", "--host-speed", str(tmp_path / "missing.json"), "--out", out], "not found"),
    ]
    for argv, message in cases:
        assert calibrate_cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (argv, err)
