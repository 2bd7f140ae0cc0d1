"""Regenerate the committed torch.profiler fixture (CPU; run once, commit the JSON).

    PYTHONPATH=src python tests/data/profiler/generate_fixture.py

A tiny nested program under the project's stage ranges (prefill containing
vision.sam, decode containing decode.step.{i}) is profiled with a
wait/warmup/active schedule; the CPU event tree is flattened with
llm_perf_opt.profiling.operators.capture_from_events and written beside
this file as cpu_nested_capture.json.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function, schedule

from llm_perf_opt.profiling.operators import ProfileCapture, capture_from_events

OUT = Path(__file__).with_name("cpu_nested_capture.json")


def main() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    norm = nn.LayerNorm(64)
    proj = nn.Linear(64, 64)
    head = nn.Linear(64, 128)
    x = torch.randn(1, 3, 8, 8)
    captures: list[ProfileCapture] = []

    def on_ready(prof: profile) -> None:
        captures.append(capture_from_events(prof.events(), profiled_steps=2))

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU],
                                  schedule=schedule(wait=0, warmup=1, active=2, repeat=1),
                                  on_trace_ready=on_ready) as prof:
        for _ in range(3):
            with record_function("prefill"):
                with record_function("vision.sam"):
                    h = norm(conv(x).flatten(1)[:, :64])
                h = torch.softmax(proj(h), dim=-1)
            with record_function("decode"):
                for step in range(2):
                    with record_function(f"decode.step.{step}"):
                        h = torch.nn.functional.gelu(proj(h))
                        _ = head(h).argmax(-1)
            prof.step()
    assert len(captures) == 1
    captures[0].save(OUT)
    print(f"wrote {OUT} ({len(captures[0].events)} events)")


if __name__ == "__main__":
    main()
