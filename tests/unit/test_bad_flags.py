"""Flags that contradict each other, do nothing in their context, or name a path where a name belongs: one
line on stderr and exit status 2 before any work, like every other bad input."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from compare_fixtures import DATA

from llm_perf_opt.analytic.calibration import Calibration, CalibrationError, save_calibration
from llm_perf_opt.compare.analytic import load_analytic_report
from llm_perf_opt.compare.whatif import Scenario, run_what_if
from llm_perf_opt.runners import (
    calibrate_cli,
    compare_cli,
    dsocr_analyzer_main,
    llm_profile_runner,
    what_if_cli,
)

REPORT = DATA / "analytic-base-b1.json"


def _one_line(main: Callable[[Sequence[str]], int], argv: Sequence[str], capsys: pytest.CaptureFixture[str],
              needle: str) -> None:
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse's own checks
        rc = int(exc.code or 0)
    err = capsys.readouterr().err.strip()
    assert rc == 2, (rc, err)
    assert len(err.splitlines()) == 1 and needle in err, err


def test_usage_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line(what_if_cli.main, ["--report", str(REPORT), "--jobs", "-3"], capsys, "argument --jobs: expected an integer >= 0")
    _one_line(what_if_cli.main, ["--report", str(REPORT), "--host-probe-us", "-1"], capsys, "--host-probe-us")
    _one_line(dsocr_analyzer_main.main, ["--image-size", "100"], capsys, "is not WIDTHxHEIGHT")
    _one_line(calibrate_cli.main, ["--run"], capsys, "expected one argument")


def test_what_if_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cal = save_calibration(Calibration(gpu_key="h100-sxm", dtype="bf16"), tmp_path / "c.json")
    base = ["--report", str(REPORT), "--out", str(tmp_path)]
    _one_line(what_if_cli.main, [*base, "--name", "../w"], capsys, "a file stem")
    _one_line(what_if_cli.main, [*base, "--calibration", str(cal), "--calibrated", "off"], capsys,
              "--calibrated off leaves --calibration unused")
    _one_line(what_if_cli.main, [*base, "--calibration", str(cal), "--dtype", "fp16"], capsys,
              "calibration is for dtype 'bf16', not 'fp16'")
    assert not (tmp_path.parent / "w.csv").exists()
    report = load_analytic_report(REPORT)
    with pytest.raises(CalibrationError, match="for dtype 'fp16'"):
        run_what_if(report, [Scenario(calibrated=True)], calibration=Calibration(gpu_key="h100-sxm", dtype="fp16"))


def test_compare_and_calibrate_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(DATA / "run-base-b1", run)
    _one_line(compare_cli.main, ["--run", str(run), "--no-unified", "--unified-dir", str(tmp_path / "u")], capsys,
              "--unified-dir")
    assert not (tmp_path / "u").exists()
    out = str(tmp_path / "c.json")
    _one_line(calibrate_cli.main, ["--run", str(run), "--host-sync-us", "50", "--out", out], capsys,
              "--host-sync-us only applies with --time-model timeline or --prior")
    _one_line(calibrate_cli.main, ["--run", str(run), "--per-stage-launch", "--no-launch", "--out", out], capsys,
              "give one")
    _one_line(calibrate_cli.main, ["--run", str(run), "--gpu", "h100-sxm", "--out", out], capsys,
              "--gpu only applies with --prior")
    assert not Path(out).exists()


def test_analyze_prompt_tokens_include_bos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line(dsocr_analyzer_main.main, ["--device", "none", "--prompt-tokens", "0", "--output-dir",
                                         str(tmp_path)], capsys, "prompt_text_tokens must be >= 1 (BOS included)")


def test_analyze_takes_the_other_commands_flag_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # profile's and what-if's names for the same settings are the same flags here; the resolution mode is not --mode
    import argparse

    parser = argparse.ArgumentParser()
    dsocr_analyzer_main.add_arguments(parser)
    ours = parser.parse_args(["--model", "tiny", "--prompt-tokens", "7", "--attention", "eager", "--experts", "eager"])
    theirs = parser.parse_args(["--config", "tiny", "--prompt-text-tokens", "7", "--attn-implementation", "eager",
                                "--experts-implementation", "eager"])
    assert vars(ours) == vars(theirs) and ours.model == "tiny" and ours.prompt_tokens == 7
    _one_line(dsocr_analyzer_main.main, ["--mode", "base", "--output-dir", str(tmp_path)], capsys,
              "for the resolution mode give --resolution-mode base")


def test_profile_flags_checked_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--device", "cpu", "--config", "tiny", "--mode", "tiny", "--dtype", "fp32", "--max-new-tokens", "2",
            "--repeats", "1", "--warmup", "0", "--output-dir", str(tmp_path / "out")]
    _one_line(llm_profile_runner.main, [*base, "--synthetic", "1", "--run-id", "../escape"], capsys,
              "--run-id '../escape'")
    _one_line(llm_profile_runner.main, [*base, "--synthetic", "1", "--run-id", "has space"], capsys, "--run-id")
    _one_line(llm_profile_runner.main, [*base, "--synthetic", "1", "--dpi", "0"], capsys,
              "--dpi 0 applies to --pdf pages")
    _one_line(llm_profile_runner.main, [*base, "--synthetic", "1", "--batch-size", "4"], capsys,
              "--batch-size 4: more than the 1 page(s)")
    # measured ceilings are of one GPU: not another --gpu's, and on a CPU run only with the --gpu they are of
    h200 = str(Path(__file__).resolve().parents[2] / "reports" / "hardware" / "h200" / "hw-ceilings.json")
    _one_line(llm_profile_runner.main, [*base, "--synthetic", "1", "--ceilings", h200, "--gpu", "h100-sxm"], capsys,
              "were measured on 'h200', not on --gpu 'h100-sxm'")
    _one_line(llm_profile_runner.main, [*base, "--synthetic", "1", "--ceilings", h200], capsys,
              "--ceilings on a cpu run needs --gpu KEY")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out").exists()


def test_prompt_tokens_and_calibration_dtype_checked_everywhere(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(DATA / "run-base-b1", run)
    for main, argv in ((what_if_cli.main, ["--report", str(REPORT), "--prompt-text-tokens", "0",
                                           "--out", str(tmp_path)]),
                       (compare_cli.main, ["--run", str(run), "--prompt-text-tokens", "0"]),
                       (calibrate_cli.main, ["--run", str(run), "--prompt-text-tokens", "0",
                                             "--out", str(tmp_path / "c.json")])):
        _one_line(main, argv, capsys, ">= 1 (BOS included)")
    with pytest.raises(CalibrationError, match="calibration: dtype"):
        Calibration(gpu_key="h100-sxm", dtype="bfloat-16")
