"""dsocr_analyzer_main --profile-run-id: the analytic report of a Stage 1 run's own workload, in its folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llm_perf_opt.compare.runs import load_run, run_workloads
from llm_perf_opt.data.analytic import AnalyticModelReport
from llm_perf_opt.data.io import load_report
from llm_perf_opt.runners import dsocr_analyzer_main

RUN = Path(__file__).resolve().parents[1] / "data" / "compare" / "run-base-b1"


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    dst = tmp_path / "run-base-b1"
    shutil.copytree(RUN, dst)
    return dst


def test_report_of_the_runs_workload_with_measured_total(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dsocr_analyzer_main.main(["--profile-run-id", str(run_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    folder = run_dir / "static_analysis" / "analytic_model"
    assert out.strip().splitlines()[-1] == str(folder / "report.json")
    report = load_report(folder / "report.json", AnalyticModelReport)
    run = load_run(run_dir)
    (workload, _), = run_workloads(run)
    for name in ("mode", "tile_rows", "tile_cols", "prompt_text_tokens", "max_new_tokens", "batch_size", "dtype",
                 "attention", "experts"):
        assert getattr(report.workload, name) == getattr(workload, name), name
    assert report.gpu_key == run.gpu_key
    assert any("parameters checked" in n for n in report.notes)
    summary = json.loads((folder / "summary.json").read_text())
    measured = run.measured_total_ms()
    assert measured is not None
    assert summary["measured_total_time_ms"] == pytest.approx(measured)
    assert summary["predicted_vs_measured_ratio"] == pytest.approx(summary["predicted_total_time_ms"] / measured)
    cmp = json.loads((run_dir / "compare" / "compare.json").read_text())
    assert cmp["run_id"] == run.run_id
    assert [s["stage"] for s in cmp["stages"]][0] == "vision.sam"


def test_workload_flags_are_refused_with_a_run(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dsocr_analyzer_main.main(["--profile-run-id", str(run_dir), "--batch-size", "4", "--gpu", "h100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "drop --batch-size, --gpu" in err[0]
    assert dsocr_analyzer_main.main(["--profile-run-id", str(run_dir), "--no-repeat-ngram-size", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "drop --no-repeat-ngram-size" in err[0]
    assert not (run_dir / "static_analysis").exists()


def test_missing_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dsocr_analyzer_main.main(["--profile-run-id", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_calibration_adds_calibrated_columns_to_the_comparison(run_dir: Path, tmp_path: Path) -> None:
    from llm_perf_opt.analytic.calibration import Calibration, save_calibration

    cal = save_calibration(Calibration(gpu_key="h100-sxm", default_compute_efficiency=0.5,
                                       default_bandwidth_efficiency=0.5, launch_overhead_s=5e-6),
                           tmp_path / "cal.json")
    assert dsocr_analyzer_main.main(["--profile-run-id", str(run_dir), "--device", "none",
                                     "--calibration", str(cal)]) == 0
    cmp = json.loads((run_dir / "compare" / "compare.json").read_text())
    for s in cmp["stages"]:
        assert s["calibrated_ms"] is not None and s["calibrated_ms"] > s["predicted_ms"], s["stage"]
    # the written report stays the pure roofline that compare and what-if start from
    report = load_report(run_dir / "static_analysis" / "analytic_model" / "report.json", AnalyticModelReport)
    assert not report.peaks.efficiencies and not report.peaks.launch_overhead_ms
