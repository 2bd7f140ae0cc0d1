"""scripts/gpu/kernel_census.py must work first time on the GPU: run it here on CPU with the tiny config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from script_loader import load_script


def _script() -> Any:
    return load_script("gpu/kernel_census.py")


def test_census_lists_the_operators_of_every_stage(tmp_path: Path) -> None:
    out = tmp_path / "census.json"
    assert _script().main(["--out", str(out), "--config", "tiny", "--device", "cpu", "--workload", "small:2",
                           "--new-tokens", "3"]) == 0
    data = json.loads(out.read_text())
    wl = data["workloads"]["small:2"]
    assert wl["decode_forwards"] == 2
    stages = wl["stages"]
    assert {"vision.sam", "vision.clip", "projector", "prefill", "decode"} <= set(stages)
    sam = stages["vision.sam"]
    assert sam["aten::native_layer_norm"]["calls"] > 0
    # a CPU capture records no device kernels; every row has the same fields
    assert all(set(r) >= {"calls", "kernels", "self_cpu_us", "self_device_us", "kernel_names"}
               for ops in stages.values() for r in ops.values())
    assert sum(r["kernels"] for ops in stages.values() for r in ops.values()) == 0


def test_bad_workload_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _script().main(["--out", "x.json", "--workload", "base:four"])
    assert "expected MODE:BATCH" in capsys.readouterr().err


def test_unknown_mode_is_one_clear_line_and_earlier_workloads_are_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.json"
    assert _script().main(["--out", str(out), "--config", "tiny", "--device", "cpu", "--new-tokens", "2",
                           "--workload", "tiny:1", "--workload", "huge:1"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "kernel_census.py:" in line]
    assert len(err) == 1 and "huge" in err[0]
    assert list(json.loads(out.read_text())["workloads"]) == ["tiny:1"]


def test_zero_new_tokens_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _script().main(["--out", str(tmp_path / "c.json"), "--config", "tiny", "--device", "cpu",
                           "--new-tokens", "0"]) == 2
    assert "--new-tokens 0: must be >= 1" in capsys.readouterr().err
