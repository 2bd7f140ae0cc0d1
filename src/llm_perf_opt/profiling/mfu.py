"""Model FLOPs utilisation (MFU) and memory-bandwidth utilisation (MBU) per stage.

For a stage over all measured passes:

    MFU = sum(analytic FLOPs of the pass's stage) / sum(measured stage seconds) / peak FLOP/s
    MBU = sum(analytic bytes moved)              / sum(measured stage seconds) / peak bytes/s

FLOPs and bytes come from the analytic model for each pass's exact
workload (mode, tile grid, prompt length, generated length, batch); peaks
are the catalogue's DENSE numbers for the detected GPU and dtype, or the
measured ceilings of ``llm-perf-opt hw bench``. ``prefill`` is inclusive of
the vision stages (as measured). The model-level figures use prefill +
decode (FLOPs of the whole request over its device time).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from attrs import define, field

from llm_perf_opt.profiling.records import STATUS_OK, PassRecord
from llm_perf_opt.vocab import VISION_STAGES, Stage


@define(kw_only=True, frozen=True)
class StageWork:
    """Analytic work of one stage of one pass."""

    flops: float = field(metadata={"help": "floating-point operations (a multiply-add = 2)"})
    bytes: float = field(metadata={"help": "bytes moved to/from device memory"})


#: Analytic work of every stage of one pass (prefill inclusive of the vision stages).
WorkFn = Callable[[PassRecord], Mapping[Stage, StageWork]]


@define(kw_only=True, frozen=True)
class Peaks:
    """The peaks MFU/MBU divide by."""

    gpu_key: str = field(metadata={"help": "catalogue key"})
    flops_per_s: float = field(metadata={"help": "dense peak FLOP/s for the run's dtype"})
    bytes_per_s: float = field(metadata={"help": "memory bandwidth, bytes/s"})
    origin: str = field(metadata={"help": "'datasheet' or 'measured' (hw bench ceilings)"})


@define(kw_only=True)
class Utilization:
    """MFU/MBU per stage and for the model, with the totals they came from."""

    peaks: Peaks = field(metadata={"help": "peaks used"})
    stage_mfu: dict[Stage, float] = field(factory=dict, metadata={"help": "MFU per stage (fraction)"})
    stage_mbu: dict[Stage, float] = field(factory=dict, metadata={"help": "MBU per stage (fraction)"})
    model_mfu: float | None = field(default=None, metadata={"help": "MFU of prefill + decode"})
    model_mbu: float | None = field(default=None, metadata={"help": "MBU of prefill + decode"})
    stage_flops: dict[Stage, float] = field(factory=dict, metadata={"help": "analytic FLOPs summed over passes"})
    stage_bytes: dict[Stage, float] = field(factory=dict, metadata={"help": "analytic bytes summed over passes"})
    stage_seconds: dict[Stage, float] = field(factory=dict, metadata={"help": "measured s summed over passes"})
    vision_mfu: float | None = field(default=None, metadata={"help": "MFU of sam + clip + projector together"})


def compute_utilization(records: Sequence[PassRecord], work_fn: WorkFn, peaks: Peaks) -> Utilization:
    """MFU/MBU over the successful records (see module docstring)."""
    out = Utilization(peaks=peaks)
    for r in records:
        if r.status != STATUS_OK:
            continue
        work = work_fn(r)
        for stage, w in work.items():
            ms = r.stage_ms.get(stage.value)
            if ms is None or ms <= 0:
                continue
            out.stage_flops[stage] = out.stage_flops.get(stage, 0.0) + w.flops
            out.stage_bytes[stage] = out.stage_bytes.get(stage, 0.0) + w.bytes
            out.stage_seconds[stage] = out.stage_seconds.get(stage, 0.0) + ms / 1e3
    for stage, seconds in out.stage_seconds.items():
        out.stage_mfu[stage] = out.stage_flops[stage] / seconds / peaks.flops_per_s
        out.stage_mbu[stage] = out.stage_bytes[stage] / seconds / peaks.bytes_per_s
    model_stages = [s for s in (Stage.PREFILL, Stage.DECODE) if s in out.stage_seconds]
    if model_stages:
        seconds = sum(out.stage_seconds[s] for s in model_stages)
        out.model_mfu = sum(out.stage_flops[s] for s in model_stages) / seconds / peaks.flops_per_s
        out.model_mbu = sum(out.stage_bytes[s] for s in model_stages) / seconds / peaks.bytes_per_s
    vis = [s for s in VISION_STAGES if s in out.stage_seconds]
    if vis:
        out.vision_mfu = (sum(out.stage_flops[s] for s in vis) / sum(out.stage_seconds[s] for s in vis)
                          / peaks.flops_per_s)
    return out


def drop_implausible(util: Utilization, limit: float) -> list[str]:
    """Remove from ``util`` every MFU/MBU figure outside [0, ``limit``] (a fraction of the peak), and the
    model's and the vision stages' figures that sum such a stage's work; return one line per figure removed:
    such a figure means the analytic work does not fit the pass (a report keeps its timings without it)."""
    out_of_range = f"of the {util.peaks.origin} peak is outside [0, {limit:.0%}]: the analytic work does not fit " \
                   "this run's passes; left out"
    notes: list[str] = []
    bad: dict[str, set[Stage]] = {"MFU": set(), "MBU": set()}  # stages whose FLOPs / bytes do not fit
    for kind, figures in (("MFU", util.stage_mfu), ("MBU", util.stage_mbu)):
        for stage, value in list(figures.items()):
            if not 0.0 <= value <= limit:
                del figures[stage]
                bad[kind].add(stage)
                notes.append(f"{kind} of {stage.value} {value:.0%} {out_of_range}")
    for kind, attr, stages in (("MFU", "model_mfu", (Stage.PREFILL, Stage.DECODE)),
                               ("MBU", "model_mbu", (Stage.PREFILL, Stage.DECODE)),
                               ("MFU", "vision_mfu", VISION_STAGES)):
        value = getattr(util, attr)
        if value is None:
            continue
        what = f"{kind} of the {'model' if attr.startswith('model') else 'vision stages'} {value:.0%}"
        summed = [s.value for s in stages if s in bad[kind]]
        if summed:
            notes.append(f"{what} sums the work of {', '.join(summed)}; left out with it")
        elif not 0.0 <= value <= limit:
            notes.append(f"{what} {out_of_range}")
        else:
            continue
        setattr(util, attr, None)
    return notes
