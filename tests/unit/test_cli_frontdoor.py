"""The `llm-perf-opt` front door: every runner is wired, every flag explained, UserError is one line."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import llm_perf_opt
from llm_perf_opt import cli
from llm_perf_opt.data import LLMProfileReport, load_report
from llm_perf_opt.errors import UserError


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_every_subcommand_has_a_runner_module(name: str) -> None:
    module = importlib.import_module(cli.SUBCOMMANDS[name][0])
    for attr in ("add_arguments", "run", "main"):
        assert callable(getattr(module, attr, None)), f"{module.__name__} lacks {attr}()"


def _walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _walk(sub, f"{path} {name}")
            continue
        if not (action.help or "").strip():
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_flag_has_help() -> None:
    parser = cli.build_parser()
    assert _walk(parser, "llm-perf-opt") == []


def test_user_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    def bad() -> int:
        raise UserError("report.json: field meta.batch_size: 0 must be >= 1")

    assert cli.run_guarded(bad, "prog") == 2
    err = capsys.readouterr().err
    assert err == "prog: error: report.json: field meta.batch_size: 0 must be >= 1\n"


def test_loader_error_through_the_guard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "report.json"
    path.write_text('{"schema_version": "llm-perf-opt.profile-report/1", "meta": {')
    assert cli.run_guarded(lambda: load_report(path, LLMProfileReport) and 0, "llm-perf-opt") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"llm-perf-opt: error: {path}: not valid JSON")
    assert "\n" not in err and "Traceback" not in err


def test_console_help_runs() -> None:
    src = str(Path(llm_perf_opt.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "llm_perf_opt.cli", "--help"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "usage: llm-perf-opt" in proc.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"schema_version": "llm-perf-opt.analytic-report/1", "report_id": ', "not valid JSON"),
        ('{"schema_version": "llm-perf-opt.analytic-report/0"}', "field schema_version: 'llm-perf-opt.analytic-report/0'"),
        ('{"schema_version": "llm-perf-opt.analytic-report/1"}', "field report_id: required field missing"),
    ],
)
def test_bad_report_through_a_real_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                              expected: str) -> None:
    path = tmp_path / "report.json"
    path.write_text(content)
    assert cli.main(["what-if", "--report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"llm-perf-opt: error: {path}: ") and expected in err, err


NO_TORCH = ("loaded = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "assert not loaded, loaded\n")


def _in_a_fresh_interpreter(code: str) -> None:
    """Run ``code`` in a new Python with this tree's package on the path; its failure fails the test."""
    env = dict(os.environ, PYTHONPATH=str(Path(llm_perf_opt.__file__).parents[1]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_cpu_only_commands_run_without_torch_or_transformers(tmp_path: Path) -> None:
    # analyze (analytic), compare, calibrate and what-if are arithmetic on reports: a fresh interpreter that
    # imports their runners and runs an analysis must not load torch or transformers (seconds per command)
    code = (
        "import sys\n"
        "import llm_perf_opt.runners.compare_cli, llm_perf_opt.runners.calibrate_cli\n"
        "import llm_perf_opt.runners.what_if_cli\n"
        "from llm_perf_opt.runners import dsocr_analyzer_main\n"
        f"rc = dsocr_analyzer_main.main(['--device', 'none', '--workload-profile-id', 'dsocr-small-v1', "
        f"'--gpu', 'h100-sxm', '--output-dir', {str(tmp_path)!r}])\n"
        "assert rc == 0, rc\n"
        + NO_TORCH
    )
    _in_a_fresh_interpreter(code)
    assert (tmp_path / "static_analysis" / "analytic_model" / "report.json").is_file()


def test_the_front_door_imports_only_the_named_runner(tmp_path: Path) -> None:
    # `llm-perf-opt what-if ...` and `llm-perf-opt --help` must not load the Stage 1 runner's torch and
    # transformers (4 s of imports on a 2-core machine before this); `profile --help` still gets its own flags
    bad = tmp_path / "report.json"
    bad.write_text('{"schema_version": "llm-perf-opt.analytic-report/1"}')
    code = (
        "import contextlib, io, sys\n"
        "from llm_perf_opt import cli\n"
        "err = io.StringIO()\n"
        f"with contextlib.redirect_stderr(err):\n    rc = cli.main(['what-if', '--report', {str(bad)!r}])\n"
        "assert rc == 2 and 'field report_id: required field missing' in err.getvalue(), (rc, err.getvalue())\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n        cli.main(['--help'])\n    except SystemExit as exc:\n        assert exc.code == 0\n"
        "assert all(name in out.getvalue() for name in cli.SUBCOMMANDS), out.getvalue()\n"
        + NO_TORCH
        + "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n        cli.main(['profile', '--help'])\n    except SystemExit as exc:\n        assert exc.code == 0\n"
        "assert '--max-new-tokens' in out.getvalue(), out.getvalue()\n"
    )
    _in_a_fresh_interpreter(code)


def test_an_unknown_subcommand_lists_them_all(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["whatif", "--report", "x.json"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'whatif'" in err
    assert all(f"'{name}'" in err for name in cli.SUBCOMMANDS)
