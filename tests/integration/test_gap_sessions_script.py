"""scripts/gpu/gap_sessions.py on CPU: CUDA events and the profiler replaced by fixed figures."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from script_loader import load_script


def _script() -> Any:
    return load_script("gpu/gap_sessions.py")


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


def test_a_host_that_cannot_get_ahead_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from llm_perf_opt.errors import UserError

    mod = _script()
    ones = torch.ones
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "randn", lambda *a, **k: ones(2, 2))
    monkeypatch.setattr(mod, "gap_mix", lambda device: lambda: None)

    def behind(fn: Any, calls: int, keep_busy: Any = None) -> float:
        raise UserError("GEMM timing: the host did not get ahead of the device")

    monkeypatch.setattr(mod, "queued_cuda_timer", behind)
    assert mod.main(["--rounds", "1"]) == 2
    assert capsys.readouterr().err.strip() == "gap_sessions.py: GEMM timing: the host did not get ahead of the device"
    # no session with queued small kernels: the table rows say so, then one line instead of a mean of nothing
    monkeypatch.setattr(mod, "queued_cuda_timer", lambda fn, calls, keep_busy=None: 3e-6)
    monkeypatch.setattr(mod, "queued_trace", lambda launch, device, bursts: [("gemm", 0.0, 100.0)])
    assert mod.main(["--sessions", "1", "--rounds", "1"]) == 2
    out, err = capsys.readouterr()
    assert "| 1 | no queued small kernels in the trace |" in out
    assert err.strip() == "gap_sessions.py: no session traced queued small kernels: no untraced gap to give"
