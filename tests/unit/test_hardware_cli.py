"""`llm-perf-opt hw` CLI and GPU detection (CUDA simulated by monkeypatching torch.cuda)."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from llm_perf_opt.hardware import detect as detect_mod
from llm_perf_opt.hardware.catalog import GIB, load_catalog
from llm_perf_opt.hardware.detect import (
    Clocks,
    DriverInfo,
    detect_gpu,
    parse_cuda_version_banner,
    parse_nvidia_smi_query,
)
from llm_perf_opt.runners import hw_cli


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = hw_cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "list", "--json")
    assert rc == 0
    rows = json.loads(out)
    assert [r["key"] for r in rows] == load_catalog().keys()
    h100 = next(r for r in rows if r["key"] == "h100-sxm")
    assert h100["peak_flops_per_s"]["bf16"] == pytest.approx(989.5e12)
    assert h100["dense"] is True
    assert h100["sources"]["bf16_dense_tflops"]["dense"] is True
    assert h100["sources"]["bf16_dense_tflops"]["sparse_listed"] == 1979


def test_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "list")
    assert rc == 0
    assert "h100-sxm" in out and "989.5" in out and "rtx-5090" in out


def test_show_json_by_driver_name(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "show", "NVIDIA H100 80GB HBM3", "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["key"] == "h100-sxm"
    assert data["memory_bytes"] == 80 * GIB
    assert data["sources"]["memory_bandwidth_tb_s"]["title"] == "NVIDIA H100 Tensor Core GPU Datasheet"


def test_show_text_lists_sources(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "show", "a100-sxm4-80gb")
    assert rc == 0
    assert "NVIDIA A100 Tensor Core GPU Datasheet" in out
    assert "not catalogued: fp8_dense_tflops" in out


def test_show_unknown_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, "show", "H100")
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "h100-sxm" in err and "a100-pcie-80gb" in err


def test_user_catalogue_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    user = tmp_path / "gpus.yaml"
    user.write_text("""
sources:
  lab: {title: Lab sheet, kind: user}
gpus:
  lab-gpu:
    display_name: Lab GPU
    architecture: custom
    numbers:
      bf16_dense_tflops: {value: 10, dense: true, source: lab, table: r}
      fp16_dense_tflops: {value: 10, dense: true, source: lab, table: r}
      tf32_dense_tflops: {value: 5, dense: true, source: lab, table: r}
      fp32_cuda_core_tflops: {value: 2, dense: true, source: lab, table: r}
      memory_bandwidth_tb_s: {value: 0.5, source: lab, table: r}
      memory_gib: {value: 16, source: lab, table: r}
""", encoding="utf-8")
    rc, out, _ = _run(capsys, "show", "lab-gpu", "--json", "--catalog", str(user))
    assert rc == 0 and json.loads(out)["peak_flops_per_s"]["bf16"] == 10e12


@pytest.mark.parametrize("command", ["detect", "bench"])
def test_no_gpu_is_one_line_nonzero(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                    command: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, out, err = _run(capsys, command)
    assert rc != 0
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "no CUDA GPU" in err


@pytest.mark.parametrize(("command", "out", "message"), [
    ("bench", "ceilings.txt", "must end in .json, .yaml, .yml"),
    ("bench", "BLOCKED/ceilings.json", "cannot create its folder"),
    ("detect", "BLOCKED/gpu.json", "cannot create its folder"),
])
def test_bad_out_fails_before_measuring(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path, command: str, out: str, message: str) -> None:
    def no_detection(*_a: object, **_k: object) -> None:
        raise AssertionError("--out must be checked before the GPU is touched")

    monkeypatch.setattr(hw_cli, "detect_gpu", no_detection)
    (tmp_path / "BLOCKED").write_text("a file, not a folder")
    rc, stdout, err = _run(capsys, command, "--out", str(tmp_path / out))
    assert rc == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_bench_rejects_unbenchmarked_dtype(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        hw_cli.main(["bench", "--dtypes", "fp8"])
    assert info.value.code == 2
    assert "not benchmarked" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- detection


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, name: str, total_memory: int, sms: int = 132) -> None:
    props = types.SimpleNamespace(total_memory=total_memory, multi_processor_count=sms, major=9, minor=0,
                                  uuid="0c5ae1f2-0000-0000-0000-000000000000")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: name)


def test_detect_h100(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_cuda(monkeypatch, "NVIDIA H100 80GB HBM3", 81559 * 2**20)
    seen = {}

    def fake_info(index: int, uuid: str | None):
        seen["uuid"] = uuid
        return DriverInfo(via="nvidia-smi", driver_version="580.159.04", cuda_driver_version="13.0",
                          clocks=Clocks(sm_max_mhz=1980, memory_max_mhz=2619)), None

    monkeypatch.setattr(detect_mod, "query_driver_info", fake_info)
    gpu = detect_gpu()
    assert gpu is not None
    assert gpu.catalog_key == "h100-sxm" and gpu.catalog_error is None
    assert gpu.sm_count == 132 and gpu.compute_capability == "9.0"
    assert gpu.driver_version == "580.159.04" and gpu.clocks.sm_max_mhz == 1980
    assert seen["uuid"] == "GPU-0c5ae1f2-0000-0000-0000-000000000000"
    data = gpu.as_dict()
    assert data["clocks"]["memory_max_mhz"] == 2619
    json.dumps(data)


@pytest.mark.parametrize(("name", "gib", "key"), [
    ("NVIDIA A100-SXM4-40GB", 39.4, "a100-sxm4-40gb"),
    ("NVIDIA A100-SXM4-80GB", 79.2, "a100-sxm4-80gb"),
    ("NVIDIA PG509-210", 80.0, "a100-sxm4-80gb"),
])
def test_detect_a100_by_name_and_memory(monkeypatch: pytest.MonkeyPatch, name: str, gib: float, key: str) -> None:
    _fake_cuda(monkeypatch, name, int(gib * GIB), sms=108)
    monkeypatch.setattr(detect_mod, "query_driver_info", lambda index, uuid: (None, "pynvml not importable"))
    gpu = detect_gpu()
    assert gpu.catalog_key == key
    assert gpu.clocks is None and gpu.driver_info_missing_reason == "pynvml not importable"


def test_detect_uncatalogued_reports_why(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    _fake_cuda(monkeypatch, "NVIDIA A100-SXM4-40GB MIG 1g.5gb", 5 * GIB, sms=14)
    monkeypatch.setattr(detect_mod, "query_driver_info", lambda index, uuid: (None, "no nvml"))
    gpu = detect_gpu()
    assert gpu.catalog_key is None and "unknown GPU" in gpu.catalog_error
    out_file = tmp_path / "env" / "gpu.json"
    rc, out, _ = _run(capsys, "detect", "--json", "--out", str(out_file))
    assert rc == 0
    assert json.loads(out)["catalog_key"] is None
    assert json.loads(out_file.read_text())["name"] == "NVIDIA A100-SXM4-40GB MIG 1g.5gb"


def test_detect_without_cuda_returns_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert detect_gpu() is None


def test_nvidia_smi_parsing() -> None:
    driver, clocks = parse_nvidia_smi_query("580.159.04, 1980, 2619, 345, 2619\n")
    assert driver == "580.159.04"
    assert clocks == Clocks(sm_max_mhz=1980, memory_max_mhz=2619, sm_current_mhz=345, memory_current_mhz=2619)
    driver, clocks = parse_nvidia_smi_query("[N/A], [N/A], 1593, [N/A], 1593")
    assert driver is None and clocks.sm_max_mhz is None and clocks.memory_max_mhz == 1593
    with pytest.raises(ValueError):
        parse_nvidia_smi_query("580.1, 1980")
    banner = "| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04   CUDA Version: 13.0     |"
    assert parse_cuda_version_banner(banner) == "13.0"
    assert parse_cuda_version_banner("no banner") is None


def test_driver_info_falls_back_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pynvml(index: int, uuid: str | None):
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(detect_mod, "_query_nvml", no_pynvml)
    monkeypatch.setattr(detect_mod.shutil, "which", lambda exe: None)
    info, reason = detect_mod.query_driver_info(0, None)
    assert info is None
    assert "pynvml not importable" in reason and "nvidia-smi" in reason
    assert "\n" not in reason


def test_driver_info_from_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        out = ("580.159.04, 1980, 2619, 1755, 2619\n" if len(cmd) > 1
               else "| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04   CUDA Version: 13.0 |\n")
        return types.SimpleNamespace(stdout=out, returncode=0)

    monkeypatch.setattr(detect_mod, "_query_nvml", lambda index, uuid: (_ for _ in ()).throw(ImportError()))
    monkeypatch.setattr(detect_mod.shutil, "which", lambda exe: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(detect_mod.subprocess, "run", fake_run)
    info, reason = detect_mod.query_driver_info(3, "GPU-abc")
    assert reason is None and info.via == "nvidia-smi"
    assert info.driver_version == "580.159.04" and info.cuda_driver_version == "13.0"
    assert info.clocks.sm_current_mhz == 1755
    assert calls[0][1:3] == ["-i", "GPU-abc"]


def test_bench_pattern_sides_reach_the_bench_and_the_table(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:

    from llm_perf_opt.hardware.bench import BenchMethod, MeasuredCeilings

    seen: list[object] = []

    def fake_bench(**kwargs: object) -> MeasuredCeilings:
        seen.append(kwargs["pattern_sides"])
        return MeasuredCeilings(gpu_key="h200", device_name="NVIDIA H200", matmul_flops_per_s={"bf16": 6.8e14},
                                memory_bandwidth_bytes_per_s=4.0e12,
                                method=BenchMethod(matmul_size=8192, warmup=1, repeats=1, inner=1,
                                                   copy_buffer_bytes=1 << 31),
                                pattern_bandwidth_bytes_per_s={"outer_add@64": 0.6e12})

    _fake_h200(monkeypatch)
    monkeypatch.setattr(hw_cli, "run_bench", fake_bench)
    rc, out, _ = _run(capsys, "bench", "--pattern-sides", "14,64,14")
    assert rc == 0 and seen == [[14, 64]]
    assert "pattern outer_add@64" in out and "0.150 of copy" in out
    rc, _, _ = _run(capsys, "bench", "--pattern-sides", "none")
    assert rc == 0 and seen[-1] == []
    with pytest.raises(SystemExit) as info:
        hw_cli.main(["bench", "--pattern-sides", "14,0"])
    assert info.value.code == 2 and "positive integer" in capsys.readouterr().err


def test_bench_keeps_the_ceilings_when_the_patterns_fail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:

    from llm_perf_opt.errors import UserError
    from llm_perf_opt.hardware.bench import BenchMethod, MeasuredCeilings, load_ceilings

    def failing_bench(**kwargs: object) -> MeasuredCeilings:
        kwargs["checkpoint"](MeasuredCeilings(  # type: ignore[operator]
            gpu_key="h200", device_name="NVIDIA H200", matmul_flops_per_s={"bf16": 6.8e14},
            memory_bandwidth_bytes_per_s=4.0e12,
            method=BenchMethod(matmul_size=8192, warmup=1, repeats=1, inner=1, copy_buffer_bytes=1 << 31)))
        raise UserError("out of device memory while measuring the access patterns at sides 80")

    _fake_h200(monkeypatch)
    monkeypatch.setattr(hw_cli, "run_bench", failing_bench)
    out = tmp_path / "ceilings.json"
    rc, stdout, err = _run(capsys, "bench", "--out", str(out))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "out of device memory" in err and f"are in {out}" in err
    kept = load_ceilings(out)
    assert kept.matmul_flops_per_s == {"bf16": 6.8e14} and kept.driver_version == "1"


def _fake_h200(monkeypatch: pytest.MonkeyPatch) -> None:
    """hw detects a local H200 (no CUDA call is made)."""
    gpu = types.SimpleNamespace(catalog_key="h200", catalog_error=None, driver_version="1", name="NVIDIA H200")
    monkeypatch.setattr(hw_cli, "detect_gpu", lambda *_a, **_k: gpu)
    monkeypatch.setattr(torch.cuda, "set_device", lambda _i: None)


def _ceilings_for_cli(**extra: object) -> Any:
    from llm_perf_opt.hardware.bench import BenchMethod, MeasuredCeilings

    return MeasuredCeilings(gpu_key="h200", device_name="NVIDIA H200", matmul_flops_per_s={"bf16": 6.8e14},
                            memory_bandwidth_bytes_per_s=4.0e12,
                            method=BenchMethod(matmul_size=8192, warmup=1, repeats=1, inner=1,
                                               copy_buffer_bytes=1 << 31), **extra)  # type: ignore[arg-type]


def test_bench_times_the_gemms_of_the_chosen_workloads(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:

    from llm_perf_opt.analytic.gemm_shapes import default_gemm_workloads, workload_gemm_keys

    seen: list[tuple[object, object]] = []

    def fake_bench(**kwargs: object) -> Any:
        seen.append((kwargs["gemm_keys"], kwargs["gemm_workloads"]))
        return _ceilings_for_cli(gemm_times_ms={"bmm_nt@16x257x257x64": [0.012]}, kernel_gap_s=0.99e-6,
                                 kernel_gap_graph_s=0.3e-6)

    _fake_h200(monkeypatch)
    monkeypatch.setattr(hw_cli, "run_bench", fake_bench)
    rc, out, _ = _run(capsys, "bench", "--gemm-workloads", "base:1,small:4,base:1")
    assert rc == 0 and seen[-1] == (workload_gemm_keys(["base:1", "small:4"]), ["base:1", "small:4"])
    assert "gemm bmm_nt@16x257x257x64" in out and "12.00 us/call" in out and "11.3 TFLOP/s" in out
    gap_rows = [line.split() for line in out.splitlines() if line.startswith("kernel gap")]
    assert [" ".join(r[:-4]) for r in gap_rows] == ["kernel gap (queued, profiler trace)",
                                                   "kernel gap (CUDA graph replay, profiler trace)"]
    assert [r[-4] for r in gap_rows] == ["0.99", "0.30"]
    rc, _, _ = _run(capsys, "bench")
    assert rc == 0 and seen[-1][1] == default_gemm_workloads()
    rc, _, _ = _run(capsys, "bench", "--gemm-workloads", "none")
    assert rc == 0 and seen[-1] == ([], [])
    with pytest.raises(SystemExit) as info:
        hw_cli.main(["bench", "--gemm-workloads", "huge:1"])
    assert info.value.code == 2 and "unknown mode 'huge'" in capsys.readouterr().err


def test_gemms_adds_the_gemm_times_to_a_ceilings_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:

    import attrs

    from llm_perf_opt.hardware.bench import load_ceilings, save_ceilings

    base = save_ceilings(_ceilings_for_cli(kernel_floor_s=1.8e-6), tmp_path / "in.json")
    timed: list[list[str]] = []

    def fake_add(ceilings: Any, keys: list[str], workloads: list[str], **_k: object) -> Any:
        timed.append(keys)
        return attrs.evolve(ceilings, gemm_times_ms={k: [0.01] for k in keys}, gemm_workloads=list(workloads))

    _fake_h200(monkeypatch)
    monkeypatch.setattr(hw_cli, "add_gemm_times", fake_add)
    out = tmp_path / "out.json"
    rc, stdout, _ = _run(capsys, "gemms", "--ceilings", str(base), "--out", str(out), "--gemm-workloads", "tiny:1")
    assert rc == 0 and f"written to {out}" in stdout
    kept = load_ceilings(out)
    assert kept.kernel_floor_s == 1.8e-6 and kept.gemm_workloads == ["tiny:1"]  # the other figures as they were
    assert set(kept.gemm_times_ms) == set(timed[-1]) and timed[-1]
    # a ceilings file of another GPU model is refused in one line
    other = save_ceilings(attrs.evolve(_ceilings_for_cli(), gpu_key="h100-sxm"), tmp_path / "h100.json")
    rc, _, err = _run(capsys, "gemms", "--ceilings", str(other), "--out", str(out))
    assert rc == 2 and "measured on 'h100-sxm'" in err and len(err.strip().splitlines()) == 1


def test_bench_keeps_the_gemms_timed_before_a_stop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:

    from llm_perf_opt.hardware.bench import GemmTimingStopped, load_ceilings

    def stopped_bench(**kwargs: object) -> Any:
        kwargs["checkpoint"](_ceilings_for_cli())  # type: ignore[operator]
        raise GemmTimingStopped("interrupted while timing GEMM linear@1x9x8x16 (1 of 2 shapes timed)",
                                _ceilings_for_cli(gemm_times_ms={"linear@1x5x8x16": [0.002]}))

    _fake_h200(monkeypatch)
    monkeypatch.setattr(hw_cli, "run_bench", stopped_bench)
    out = tmp_path / "ceilings.json"
    rc, _, err = _run(capsys, "bench", "--out", str(out), "--gemm-workloads", "tiny:1")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "interrupted while timing GEMM" in err
    kept = load_ceilings(out)
    assert kept.gemm_times_ms == {"linear@1x5x8x16": [0.002]} and kept.driver_version == "1"


def test_gap_adds_the_kernel_gap_to_a_ceilings_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:

    import attrs

    from llm_perf_opt.errors import UserError
    from llm_perf_opt.hardware.bench import load_ceilings, save_ceilings

    base = save_ceilings(_ceilings_for_cli(kernel_floor_s=1.8e-6), tmp_path / "in.json")
    calls: list[tuple[str, str, int]] = []

    def fake_gap(*, device: str, repeats: int) -> tuple[float, float]:
        calls.append(("stream", device, repeats))
        return 1.0e-6, 0.9e-6

    def fake_graph_gap(*, device: str, repeats: int) -> tuple[float, float]:
        calls.append(("graph", device, repeats))
        return 0.3e-6, 0.8e-6

    _fake_h200(monkeypatch)
    monkeypatch.setattr(hw_cli, "measure_kernel_gap", fake_gap)
    monkeypatch.setattr(hw_cli, "measure_graph_kernel_gap", fake_graph_gap)
    out = tmp_path / "out.json"
    rc, stdout, _ = _run(capsys, "gap", "--ceilings", str(base), "--out", str(out), "--repeats", "4")
    assert rc == 0 and len(stdout.strip().splitlines()) == 1
    assert "1.00 us between queued kernels" in stdout and "0.30 us between kernels replayed from a CUDA graph" in stdout
    assert calls == [("stream", "cuda:0", 4), ("graph", "cuda:0", 4)]
    kept = load_ceilings(out)
    assert kept.kernel_gap_s == 1.0e-6 and kept.kernel_gap_duration_s == 0.9e-6 and kept.kernel_gap_graph_s == 0.3e-6
    assert kept.kernel_floor_s == 1.8e-6  # the other figures as they were
    rc, stdout, _ = _run(capsys, "gap", "--ceilings", str(base), "--out", str(out), "--json")
    assert rc == 0 and json.loads(stdout) == {"kernel_gap_s": 1.0e-6, "kernel_gap_duration_s": 0.9e-6,
                                              "kernel_gap_graph_s": 0.3e-6, "out": str(out)}
    other = save_ceilings(attrs.evolve(_ceilings_for_cli(), gpu_key="h100-sxm"), tmp_path / "h100.json")
    rc, _, err = _run(capsys, "gap", "--ceilings", str(other), "--out", str(out))
    assert rc == 2 and "measured on 'h100-sxm'" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _run(capsys, "gap", "--ceilings", str(base), "--out", str(tmp_path / "x.txt"))
    assert rc == 2 and "must end in" in err

    # a capture the driver refuses: the stream gap measured before it is on disk, the failure is one line
    def refused(*, device: str, repeats: int) -> tuple[float, float]:
        raise UserError("CUDA-graph kernel gap: the capture failed (operation not permitted)")

    monkeypatch.setattr(hw_cli, "measure_graph_kernel_gap", refused)
    partial = tmp_path / "partial.json"
    rc, _, err = _run(capsys, "gap", "--ceilings", str(base), "--out", str(partial))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "the capture failed" in err and f"the stream gap (1.00 us) is written to {partial}" in err
    kept = load_ceilings(partial)
    assert kept.kernel_gap_s == 1.0e-6 and kept.kernel_gap_graph_s is None and kept.kernel_floor_s == 1.8e-6
