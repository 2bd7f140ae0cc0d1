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
    out = capsys.readouterr().out
    assert f"host costs from {speed_path} at its module probe of " in out
    assert f"{speed_path} records no GPU UUID" in out  # written before files named their machine
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


def test_a_sam_pass_in_the_file_prices_sams_ops_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.timeline_model import stage_host_work
    from llm_perf_opt.data.analytic import OCRWorkloadProfile
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
    from llm_perf_opt.vocab import Stage

    with_sam, without = HW / "host-speed-decode-3.json", HW / "host-speed-decode-1.json"
    module = load_host_speed(with_sam).probes["module"]
    assert module.sam_mode == "tiny" and module.sam_ratio is not None and module.sam_launches
    assert load_host_speed(without).probes["module"].sam_ratio is None
    runs = ["--run", str(RUNS / f"h200-small-b1-{STAMP}")]
    outs = {}
    for name, speed in (("sam", with_sam), ("decode-only", without)):
        outs[name] = tmp_path / f"{name}.json"
        assert calibrate_cli.main([*runs, "--config", "default", "--prior", "--ceilings", str(HW / "hw-ceilings.json"),
                                   "--host-speed", str(speed), "--host-probe", "module", "--host-sync-us", "30",
                                   "--out", str(outs[name])]) == 0
    capsys.readouterr()
    cal = load_calibration(outs["sam"])
    # the SAM pass's host time at the probe's median, less the syncs charged on their own, over SAM's ops
    wl = OCRWorkloadProfile.create(profile_id="t", mode="tiny", image_width_px=1240, image_height_px=1754,
                                   prompt_text_tokens=9, max_new_tokens=1, dtype="bf16", attention="eager",
                                   experts="grouped_mm")
    ops, syncs = stage_host_work(AnalyticModel(DeepseekOCRConfig.default(), wl).stages[Stage.VISION_SAM])
    expected = (module.sam_ratio * module.median_us * module.sam_launches - syncs * 30.0) * 1e-6 / ops
    assert cal.host_s_per_kernel("vision.sam") == pytest.approx(expected, rel=1e-9)
    # on the H200 a SAM op costs the host more than a decode op; the other stages keep the decode figure
    assert 1.0 < cal.host_s_per_kernel("vision.sam") / cal.host_s_per_kernel("decode") < 2.0
    assert cal.host_s_per_kernel("vision.clip") == cal.host_s_per_kernel("decode")
    # Small b1's host-bound SAM comes closer (set 12: -41% -> -33%); still short, as docs/results-h200 says

    def sam_error(path: Path) -> float:
        return next(e.relative_error for e in load_calibration(path).fit.after if e.stage == "vision.sam")

    assert sam_error(outs["decode-only"]) < sam_error(outs["sam"]) < 0


def test_the_prior_says_which_runs_ran_on_the_files_machine(tmp_path: Path) -> None:
    from llm_perf_opt.compare.runs import load_run

    runs = [load_run(RUNS / f"h200-{m}-{STAMP}") for m in ("base-b1", "small-b1")]
    uuid, _cpu = runs[0].machine()
    env = json.loads((RUNS / f"h200-base-b1-{STAMP}" / "torch_profiler" / "env.json").read_text())
    assert uuid == env["gpu"]["uuid"] and runs[1].machine()[0] == uuid  # one session, one machine
    raw = json.loads((HW / "host-speed-decode-1.json").read_text())
    path = tmp_path / "speed.json"
    path.write_text(json.dumps({**raw, "gpu_uuid": uuid, "cpu_model": "Test CPU"}))
    line = calibrate_cli.machine_match_line(path, runs)
    assert line == f"{path} was probed on {uuid} (Test CPU); 2 of 2 runs ran on that machine"
    path.write_text(json.dumps({**raw, "gpu_uuid": "GPU-another"}))
    assert calibrate_cli.machine_match_line(path, runs).endswith("0 of 2 runs ran on that machine, 2 on another")


def test_several_files_pool_their_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import statistics

    stamp = "20261204T112529Z"  # set 14, with files 7 and 8 taken on its machine before and after it
    files = [HW / "host-speed-decode-7.json", HW / "host-speed-decode-8.json"]
    modules = [load_host_speed(f).probes["module"] for f in files]
    out = tmp_path / "pooled.json"
    argv = ["--run", str(RUNS / f"h200-small-b1-{stamp}"), "--config", "default", "--prior", "--ceilings",
            str(HW / "hw-ceilings.json"), "--host-probe", "module", "--out", str(out), "--host-speed"]
    assert calibrate_cli.main([*argv, *map(str, files)]) == 0
    text = capsys.readouterr().out
    samples = [x for m in modules for x in m.samples_us]
    sam = statistics.median([x for m in modules for x in m.sam_ratio_samples or []])
    decode = statistics.median([x for m in modules for x in m.decode_ratio_samples or []])
    assert (f"pooled 2 host-speed files ({len(samples)} module samples); per file -> pooled: decode ratio "
            f"{modules[0].decode_ratio:.3f}, {modules[1].decode_ratio:.3f} -> {decode:.3f}; SAM ratio "
            f"{modules[0].sam_ratio:.3f}, {modules[1].sam_ratio:.3f} -> {sam:.3f}") in text
    uuid = json.loads(files[0].read_text())["gpu_uuid"]
    assert (f"the 2 host-speed files were probed on 1 known machine(s) ({uuid}); 1 of 1 runs ran on one of them"
            in text)
    cal = load_calibration(out)
    assert cal.host_probe_us == pytest.approx(statistics.median(samples))
    # the pooled prior lies between the two files' own priors
    singles = []
    for i, f in enumerate(files):
        assert calibrate_cli.main([*argv[:-3], "--out", str(tmp_path / f"{i}.json"), "--host-speed", str(f)]) == 0
        singles.append(load_calibration(tmp_path / f"{i}.json").host_s_per_kernel("decode"))
    assert min(singles) < cal.host_s_per_kernel("decode") < max(singles)
    capsys.readouterr()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(files[1].read_text()), "torch_version": "2.99.0"}))
    assert calibrate_cli.main([*argv, str(files[0]), str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{other}: its torch_version '2.99.0' is not" in err
