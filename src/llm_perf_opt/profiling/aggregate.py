"""From pass records to the report's timings and statistics.

A sample is one pass (a batch of pages in one repeat). Statistics are over
every measured sample (images x repeats). Token counts per stage:

- ``vision.sam``, ``vision.clip``, ``projector``: nominal vision tokens of the batch;
- ``prefill``: real prompt tokens of the batch (text + image slots, no padding);
- ``decode``: generated tokens of the batch (one per row per decode step).

pages/s of a pass = pages in the batch / end-to-end host seconds
(preprocessing + prefill + decode, device synchronised; image loading excluded).
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import define, field

from llm_perf_opt.data.common import Stats
from llm_perf_opt.data.profile import StageTiming
from llm_perf_opt.profiling.records import STATUS_OK, PassRecord
from llm_perf_opt.vocab import VISION_STAGES, Stage

#: Stages in report order.
STAGE_ORDER: tuple[Stage, ...] = (*VISION_STAGES, Stage.PREFILL, Stage.DECODE)


def stage_tokens(record: PassRecord, stage: Stage) -> int:
    """Tokens a stage processed (vision, prefill) or generated (decode) in one pass."""
    if stage in VISION_STAGES:
        return record.image_tokens
    if stage is Stage.PREFILL:
        return record.prompt_tokens
    return record.generated_tokens


@define(kw_only=True)
class Aggregates:
    """Statistics of a run's measured passes."""

    timings: list[StageTiming] = field(factory=list, metadata={"help": "one row per pass and stage"})
    stage_ms: dict[Stage, Stats] = field(factory=dict, metadata={"help": "elapsed ms per stage"})
    stage_tokens_per_s: dict[Stage, Stats] = field(factory=dict, metadata={"help": "tokens/s per stage"})
    pages_per_s: Stats | None = field(default=None, metadata={"help": "pages/s per pass"})
    preprocessing_ms: Stats | None = field(default=None, metadata={"help": "host preprocessing per pass, ms"})
    load_ms: Stats | None = field(default=None, metadata={"help": "host image load/draw per pass, ms"})
    e2e_ms: Stats | None = field(default=None, metadata={"help": "end-to-end host ms per pass"})
    decode_ms_per_token: Stats | None = field(default=None, metadata={"help": "decode ms / decode steps per pass"})
    vision_ms: Stats | None = field(default=None, metadata={"help": "sam + clip + projector ms per pass"})
    decode_step_ms: Stats | None = field(default=None, metadata={"help": "every decode step of every pass, ms"})
    ok_records: list[PassRecord] = field(factory=list, metadata={"help": "the passes measured"})


def aggregate(records: Sequence[PassRecord]) -> Aggregates:
    """Statistics over the successful records (failed passes are reported as skipped elsewhere)."""
    ok = [r for r in records if r.status == STATUS_OK]
    out = Aggregates(ok_records=ok)
    if not ok:
        return out
    per_stage: dict[Stage, list[float]] = {}
    per_stage_tps: dict[Stage, list[float]] = {}
    for r in ok:
        for stage in STAGE_ORDER:
            ms = r.stage_ms.get(stage.value)
            if ms is None or ms <= 0:
                continue
            tokens = stage_tokens(r, stage)
            tps = tokens / (ms / 1e3)
            # a batch row per pass: image_index = first page of the batch
            out.timings.append(StageTiming(stage=stage, image_index=r.image_indices[0] if r.image_indices else 0,
                                           repeat_index=r.repeat_index, elapsed_ms=ms, tokens=tokens,
                                           tokens_per_s=tps))
            per_stage.setdefault(stage, []).append(ms)
            per_stage_tps.setdefault(stage, []).append(tps)
    out.stage_ms = {s: Stats.from_values(v) for s, v in per_stage.items()}
    out.stage_tokens_per_s = {s: Stats.from_values(v) for s, v in per_stage_tps.items()}
    e2e = [r.e2e_ms for r in ok if r.e2e_ms > 0]
    if e2e:
        out.e2e_ms = Stats.from_values(e2e)
        out.pages_per_s = Stats.from_values(len(r.image_names) / (r.e2e_ms / 1e3) for r in ok if r.e2e_ms > 0)
    out.preprocessing_ms = Stats.from_values(r.preprocess_ms for r in ok)
    loads = [r.load_ms for r in ok if not r.pages_reused]
    out.load_ms = Stats.from_values(loads) if loads else None
    per_tok = [r.stage_ms[Stage.DECODE.value] / r.decode_steps for r in ok
               if r.decode_steps > 0 and r.stage_ms.get(Stage.DECODE.value, 0) > 0]
    if per_tok:
        out.decode_ms_per_token = Stats.from_values(per_tok)
    steps = [ms for r in ok for ms in r.decode_step_ms]
    if steps:
        out.decode_step_ms = Stats.from_values(steps)
    vis = [sum(r.stage_ms.get(s.value, 0.0) for s in VISION_STAGES) for r in ok]
    if any(v > 0 for v in vis):
        out.vision_ms = Stats.from_values(vis)
    return out
