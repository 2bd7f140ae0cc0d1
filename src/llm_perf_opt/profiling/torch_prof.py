"""The torch.profiler pass: operator events over a chosen number of batches.

Run after the timed passes (the profiler's own overhead must not touch the
timings). The schedule is ``wait=0, warmup=W, active=K``: W warm-up steps
(the first batch, discarded: they absorb the profiler's start-up cost)
then one active step per profiled batch. Every stage and decode step is a
``record_function`` range, so the operator table can be split by stage. The
Chrome/Perfetto trace of the active steps is written gzip-compressed.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from llm_perf_opt.inputs.pages import Page
from llm_perf_opt.profiling.operators import ProfileCapture, capture_from_events
from llm_perf_opt.profiling.session import ModelSession
from llm_perf_opt.profiling.timers import StageRecorder


def run_profiler_pass(session: ModelSession, batches: Sequence[Sequence[Page]], trace_path: Path, *,
                      warmup_steps: int = 1, max_new_tokens: int | None = None,
                      on_step: Callable[[int, int], None] | None = None) -> ProfileCapture:
    """Profile ``batches`` (active steps) after ``warmup_steps`` runs of the first batch.

    Writes the trace to ``trace_path`` (``.json.gz``) and returns the flattened event capture.
    ``max_new_tokens`` overrides the decode length (long decodes make very large traces).
    """
    if not batches:
        raise ValueError("run_profiler_pass needs at least one batch")
    activities = [ProfilerActivity.CPU]
    if session.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    captures: list[ProfileCapture] = []
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    raw_trace = trace_path.with_suffix("")  # drop .gz -> .json

    def on_ready(prof: profile) -> None:
        prof.export_chrome_trace(str(raw_trace))
        captures.append(capture_from_events(prof.events(), profiled_steps=len(batches)))

    steps = [batches[0]] * warmup_steps + list(batches)
    with profile(activities=activities, schedule=schedule(wait=0, warmup=warmup_steps, active=len(batches),
                                                          repeat=1),
                 on_trace_ready=on_ready, record_shapes=False, with_stack=False) as prof:
        for i, batch in enumerate(steps):
            recorder = StageRecorder(session.device, nvtx=False, record_function=True, timing=False)
            session.run_pass(batch, recorder, max_new_tokens=max_new_tokens, probes=False)
            if on_step is not None:
                on_step(i, len(steps))
            prof.step()
    if not captures:
        raise RuntimeError("torch.profiler produced no trace (schedule did not complete)")
    with open(raw_trace, "rb") as src, gzip.open(trace_path, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst)
    os.remove(raw_trace)
    if session.device.type == "cuda":
        torch.cuda.synchronize(session.device)
    return captures[0]
