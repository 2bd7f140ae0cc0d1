"""`llm-perf-opt hw probe`: this host's speed as the profiler's probes measure it (CPU here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware import host_speed
from llm_perf_opt.hardware.host_speed import HOST_SPEED_KIND, measure_host_speed, resolve_device
from llm_perf_opt.profiling import timers
from llm_perf_opt.runners import hw_cli


def test_probe_json_on_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "probe.json"
    assert hw_cli.main(["probe", "--device", "cpu", "--samples", "2", "--interval", "0", "--out", str(out),
                        "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed == saved and saved["kind"] == HOST_SPEED_KIND and saved["device"] == "cpu"
    assert set(saved["probes"]) == {"add", "module"}
    for series in saved["probes"].values():
        assert len(series["samples_us"]) == 2 and all(v > 0 for v in series["samples_us"])
        assert series["min_us"] <= series["median_us"] <= series["max_us"]


def test_samples_are_the_profilers_probe_spread_over_time(monkeypatch: pytest.MonkeyPatch) -> None:
    values = iter([99.0, 5.0, 7.0, 6.0])  # the first call is the warm-up
    reps_seen: list[int] = []

    def fake_probe(device: object, reps: int = 3) -> float:
        reps_seen.append(reps)
        return next(values)

    monkeypatch.setattr(timers, "host_probe_us", fake_probe)
    sleeps: list[float] = []
    monkeypatch.setattr(host_speed.time, "sleep", sleeps.append)
    done: list[tuple[int, int]] = []
    speed = measure_host_speed(torch.device("cpu"), kinds=["add"], samples=3, reps=5, interval_s=0.25,
                               progress=lambda i, n: done.append((i, n)))
    assert reps_seen == [1, 5, 5, 5] and not speed.interrupted
    assert speed.probes["add"].samples_us == [5.0, 7.0, 6.0] and speed.probes["add"].median_us == 6.0
    assert sleeps == [0.25, 0.25] and done == [(1, 3), (2, 3), (3, 3)]
    assert set(speed.probes) == {"add"}


def test_table_and_bad_input(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert hw_cli.main(["probe", "--device", "cpu", "--probes", "add", "--samples", "1", "--interval", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("probe ") and "median us" in line for line in lines)
    assert any(line.startswith("add ") for line in lines) and not any(line.startswith("module") for line in lines)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hw_cli.main(["probe"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no CUDA device" in err
    with pytest.raises(UserError, match="not a torch device"):
        resolve_device("gpu7")
    with pytest.raises(UserError, match="no CUDA device"):
        resolve_device("cuda:0")
    for argv, message in ((["probe", "--probes", "add,nope"], "probes must be among add, module"),
                          (["probe", "--samples", "0"], "--samples"), (["probe", "--interval", "-1"], "must be a finite")):
        with pytest.raises(SystemExit):
            hw_cli.main(argv)
        assert message in capsys.readouterr().err
    with pytest.raises(UserError, match="samples and reps"):
        measure_host_speed(torch.device("cpu"), kinds=["add"], samples=0)


def test_an_interrupt_keeps_the_samples_taken(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    calls = iter([9.0, 5.0, 6.0])  # warm-up, two samples, then the interrupt

    def probe(device: object, reps: int = 3) -> float:
        try:
            return next(calls)
        except StopIteration:
            raise KeyboardInterrupt from None

    monkeypatch.setattr(timers, "host_probe_us", probe)
    out = tmp_path / "p.json"
    rc = hw_cli.main(["probe", "--device", "cpu", "--probes", "add", "--samples", "5", "--interval", "0",
                      "--out", str(out)])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    saved = json.loads(out.read_text())
    assert saved["interrupted"] is True and saved["probes"]["add"]["samples_us"] == [5.0, 6.0]
