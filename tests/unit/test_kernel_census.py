"""Analytic kernel launches per stage against the kernel census of the profiled H200 stack.

tests/data/census/census-h200-stages.json holds, per workload (mode:batch) and stage, the device
kernels (memcpy and memset included) the runner's operators launched in one profiled pass
(scripts/gpu/kernel_census.py; decode per decoder forward). The timeline model charges host time
per launch, so the analytic count must follow what CUDA launches, not only the aten calls. cuBLAS and
GEMM workspace memsets depend on cuBLAS's heuristics and are left out of the comparison.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.data.analytic import OCRWorkloadProfile
from llm_perf_opt.inputs.synthetic import synthetic_pages
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.vocab import Stage

CENSUS = json.loads((Path(__file__).parents[1] / "data" / "census" / "census-h200-stages.json").read_text())
CFG = DeepseekOCRConfig.named("default")
STAGES = [Stage.VISION_SAM, Stage.VISION_CLIP, Stage.PROJECTOR, Stage.PREFILL, Stage.DECODE]


def _model(key: str) -> AnalyticModel:
    mode, batch = key.split(":")
    page = synthetic_pages(int(batch))[0]
    wl = OCRWorkloadProfile.create(profile_id=key, mode=mode, image_width_px=page.width,
                                   # the census's decode pass: 4 token picks over 3 forwards (the ban's share)
                                   image_height_px=page.height, prompt_text_tokens=9,
                                   max_new_tokens=CENSUS["new_tokens"],
                                   batch_size=int(batch), attention="eager", experts="grouped_mm")
    return AnalyticModel(CFG, wl)


def _counted(key: str, stage: Stage) -> dict[str, Any]:
    return CENSUS["workloads"][key]["stages"][stage.value]


@pytest.mark.parametrize("key", sorted(CENSUS["workloads"]))
def test_stage_launches_follow_the_census(key: str) -> None:
    model = _model(key)
    for stage in STAGES:
        counted = _counted(key, stage)
        without_memsets = counted["kernels"] - counted["gemm_memsets"]
        predicted = model.stages[stage].forward_kernel_launches()
        # SAM, CLIP, projector and decode within 1-5%; the rest is cuBLAS split-K choices (a second kernel
        # for some GEMM shapes: CLIP on Small views, prefill)
        assert predicted == pytest.approx(without_memsets, rel=0.055), (key, stage.value, predicted, counted)


@pytest.mark.parametrize("key", ["base:1", "base:4", "gundam:2"])
def test_decode_launches_per_forward_are_exact(key: str) -> None:
    counted = _counted(key, Stage.DECODE)
    predicted = _model(key).stages[Stage.DECODE].forward_kernel_launches()
    assert predicted == pytest.approx(counted["kernels"] - counted["gemm_memsets"], abs=1.0)


def test_large_sorts_switch_to_radix_sort() -> None:
    """Prefill sorts T*k routing keys: base b1 (~1,700 keys) sorts in place, gundam b1 (~5,400) runs cub's
    radix sort (21 launches more per MoE layer instead of 4); the analytic count moves as the census does."""
    b1, gundam = _model("base:1"), _model("gundam:1")
    step = gundam.stages[Stage.PREFILL].forward_kernel_launches() - b1.stages[Stage.PREFILL].forward_kernel_launches()
    counted = _counted("gundam:1", Stage.PREFILL)["kernels"] - _counted("base:1", Stage.PREFILL)["kernels"]
    assert step == pytest.approx(counted, rel=0.15)
    assert step > 150
