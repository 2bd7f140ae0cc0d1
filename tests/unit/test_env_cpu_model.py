"""The host CPU's model name, recorded in env.json and host-speed files to tell machines apart."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from llm_perf_opt.profiling import env


def test_cpu_model_reads_the_model_name_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: Test\nmodel name\t: Test CPU 9000 @ 3.1GHz\n\nprocessor\t: 1\n"
                    "model name\t: Test CPU 9000 @ 3.1GHz\n")
    assert env.cpu_model(str(info)) == "Test CPU 9000 @ 3.1GHz"


def test_cpu_model_falls_back_to_the_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert env.cpu_model(str(tmp_path / "absent")) is None
    (tmp_path / "blank").write_text("processor\t: 0\nmodel name\t:\n")
    monkeypatch.setattr(platform, "processor", lambda: "arm")
    assert env.cpu_model(str(tmp_path / "blank")) == "arm"


def test_env_json_records_the_cpu_model() -> None:
    import torch

    data, gpu = env.collect_env(torch.device("cpu"))
    assert gpu is None and data["cpu"]["model"] == env.cpu_model()
