"""The decoder's host-device syncs in the analytic model against those measured on the H200.

reports/profile/h200-timeline/prefill-timeline-*.json hold, per batch size, every synchronising CUDA call
of one pass (prefill + decode steps) that torch's sync debug mode reported, by the code line that made it
(scripts/gpu/prefill_timeline.py). The timeline model charges the syncs the layers declare.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_perf_opt.analytic.layers.decoder import MASK_SYNCS, MERGE_SYNCS, ImageTokenMerge
from llm_perf_opt.analytic.layers.llama import RotaryEmbedding
from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.data.analytic import OCRWorkloadProfile
from llm_perf_opt.data.common import AttentionKind
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.vocab import Stage

TRACES = Path(__file__).resolve().parents[2] / "reports" / "profile" / "h200-timeline"
CFG = DeepseekOCRConfig.named("default")


def _kind(site: str) -> str:
    """Which part of the pass made a sync, from its code line."""
    if "merge_embeddings" in site or ("generation.py" in site and " prefill:" in site):
        return "prompt"
    if "masking_utils" in site:
        return "mask"
    if "get_rel_pos" in site or "encode_sam" in site:
        return "vision"
    if "set_sync_debug_mode" in site:  # the mode switch itself (older script versions counted it)
        return "mode"
    return "other"


def _counts(res: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for site, n in res["sync_sites"].items():
        counts[_kind(site)] = counts.get(_kind(site), 0) + n
    return counts


def _stage_syncs(model: AnalyticModel, stage: Stage) -> int:
    return sum(node.host_syncs for _, node in model.stages[stage].walk())


def _model(mode: str, batch: int, attention: AttentionKind) -> AnalyticModel:
    wl = OCRWorkloadProfile.create(profile_id="p", mode=mode, image_width_px=1240, image_height_px=1754,
                                   prompt_text_tokens=9, max_new_tokens=4, batch_size=batch, attention=attention)
    return AnalyticModel(CFG, wl)


@pytest.mark.parametrize("trace, attention", [("prefill-timeline-base.json", AttentionKind.EAGER),
                                              ("prefill-timeline-gundam.json", AttentionKind.EAGER),
                                              ("prefill-timeline-base-sdpa.json", AttentionKind.SDPA)])
def test_decoder_declares_the_measured_syncs(trace: str, attention: AttentionKind) -> None:
    data = json.loads((TRACES / trace).read_text())
    assert data["attn"] == attention.value
    forwards = data["decode_steps"]  # the prefill's forward + every decode step but the last
    assert len(data["results"]) == 2
    for res in data["results"]:
        counts = _counts(res)
        assert counts.get("other", 0) == 0, res["sync_sites"]
        b = res["batch"]
        model = _model(res["mode"], b, attention)
        merge = [n for _, n in model.stages[Stage.PREFILL].walk() if isinstance(n, ImageTokenMerge)]
        assert [m.host_syncs for m in merge] == [counts["prompt"]] == [MERGE_SYNCS + b]
        assert counts["mask"] == MASK_SYNCS * forwards
        rotary = [n for _, n in model.stages[Stage.DECODE].walk() if isinstance(n, RotaryEmbedding)]
        assert [r.host_syncs for r in rotary] == [MASK_SYNCS]
        assert _stage_syncs(model, Stage.PREFILL) == MERGE_SYNCS + b + MASK_SYNCS
        assert _stage_syncs(model, Stage.DECODE) == MASK_SYNCS  # per forward
