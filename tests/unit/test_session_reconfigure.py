"""ModelSession.reconfigure: what the next passes run changes, the built model does not."""

from __future__ import annotations

import pytest
import torch

from llm_perf_opt.errors import UserError
from llm_perf_opt.inputs import synthetic_pages
from llm_perf_opt.models.deepseek_ocr.prompt import resolve_prompt
from llm_perf_opt.profiling.session import ModelSession, SessionSettings
from llm_perf_opt.profiling.timers import StageRecorder
from llm_perf_opt.vocab import DType


def test_reconfigure_changes_the_next_pass_only() -> None:
    torch.set_grad_enabled(False)
    s = SessionSettings(config_name="tiny", mode="tiny", prompt=resolve_prompt("document"), max_new_tokens=2,
                        dtype=DType.FP32, device="cpu")
    session = ModelSession(s, torch.device("cpu"))
    model = session.model
    page = synthetic_pages(1)[0].cached()
    one = session.run_pass([page], StageRecorder("cpu"), probes=False)
    session.reconfigure(mode="small", batch_size=2, max_new_tokens=3, no_repeat_ngram_size=0)
    two = session.run_pass([page, page], StageRecorder("cpu"), probes=False)
    assert session.model is model and session.settings.attn_implementation == s.attn_implementation
    assert (one.decode_steps, two.decode_steps) == (2, 3)
    assert two.image_slots > 2 * one.image_slots  # small (640 px) has more image tokens per page than tiny
    assert session.settings.no_repeat_ngram_size == 0 and session.settings.batch_size == 2
    session.reconfigure(max_new_tokens=4)  # what is not given stays
    assert (session.settings.mode, session.settings.batch_size, session.settings.max_new_tokens) == ("small", 2, 4)
    with pytest.raises(UserError, match="huge"):
        session.reconfigure(mode="huge")
    assert session.settings.mode == "small"
