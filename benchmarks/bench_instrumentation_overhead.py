"""Overhead of the profiling runner's instrumentation on decode: the same decode with and without it.

Each repeat runs prefill (not timed), then ``--tokens`` decode steps timed
from the outside with a synchronised host clock, in three variants run in
rotating order (so drift and warm-up hit them equally):

- ``bare``: no scope at all (what an application would run);
- ``timed``: the runner's timed passes: NVTX ranges (CUDA) + one CUDA-event
  pair per range (host clock on CPU), ``decode`` and every ``decode.step.{i}``;
- ``profiler-ranges``: the profiler pass's ``record_function`` ranges
  (without a profiler running, i.e. their fixed cost only).

Prints median decode ms per variant and the ratio to ``bare``. Works on CPU
(tiny config) and CUDA (default config)::

    PYTHONPATH=src python benchmarks/bench_instrumentation_overhead.py --device cpu --config tiny
    PYTHONPATH=src python benchmarks/bench_instrumentation_overhead.py --device cuda --tokens 64 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from typing import Any

import torch

from llm_perf_opt.inputs import synthetic_pages
from llm_perf_opt.models.deepseek_ocr import DEFAULT_PROMPT, build_prompt, decode_step, prefill
from llm_perf_opt.profiling.session import ModelSession, SessionSettings, resolve_device
from llm_perf_opt.profiling.timers import StageRecorder, host_sync
from llm_perf_opt.vocab import Stage, parse_dtype

VARIANTS = ("bare", "timed", "profiler-ranges")


def decode_ms(session: ModelSession, variant: str, tokens: int) -> float:
    """Prefill (untimed), then ``tokens`` decode steps timed from outside; ms."""
    s = session.settings
    images, _, _ = session.preprocess(synthetic_pages(1, seed=s.seed))
    batch = build_prompt([im.layout for im in images], s.prompt)
    state = prefill(session.model, batch, images)
    recorder: StageRecorder | None = None
    if variant == "timed":
        recorder = StageRecorder(session.device, nvtx=True)
    elif variant == "profiler-ranges":
        recorder = StageRecorder(session.device, nvtx=False, record_function=True, timing=False)
    scope = recorder.scope if recorder else None
    outer: Any = recorder.scope(Stage.DECODE.value) if recorder else contextlib.nullcontext()
    host_sync(session.device)
    t0 = time.perf_counter()
    with outer:
        for i in range(tokens):
            state = decode_step(session.model, state, scope=scope, fixed_length=True, forward=i < tokens - 1,
                                no_repeat_ngram_size=s.no_repeat_ngram_size)
    host_sync(session.device)
    elapsed = (time.perf_counter() - t0) * 1e3
    if recorder is not None:
        recorder.collect()  # reading the events is after the timed region, as in the runner
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    p.add_argument("--config", default=None, help="model config (default: 'default' on CUDA, 'tiny' on CPU)")
    p.add_argument("--mode", default=None, help="resolution mode (default: base on CUDA, tiny on CPU)")
    p.add_argument("--dtype", default=None, help="dtype (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--tokens", type=int, default=32, help="decode steps per measurement (default 32)")
    p.add_argument("--repeats", type=int, default=5, help="measurements per variant (default 5)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    settings = SessionSettings(config_name=args.config or ("default" if cuda else "tiny"),
                               mode=args.mode or ("base" if cuda else "tiny"), prompt=DEFAULT_PROMPT,
                               max_new_tokens=args.tokens, dtype=parse_dtype(args.dtype or ("bf16" if cuda else "fp32")),
                               device=str(device))
    session = ModelSession(settings, device)
    for v in VARIANTS:  # warm-up of every variant
        decode_ms(session, v, min(args.tokens, 4))
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
        for v in order:
            times[v].append(decode_ms(session, v, args.tokens))
    med = {v: statistics.median(t) for v, t in times.items()}
    result = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu", "config": settings.config_name,
        "mode": settings.mode, "dtype": settings.dtype.value, "tokens": args.tokens, "repeats": args.repeats,
        "median_decode_ms": med, "ratio_to_bare": {v: med[v] / med["bare"] for v in VARIANTS},
        "per_token_overhead_ms": {v: (med[v] - med["bare"]) / args.tokens for v in VARIANTS},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"decode of {args.tokens} tokens, {args.repeats} repeats, {result['device']}, "
              f"config {settings.config_name}, mode {settings.mode}, {settings.dtype.value}")
        print(f"{'variant':<16} {'median ms':>10} {'ratio':>7} {'ms/token overhead':>18}")
        for v in VARIANTS:
            print(f"{v:<16} {med[v]:>10.2f} {result['ratio_to_bare'][v]:>7.3f} "
                  f"{result['per_token_overhead_ms'][v]:>18.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
