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


def test_launches_are_counted_on_cuda_only() -> None:
    calls: list[int] = []
    assert timers.device_launches(lambda: calls.append(1), "cpu") is None and calls == []
    probe = timers.ModuleHostProbe(lambda: torch.ones(2) + 1, "cpu", count_launches=True)
    assert probe.ops >= 2 and probe.launches is None


def _fake_cuda_probe(monkeypatch: pytest.MonkeyPatch, probe_us: list[float], step_ms: float) -> None:
    """The module probe reads ``probe_us`` in turn (10 calls, 5 launches per tiny forward); a decode step makes
    100 calls and 50 launches and takes ``step_ms``; the device is named NVIDIA H200 (UUID GPU-0000-fake)."""
    from llm_perf_opt.models.deepseek_ocr import modeling

    values = iter(probe_us)

    class FakeModule:
        def __init__(self, fn: object, device: object, *, count_launches: bool = False) -> None:
            self.ops, self.launches = 10, 5 if count_launches else None

        def probe(self, reps: int = 3) -> float:
            return next(values)

    class FakeStep:
        calls, launches = 100, 50
        sam_mode, sam_launches, sam_syncs = "tiny", 40, 24

        def __init__(self, config: object, device: object, dtype: object) -> None:
            pass

        def time_step_ms(self) -> float:
            return step_ms

        def time_sam_ms(self) -> float:
            return 2.0  # 2 ms / 40 launches = 50 us per launch

    monkeypatch.setattr(modeling, "tiny_decoder_program", lambda **kw: (lambda: None))
    monkeypatch.setattr(timers, "ModuleHostProbe", FakeModule)
    monkeypatch.setattr(host_speed, "DecodeStepProgram", FakeStep)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(host_speed, "gpu_uuid", lambda device: "GPU-0000-fake")


def test_decode_step_ratio_is_the_steps_us_per_launch_over_the_probe_before_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_cuda_probe(monkeypatch, [10.0, 20.0, 40.0], step_ms=1.0)  # 1 ms / 50 launches = 20 us per launch
    speed = measure_host_speed(torch.device("cuda", 0), kinds=["module"], samples=3, interval_s=0, decode_step=True)
    module = speed.probes["module"]
    assert module.decode_ratio_samples == pytest.approx([2.0, 1.0, 0.5])
    assert (module.aten_calls, module.device_launches) == (10, 5)
    assert (module.decode_step_calls, module.decode_step_launches) == (100, 50)
    # median probe (20) times median ratio (1.0): a real step's host us per launch at this host's median speed
    assert module.decode_ratio == pytest.approx(1.0) and module.us_per_launch == pytest.approx(20.0)
    assert module.sam_ratio_samples == pytest.approx([5.0, 2.5, 1.25]) and module.sam_ratio == pytest.approx(2.5)
    assert (module.sam_mode, module.sam_launches, module.sam_syncs) == ("tiny", 40, 24)
    path = tmp_path / "speed.json"
    path.write_text(json.dumps(speed.as_dict()))
    again = host_speed.load_host_speed(path)
    assert again.probes["module"] == module and again.device_name == "NVIDIA H200"
    # the file names its machine, so a prior can tell which runs were taken on it
    assert again.gpu_uuid == "GPU-0000-fake" and again.cpu_model == speed.cpu_model
    assert json.loads(path.read_text())["probes"]["module"]["median_us_per_launch"] == pytest.approx(20.0)
    # without the decode step nothing is claimed about a real step
    _fake_cuda_probe(monkeypatch, [10.0], step_ms=1.0)
    plain = measure_host_speed(torch.device("cuda", 0), kinds=["module"], samples=1, interval_s=0)
    assert plain.probes["module"].us_per_launch is None and "decode_ratio" not in plain.probes["module"].as_dict()


def test_decode_step_needs_the_module_probe_on_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match="needs the module probe on a CUDA device"):
        measure_host_speed(torch.device("cpu"), kinds=["module"], samples=1, decode_step=True)
    assert hw_cli.main(["probe", "--device", "cpu", "--decode-step", "--samples", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "decode-step probe needs the module probe" in err
    with pytest.raises(UserError, match="not a CUDA device"):
        host_speed.DecodeStepProgram(None, torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("text, message", [
    (None, "host-speed file not found"),
    ("{not json", "not a readable JSON host-speed file"),
    ('{"kind": "llm_perf_opt.ceilings"}', "not a host-speed file"),
    ('{"kind": "llm_perf_opt.host_speed", "probes": {}}', r"malformed host-speed file \(KeyError"),
])
def test_a_bad_host_speed_file_is_one_line_naming_it(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "speed.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        host_speed.load_host_speed(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_host_speed_file_with_bad_samples_is_refused(tmp_path: Path) -> None:
    base = {"kind": HOST_SPEED_KIND, "device": "cuda:0", "device_name": "NVIDIA H200", "torch_version": "2.11",
            "reps": 3, "interval_s": 0.5, "created_utc": "2026-12-03T00:00:00Z"}
    path = tmp_path / "speed.json"
    for probes, message in (({"add": {"kind": "add", "unit": "u", "samples_us": [1.0, -2.0]}}, "no positive samples"),
                            ({"module": {"kind": "module", "unit": "u", "samples_us": [1.0],
                                         "decode_ratio_samples": [0.0]}}, "decode_ratio_samples must be positive"),
                            ({"module": {"kind": "module", "unit": "u", "samples_us": [1.0], "sam_mode": "huge",
                                         "sam_launches": 4, "sam_ratio_samples": [2.0]}},
                             "sam_mode 'huge' is not one of tiny, small")):
        path.write_text(json.dumps({**base, "probes": probes}))
        with pytest.raises(UserError, match=message):
            host_speed.load_host_speed(path)


def _speed(samples: list[float], *, ratios: list[float] | None = None, sam: list[float] | None = None,
           uuid: str | None = "GPU-a", name: str = "NVIDIA H200", sam_launches: int = 462,
           created: str = "2026-12-04T00:00:00Z") -> host_speed.HostSpeed:
    module = host_speed.ProbeSeries(kind="module", unit="u", samples_us=samples, aten_calls=284, device_launches=161,
                                    decode_step_calls=1289 if ratios else None,
                                    decode_step_launches=1045 if ratios else None, decode_ratio_samples=ratios,
                                    sam_mode="tiny" if sam else None, sam_launches=sam_launches if sam else None,
                                    sam_syncs=25 if sam else None, sam_ratio_samples=sam)
    add = host_speed.ProbeSeries(kind="add", unit="u", samples_us=[s / 2 for s in samples])
    return host_speed.HostSpeed(device="cuda:0", device_name=name, torch_version="2.11", reps=3, interval_s=0.5,
                                probes={"module": module, "add": add}, created_utc=created, gpu_uuid=uuid)


def test_pooled_files_take_every_median_over_all_their_samples(tmp_path: Path) -> None:
    a = _speed([10.0, 20.0], ratios=[1.4, 1.5], uuid="GPU-a")  # an older file: no SAM pass timed
    b = _speed([30.0, 40.0, 50.0], ratios=[1.6, 1.7, 1.8], sam=[2.0, 3.0, 4.0], uuid="GPU-b",
               created="2026-12-05T00:00:00Z")
    assert host_speed.pool_host_speeds([(tmp_path / "a.json", a)]) is a
    pooled = host_speed.pool_host_speeds([(tmp_path / "a.json", a), (tmp_path / "b.json", b)])
    module = pooled.probes["module"]
    assert module.samples_us == [10.0, 20.0, 30.0, 40.0, 50.0] and module.median_us == 30.0
    assert module.decode_ratio == 1.6 and module.us_per_launch == pytest.approx(48.0)
    assert module.sam_ratio_samples == [2.0, 3.0, 4.0] and module.sam_ratio == 3.0
    assert (module.sam_mode, module.sam_launches, module.sam_syncs, module.decode_step_launches) == ("tiny", 462, 25,
                                                                                                    1045)
    assert pooled.probes["add"].median_us == 15.0
    assert pooled.gpu_uuid is None and pooled.created_utc == "2026-12-05T00:00:00Z"  # two machines: no one UUID
    same = host_speed.pool_host_speeds([(tmp_path / "a.json", a), (tmp_path / "c.json", _speed([5.0], uuid="GPU-a"))])
    assert same.gpu_uuid == "GPU-a" and same.probes["module"].decode_ratio_samples == [1.4, 1.5]


@pytest.mark.parametrize(("other", "message"), [
    (_speed([1.0], name="NVIDIA H100 80GB HBM3"), r"b\.json: its device_name 'NVIDIA H100 80GB HBM3' is not"),
    (_speed([1.0], sam=[2.0], sam_launches=500), r"b\.json: its module probe's sam_launches is 500, .*a\.json's is 462"),
])
def test_files_of_other_work_do_not_pool(tmp_path: Path, other: host_speed.HostSpeed, message: str) -> None:
    a = _speed([1.0], sam=[2.0])
    with pytest.raises(UserError, match=message) as info:
        host_speed.pool_host_speeds([(tmp_path / "a.json", a), (tmp_path / "b.json", other)])
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="no host-speed file"):
        host_speed.pool_host_speeds([])


def test_the_view_call_weight_splits_the_two_programs_host_time() -> None:
    per_view = 0.5
    per_launch = (284 - 123 * per_view) / 161  # the tiny forward: 284 calls, 161 launches, 1 probe unit per call
    ratio = per_launch + (1289 - 1045) * per_view / 1045  # a decode step's units per launch
    series = _speed([10.0], ratios=[ratio]).probes["module"]
    assert series.view_call_weight == pytest.approx(per_view / per_launch)
    assert _speed([10.0]).probes["module"].view_call_weight is None  # no decode step timed
    assert f"costs {per_view / per_launch:.2f} x one that launches" in hw_cli.render_probe(_speed([10.0], ratios=[ratio]))


def test_the_view_weight_of_the_committed_h200_files_pooled() -> None:
    h200 = Path(__file__).resolve().parents[2] / "reports" / "hardware" / "h200"
    speeds = [host_speed.load_host_speed(h200 / f"host-speed-decode-{i}.json") for i in range(1, 11)]
    weights = [s.probes["module"].view_call_weight for s in speeds]
    pooled = host_speed.pool_host_speeds([(h200 / f"f{i}", s) for i, s in enumerate(speeds)])
    # within the spread of the files, and the 0.41 that docs/results-h200.md section 19 quotes
    assert min(w for w in weights if w) <= pooled.probes["module"].view_call_weight <= max(w for w in weights if w)
    assert pooled.probes["module"].view_call_weight == pytest.approx(0.41, abs=0.005)


def test_probe_from_files_prints_and_writes_the_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h200 = Path(__file__).resolve().parents[2] / "reports" / "hardware" / "h200"
    files = [str(h200 / f"host-speed-decode-{i}.json") for i in (7, 8)]
    out = tmp_path / "pooled.json"
    assert hw_cli.main(["probe", "--from", *files, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"2 host-speed files pooled: {files[0]}, {files[1]}") and f"wrote {out}" in text
    pooled = host_speed.load_host_speed(out)
    singles = [host_speed.load_host_speed(Path(f)) for f in files]
    assert pooled.probes["module"].samples_us == [x for s in singles for x in s.probes["module"].samples_us]
    assert pooled.gpu_uuid == singles[0].gpu_uuid  # both taken on set 14's machine
    assert f"costs {pooled.probes['module'].view_call_weight:.2f} x one that launches" in text
    assert hw_cli.main(["probe", "--from", files[0], "--decode-step", "--samples", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "drop --samples, --decode-step" in err
    assert hw_cli.main(["probe", "--from", str(tmp_path / "missing.json")]) == 2
    assert "host-speed file not found" in capsys.readouterr().err
