"""The profiler's analytic work per pass: pages of one token layout are one workload at the batch size,
whatever their pixel sizes (A4 and Letter pages of a mode without tiles); several layouts, one per layout."""

from __future__ import annotations

import attrs
import pytest

from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.data.analytic import OCRWorkloadProfile
from llm_perf_opt.data.common import AttentionKind
from llm_perf_opt.inputs import synthetic_pages
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modes import token_layout
from llm_perf_opt.profiling.analytic_work import make_work_fn
from llm_perf_opt.profiling.records import PassRecord
from llm_perf_opt.vocab import DType, Stage


def _record(indices: list[int], slots: int, text: int = 9, steps: int = 8) -> PassRecord:
    return PassRecord(pass_index=0, batch_index=0, repeat_index=0, image_indices=indices,
                      image_names=[str(i) for i in indices], prompt_tokens=len(indices) * (slots + text),
                      image_slots=len(indices) * slots, decode_steps=steps)


def _model(mode: str, width: int, height: int, batch: int) -> AnalyticModel:
    wl = OCRWorkloadProfile.create(profile_id="t", mode=mode, image_width_px=width, image_height_px=height,
                                   prompt_text_tokens=9, max_new_tokens=8, batch_size=batch, dtype=DType.BF16,
                                   attention=AttentionKind.EAGER)
    return AnalyticModel(DeepseekOCRConfig.default(), wl)


def test_pages_of_two_sizes_and_one_layout_are_one_workload() -> None:
    pages = synthetic_pages(4)  # three A4 pages, then a Letter one
    assert len({(p.width, p.height) for p in pages}) == 2
    work = make_work_fn(DeepseekOCRConfig.default(), pages, mode="small", dtype=DType.BF16,
                        attn_implementation="eager")
    slots = token_layout("small", pages[0].width, pages[0].height).prompt_slots
    got = work(_record([0, 1, 2, 3], slots))
    model = _model("small", pages[0].width, pages[0].height, 4)
    decode = model.stages[Stage.DECODE]
    # the decoder's weights are read once per forward for the whole batch, not once per page
    assert got[Stage.DECODE].bytes == pytest.approx(model.shape.decode_forwards * decode.forward_cal_io())
    assert got[Stage.DECODE].flops == pytest.approx(model.shape.decode_forwards * decode.forward_flops())


def test_pages_of_two_layouts_are_one_workload_per_layout() -> None:
    pages = synthetic_pages(4)
    pages[3] = attrs.evolve(pages[3], width=1754, height=1240)  # landscape: another tile grid
    a, b = token_layout("gundam", pages[0].width, pages[0].height), token_layout("gundam", pages[3].width, pages[3].height)
    assert (a.rows, a.cols) != (b.rows, b.cols)
    work = make_work_fn(DeepseekOCRConfig.default(), pages, mode="gundam", dtype=DType.BF16,
                        attn_implementation="eager")
    rec = _record([0, 1, 2, 3], 0)
    rec.prompt_tokens, rec.image_slots = 3 * (a.prompt_slots + 9) + b.prompt_slots + 9, 3 * a.prompt_slots + b.prompt_slots
    got = work(rec)
    three, one = _model("gundam", pages[0].width, pages[0].height, 3), _model("gundam", pages[3].width, pages[3].height, 1)
    for stage in (Stage.VISION_SAM, Stage.DECODE):
        want = sum(m.shape.decode_forwards * m.stages[stage].forward_cal_io() if stage is Stage.DECODE
                   else m.stages[stage].forward_cal_io() for m in (three, one))
        assert got[stage].bytes == pytest.approx(want)
