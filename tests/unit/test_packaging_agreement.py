"""pyproject.toml, pixi.toml, README.md and .ci/run agree (Pixi itself cannot run here)."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: conda-forge package -> PyPI distribution it provides (only where the names differ).
CONDA_TO_PYPI = {"pytorch-cpu": "torch", "pytorch-gpu": "torch", "pytorch": "torch", "matplotlib-base": "matplotlib"}
#: Tasks and the exact commands the README and the brief define.
EXPECTED_TASKS = {
    "analyze": "python -m llm_perf_opt.runners.dsocr_analyzer_main --mode analytic",
    "profile": "python -m llm_perf_opt.runners.llm_profile_runner",
    "what-if": "python scripts/analytical/dsocr_analytic_what_if.py",
    "lint": "ruff check src tests",
    "typecheck": "mypy src",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return _norm(match.group(1))


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pixi() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pixi.toml").read_text())


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def _quick_start_commands() -> list[str]:
    text = _readme()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line.strip() for block in blocks for line in block.strip().splitlines() if line.strip()]


def readme_test_command() -> str:
    """The command after '&&' in the Quick start's second command."""
    commands = _quick_start_commands()
    assert len(commands) == 2, commands
    return commands[1].split("&&", 1)[1].strip()


def _pixi_names(table: dict[str, Any], *, pypi: bool) -> set[str]:
    names = set()
    for name in table:
        if name in ("python", "llm-perf-opt"):
            continue
        names.add(_norm(name) if pypi else _norm(CONDA_TO_PYPI.get(name, name)))
    return names


def _pixi_dependency_names(pixi: dict[str, Any], features: list[str] | None) -> set[str]:
    names = _pixi_names(pixi.get("dependencies", {}), pypi=False)
    names |= _pixi_names(pixi.get("pypi-dependencies", {}), pypi=True)
    for feature in features or []:
        body = pixi["feature"][feature]
        names |= _pixi_names(body.get("dependencies", {}), pypi=False)
        names |= _pixi_names(body.get("pypi-dependencies", {}), pypi=True)
    return names


def test_quick_start_is_two_commands_on_pinned_cpu_torch() -> None:
    first, second = _quick_start_commands()
    assert first == "pip install torch==2.13.0 -e . && python -m llm_perf_opt.runners.dsocr_analyzer_main --mode analytic"
    assert second.startswith("pip install torch==2.13.0 -e '.[dev]' && ")


def test_pixi_dependencies_match_pyproject() -> None:
    py = _pyproject()
    runtime = {_req_name(r) for r in py["project"]["dependencies"]}
    dev = {_req_name(r) for r in py["project"]["optional-dependencies"]["dev"]}
    pixi = _pixi()
    assert "conda-forge" in pixi["workspace"]["channels"]
    assert pixi["dependencies"]["python"].startswith("3.11")
    assert pixi["pypi-dependencies"]["llm-perf-opt"] == {"path": ".", "editable": True}
    for env in ("cpu", "cuda"):
        features = pixi["environments"][env]
        assert _pixi_dependency_names(pixi, features) == runtime | dev, env
    assert _pixi_dependency_names(pixi, pixi["environments"]["default"]) == runtime | dev
    assert _pixi_names(pixi["feature"]["cuda"]["dependencies"], pypi=False) == {"torch"}
    assert _pixi_names(pixi["feature"]["cpu"]["dependencies"], pypi=False) == {"torch"}


def test_pixi_tasks_match_readme_and_ci() -> None:
    tasks = _pixi()["tasks"]
    test_command = readme_test_command()
    assert tasks == {**EXPECTED_TASKS, "test": test_command}
    readme = _readme()
    for name, command in tasks.items():
        assert command in readme, f"task {name}: {command!r} is not in README.md"
        assert f"pixi run {name}" in readme or f"{name} ..." in readme, f"task {name} not shown in README.md"


def test_ci_runs_the_readme_test_command() -> None:
    ci = ROOT / ".ci" / "run"
    assert ci.stat().st_mode & stat.S_IXUSR, ".ci/run is not executable"
    text = ci.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert "pip install --quiet torch==2.13.0" in lines
    assert "pip install --quiet -e '.[dev]'" in lines
    assert readme_test_command() in lines
    assert "-eq 5" in text, "pytest exit 5 (no tests collected) must fail the run"
    for command in ("ruff check src tests", "mypy src"):
        assert command in lines
    order = [lines.index(c) for c in ("pip install --quiet torch==2.13.0", readme_test_command(),
                                      "ruff check src tests", "mypy src")]
    assert order == sorted(order)


def test_console_script_and_package_data() -> None:
    py = _pyproject()
    assert py["project"]["scripts"] == {"llm-perf-opt": "llm_perf_opt.cli:main"}
    assert py["project"]["requires-python"] == ">=3.11"
    transformers = next(r for r in py["project"]["dependencies"] if _req_name(r) == "transformers")
    assert ">=5.10.1" in transformers and "<6" in transformers
    assert os.path.exists(ROOT / "src" / "llm_perf_opt" / "models" / "deepseek_ocr" / "config.json")
