"""compare on a run folder written by the real Stage 1 runner (tiny config, CPU, one synthetic page).

Checks the format contract between the profiling runner and compare: the report
and operator table are found, the workload (mode, prompt length, new tokens,
attention, dtype) is derived exactly, and the outputs are written. The numbers
themselves are CPU timings against H100 peaks (meaningless as a comparison).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_perf_opt.compare.runs import load_run, run_workloads
from llm_perf_opt.models.deepseek_ocr.modes import token_layout
from llm_perf_opt.runners import compare_cli


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llm_perf_opt.cli import main as cli_main

    out = tmp_path_factory.mktemp("profile")
    rc = cli_main(["profile", "--config", "tiny", "--device", "cpu", "--dtype", "fp32", "--mode", "base",
                   "--synthetic", "1", "--max-new-tokens", "4", "--repeats", "1", "--warmup", "0",
                   "--gpu", "h100-sxm", "--output-dir", str(out), "--run-id", "tiny-cpu", "--no-progress"])
    assert rc == 0
    return out / "tiny-cpu"


def test_runner_output_is_understood(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert run.run_id == "tiny-cpu" and run.gpu_key == "h100-sxm"
    assert run.operator_table is not None and run.operator_table.basis == "cpu"
    ((wl, images),) = run_workloads(run)
    img = run.report.inputs.images[0]
    slots = token_layout("base", img.width_px, img.height_px).prompt_slots
    assert images == 1 and wl.mode == "base" and wl.max_new_tokens == 4
    assert wl.prefill_tokens == slots + wl.prompt_text_tokens and wl.prompt_text_tokens > 1
    assert str(wl.attention) == str(run.report.model.attn_implementation)
    assert run.decode_tokens_per_pass() == 4


def test_compare_writes_everything(run_dir: Path) -> None:
    assert compare_cli.main(["--run", str(run_dir)]) == 0
    data = json.loads((run_dir / "compare" / "compare.json").read_text())
    assert all(s["measured_ms"] and s["measured_ms"] > 0 for s in data["stages"])
    assert data["category_basis"] == "cpu"
    assert (run_dir / "unified_report.md").is_file()
