"""scripts/gpu/library_workspace.py: the summary recomputed from a saved file, and its bad input on a machine
without CUDA (the measurement itself needs a GPU: the gpu-marked test runs it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from script_loader import load_script

MIB = 2**20


def _saved(tmp_path: Path) -> Path:
    mod = load_script("gpu/library_workspace.py")
    deltas = [32 * MIB, 0, 1 * MIB, 0, 32 * MIB]  # a workspace on the first call, another on the second stream
    steps, alloc = [], 8 * MIB
    for step, d in zip(mod.STEPS, deltas, strict=True):
        alloc += d
        steps.append({"step": step, "allocated": alloc, "reserved": alloc, "allocated_delta": d, "reserved_delta": d})
    path = tmp_path / "ws.json"
    path.write_text(json.dumps({"gpu": "NVIDIA H100 80GB HBM3", "gpu_uuid": "GPU-x", "torch": "2.11.0", "cuda": "13.0",
                                "cublas_workspace_config": "", "allocator": "expandable_segments:True", "size": 1024,
                                "steps": steps}))
    return path


def test_the_summary_sums_the_default_stream_steps_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_script("gpu/library_workspace.py")
    assert mod.main(["--from", str(_saved(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "bf16 matmul                      32.00" in out
    assert "kept on the default stream (one model pass): 33.00 MiB" in out
    assert "CUBLAS_WORKSPACE_CONFIG=(unset)" in out and "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in out


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_script("gpu/library_workspace.py")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": []}))
    assert mod.run_guarded(lambda: mod.main(["--from", str(bad)]), "library_workspace.py") == 2
    assert "not a file this script wrote" in capsys.readouterr().err
    assert mod.run_guarded(lambda: mod.main(["--size", "1022", "--out", str(tmp_path / "o.json")]),
                           "library_workspace.py") == 2
    assert "--size 1022: must be a positive multiple of 4" in capsys.readouterr().err
    saved = _saved(tmp_path)
    assert mod.run_guarded(lambda: mod.main(["--from", str(saved), "--size", "512"]), "library_workspace.py") == 2
    assert "--size would measure (give one or the other)" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert mod.run_guarded(lambda: mod.main(["--out", str(tmp_path / "o.json")]), "library_workspace.py") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no CUDA GPU here" in err
        assert not (tmp_path / "o.json").exists()


@pytest.mark.gpu
def test_the_workspaces_are_measured_on_a_gpu(tmp_path: Path) -> None:
    mod = load_script("gpu/library_workspace.py")
    out = tmp_path / "ws.json"
    assert mod.main(["--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["step"] for r in data["steps"]] == list(mod.STEPS)
    assert all(r["allocated_delta"] >= 0 for r in data["steps"])
    assert data["steps"][0]["allocated_delta"] > 0  # the first matmul's cuBLAS workspace
