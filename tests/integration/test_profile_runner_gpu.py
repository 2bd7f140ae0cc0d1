"""The profiling runner on CUDA (tiny config): CUDA-event stage times, device-time operator table.

Run on the GPU machine: ``pytest -m gpu tests/integration/test_profile_runner_gpu.py`` (about 30 s).
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

from llm_perf_opt.data import LLMProfileReport, load_report
from llm_perf_opt.profiling.records import read_records
from llm_perf_opt.runners.llm_profile_runner import main
from llm_perf_opt.vocab import VISION_STAGES, Stage

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_tiny_model_on_cuda(tmp_path: Path) -> None:
    argv = ["--device", "cuda", "--config", "tiny", "--mode", "gundam", "--dtype", "bf16", "--synthetic", "2",
            "--max-new-tokens", "8", "--repeats", "2", "--profile-images", "2", "--no-progress",
            "--output-dir", str(tmp_path), "--run-id", "gpu-tiny"]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(argv)
    assert rc == 0, err.getvalue()
    art = tmp_path / "gpu-tiny" / "torch_profiler"
    report = load_report(art / "metrics.json", LLMProfileReport)
    records = read_records(art / "passes.jsonl")
    assert len(records) == 4
    for r in records:
        assert r.stage_ms[Stage.PREFILL.value] >= sum(r.stage_ms[s.value] for s in VISION_STAGES) > 0
        assert r.peak_memory_bytes and r.peak_memory_bytes > 0
        assert r.peak_reserved_bytes is not None and r.peak_reserved_bytes >= r.peak_memory_bytes
        assert r.device_allocs is not None and r.device_frees is not None and r.alloc_retries == 0
        assert r.decode_device_allocs is not None and 0 <= r.decode_device_allocs <= r.device_allocs
        assert len(r.decode_step_ms) == 8
    env = json.loads((art / "env.json").read_text())
    assert env["gpu"]["name"] == torch.cuda.get_device_name()
    totals = json.loads((art / "operator_table.json").read_text())
    assert totals["basis"] == "cuda"
    assert totals["device_kernel_ms"] > 0
    # operators' self device time never exceeds the kernels the profiler saw (no double counting)
    assert totals["total_self_ms"] <= totals["device_kernel_ms"] * (1 + 1e-6)
    assert totals["total_self_ms"] + totals["unattributed_device_ms"] == pytest.approx(totals["device_kernel_ms"])
    assert sum(o.self_cuda_time_ms for o in report.operators) == pytest.approx(totals["total_self_ms"])
    assert totals["stage_ms"].get(Stage.DECODE.value, 0) > 0
    if report.meta.gpu_key is not None:
        assert report.model_mfu is not None and 0 < report.model_mfu < 1.5
    # per-stage kernel counts, and the host/device timeline from the trace, for every stage
    assert all(totals["stage_kernels"].get(s.value, 0) > 0 for s in Stage)
    timeline = {row["stage"]: row for row in json.loads((art / "timeline.json").read_text())}
    assert set(timeline) == {s.value for s in Stage}
    for row in timeline.values():
        assert row["kernels"] > 0 and row["host_ms"] > 0
        assert 0 < row["device_busy_ms"] <= row["device_span_ms"] * (1 + 1e-9)
    assert "Host/device timeline" in (art / "operators.md").read_text()
