"""ModelSession.load: a pass over the same pages as the pass before runs that pass's images, not loaded again;
the load figure of the report is the mean of the passes that loaded."""

from __future__ import annotations

import attrs
import torch
from PIL import Image

from llm_perf_opt.inputs import synthetic_pages
from llm_perf_opt.inputs.pages import Page
from llm_perf_opt.models.deepseek_ocr.prompt import resolve_prompt
from llm_perf_opt.profiling.aggregate import aggregate
from llm_perf_opt.profiling.session import ModelSession, SessionSettings
from llm_perf_opt.profiling.timers import StageRecorder
from llm_perf_opt.reporting.profile_report import load_text
from llm_perf_opt.vocab import DType


def counted(page: Page, calls: dict[str, int]) -> Page:
    """The page with a loader that counts its calls in ``calls[page.name]``."""
    image = page.load()

    def load() -> Image.Image:
        calls[page.name] = calls.get(page.name, 0) + 1
        return image.copy()

    return attrs.evolve(page, loader=load)


def test_same_pages_as_the_pass_before_are_not_loaded_again() -> None:
    torch.set_grad_enabled(False)
    s = SessionSettings(config_name="tiny", mode="tiny", prompt=resolve_prompt("document"), max_new_tokens=2,
                        dtype=DType.FP32, device="cpu", batch_size=2)
    session = ModelSession(s, torch.device("cpu"))
    calls: dict[str, int] = {}
    a, b = (counted(p, calls) for p in synthetic_pages(2))

    def run(pages: list[Page]):  # noqa: ANN202 - a PassRecord
        return session.run_pass(pages, StageRecorder("cpu"), probes=False)

    first, again = run([a, b]), run([a, b])
    assert calls == {a.name: 1, b.name: 1}
    assert (first.pages_reused, again.pages_reused) == (False, True)
    assert first.load_ms > 0 and again.load_ms == 0.0
    assert again.stage_ms.keys() == first.stage_ms.keys() and again.image_tokens == first.image_tokens
    other = run([b])  # other pages: loaded
    assert calls[b.name] == 2 and not other.pages_reused
    back = run([a, b])  # only the last pass's images are kept
    assert calls == {a.name: 2, b.name: 3} and not back.pages_reused

    agg = aggregate([first, again, other, back])
    assert agg.load_ms is not None and agg.load_ms.count == 3
    assert abs(agg.load_ms.mean - (first.load_ms + other.load_ms + back.load_ms) / 3) < 1e-9
    recs = [first, again, other, back]
    assert load_text(agg.load_ms, recs).endswith("; the mean of 3 of 4 measured passes, the others ran the images "
                                                 "loaded by the pass before them")
    assert "the mean of" not in load_text(aggregate([first, other]).load_ms, [first, other])
    assert aggregate([again]).load_ms is None
    assert load_text(None, [again]).startswith("not timed: every measured pass ran the images loaded by the pass")
