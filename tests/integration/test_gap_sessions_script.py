"""scripts/gpu/gap_sessions.py on CPU: CUDA events and the profiler replaced by fixed figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu" / "gap_sessions.py"


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("gap_sessions", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _trace(gap_us: float, dur_us: float, n: int = 50) -> list[tuple[str, float, float]]:
    """A matmul (longer than bench.GAP_SMALL_US) then n small kernels dur_us long, gap_us apart."""
    out = [("gemm", 0.0, 100.0)]
    t = 100.0 + gap_us
    for _ in range(n):
        out.append(("small", t, t + dur_us))
        t += dur_us + gap_us
    return out


def test_untraced_gap_is_events_less_traced_duration(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    mod = _script()
    ones = torch.ones
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "randn", lambda *a, **k: ones(2, 2))
    monkeypatch.setattr(mod, "gap_mix", lambda device: lambda: None)
    timings = iter([9e-6] + [3.0e-6] * 3 + [9e-6] + [3.4e-6] * 3)  # a warm-up round, then the timed ones
    monkeypatch.setattr(mod, "queued_cuda_timer", lambda fn, calls, keep_busy=None: next(timings))
    sessions = iter([_trace(1.2, 1.0), _trace(1.0, 1.0)])
    monkeypatch.setattr(mod, "queued_trace", lambda launch, device, bursts: next(sessions))
    assert mod.main(["--sessions", "2", "--rounds", "3"]) == 0
    out = capsys.readouterr().out
    assert "events, no profiler yet: 3.000 us" in out
    assert "| 1 | 1.200 | 1.200 | 1.000 | 2.200 |" in out
    assert "| 2 | 1.000 | 1.000 | 1.000 | 2.000 |" in out
    assert "events, after the sessions: 3.400 us" in out
    assert "before 2.000 us, after 2.400 us" in out


def test_no_gpu_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    mod = _script()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert mod.main([]) == 2
    assert capsys.readouterr().err.strip() == "gap_sessions.py: no CUDA device"


def test_bad_sessions_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _script().main(["--sessions", "0"])
    assert "must be > 0" in capsys.readouterr().err
