"""The README's main command on a fresh process: no arguments besides --mode and an output folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llm_perf_opt import cli
from llm_perf_opt.data.analytic import AnalyticModelReport
from llm_perf_opt.data.io import load_report
from llm_perf_opt.runners import dsocr_analyzer_main


def test_main_command_writes_report_and_prints_its_path(tmp_path):
    import os

    import llm_perf_opt

    out = tmp_path / "run"
    env = dict(os.environ)
    src = str(Path(llm_perf_opt.__file__).parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "llm_perf_opt.runners.dsocr_analyzer_main", "--mode", "analytic",
                           "--output-dir", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path == out / "static_analysis" / "analytic_model" / "report.json"
    report = load_report(path, AnalyticModelReport)
    assert report.gpu_key == "h100-sxm" and report.workload.profile_id == "dsocr-standard-v1"
    assert any("parameters checked against the executable model on meta" in n for n in report.notes)
    assert (path.parent / "report.yaml").exists() and (path.parent / "layers" / "summary.md").exists()


def test_default_output_dir_is_a_new_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert dsocr_analyzer_main.main(["--device", "none", "--workload-profile-id", "dsocr-tiny-v1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("tmp/profile-output/") and last.endswith("static_analysis/analytic_model/report.json")
    assert (tmp_path / last).exists()


def test_front_door_names_this_runner():
    module, _help = cli.SUBCOMMANDS["analyze"]
    assert module == "llm_perf_opt.runners.dsocr_analyzer_main"
    for name in ("add_arguments", "run", "main"):
        assert callable(getattr(dsocr_analyzer_main, name))
