"""The caching allocator's counters in pass records: absent off CUDA, summarised in report.md."""

from __future__ import annotations

import json

import torch
from attrs import evolve

from llm_perf_opt.profiling.records import PassRecord
from llm_perf_opt.profiling.session import allocator_counts
from llm_perf_opt.reporting.profile_report import allocator_line


def _rec(**kw: object) -> PassRecord:
    return PassRecord(pass_index=0, batch_index=0, repeat_index=0, image_indices=[0], image_names=["p0"], **kw)


def test_no_counters_off_cuda() -> None:
    assert allocator_counts(torch.device("cpu")) == {}
    assert allocator_line([_rec(), _rec()]) is None  # a CPU run (or an older run) says nothing


def test_the_line_gives_means_per_pass_and_the_largest_reserved() -> None:
    a = _rec(device_allocs=30, decode_device_allocs=20, device_frees=10, alloc_retries=0,
             peak_reserved_bytes=2 * 2**30)
    b = evolve(a, device_allocs=10, decode_device_allocs=4, device_frees=4, alloc_retries=1,
               peak_reserved_bytes=3 * 2**30)
    line = allocator_line([a, b, _rec()])  # the pass without counters is left out of the means
    assert line is not None
    assert "20.0 cudaMalloc (12.0 in the decode), 7.0 cudaFree, 0.5 retries" in line
    assert "peak reserved 3.00 GiB" in line
    # a torch without the retry counter: unknown, not zero
    line = allocator_line([evolve(a, alloc_retries=None)])
    assert line is not None and "cudaFree, - retries" in line


def test_records_round_trip_the_counters() -> None:
    a = _rec(device_allocs=3, device_frees=2, alloc_retries=1, peak_reserved_bytes=123)
    raw = json.loads(json.dumps(a.to_dict()))
    assert PassRecord(**raw) == a
    old = {k: v for k, v in raw.items() if k not in ("device_allocs", "decode_device_allocs", "device_frees",
                                                      "alloc_retries", "peak_reserved_bytes")}
    assert PassRecord(**old).device_allocs is None  # passes.jsonl written before the counters reads
