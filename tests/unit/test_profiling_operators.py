"""Operator table: no double counting of nested operators, stage split, category mapping.

Fixture: tests/data/profiler/cpu_nested_capture.json, a real torch.profiler capture of a tiny nested
program under the project's stage ranges (regenerate with tests/data/profiler/generate_fixture.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from llm_perf_opt.analytic.target_operators import categorize_op
from llm_perf_opt.profiling.operators import (
    BASIS_CPU,
    BASIS_CUDA,
    OUTSIDE_STAGES,
    OpEvent,
    ProfileCapture,
    build_operator_table,
    capture_from_events,
    stage_of,
)
from llm_perf_opt.vocab import OperatorCategory, Stage

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "profiler" / "cpu_nested_capture.json"


@pytest.fixture(scope="module")
def capture() -> ProfileCapture:
    return ProfileCapture.load(FIXTURE)


def _roots(c: ProfileCapture) -> list[OpEvent]:
    return [e for e in c.events if e.parent is None]


def test_fixture_has_nesting_that_would_double_count(capture: ProfileCapture) -> None:
    table = build_operator_table(capture, categorize_op)
    summed_totals = sum(r.total_cpu_time_ms for r in table.rows)
    # aten::linear contains aten::addmm: summing totals counts the same work more than once
    assert summed_totals > 1.5 * table.total_self_ms
    linear = next(r for r in table.rows if r.op_name == "aten::linear")
    assert linear.self_cpu_time_ms < linear.total_cpu_time_ms


def test_self_times_add_up_to_the_root_totals(capture: ProfileCapture) -> None:
    """Sum of operator self time + range self time == wall time of the root ranges (each us counted once)."""
    table = build_operator_table(capture, categorize_op)
    assert table.basis == BASIS_CPU
    range_self_ms = sum(e.self_cpu_us for e in capture.events if e.is_range) / 1e3
    roots_ms = sum(e.cpu_total_us for e in _roots(capture)) / 1e3
    assert math.isclose(table.total_self_ms + range_self_ms, roots_ms, rel_tol=1e-6)
    assert math.isclose(sum(r.share_of_total for r in table.rows), 1.0, rel_tol=1e-9)
    assert table.rows == sorted(table.rows, key=lambda r: -r.self_cpu_time_ms)


def test_ranges_are_never_rows_and_steps_are_counted(capture: ProfileCapture) -> None:
    table = build_operator_table(capture, categorize_op)
    names = {r.op_name for r in table.rows}
    assert not names & {"prefill", "vision.sam", "decode", "decode.step.0", "decode.step.1"}
    assert not any(n.startswith("ProfilerStep") for n in names)
    assert table.profiled_steps == 2
    # two active steps x one conv2d each
    assert next(r for r in table.rows if r.op_name == "aten::conv2d").calls == 2
    # two steps x two decode steps x (proj + head) linears + one prefill proj per step
    assert next(r for r in table.rows if r.op_name == "aten::linear").calls == 2 * (2 * 2 + 1)


def test_stage_split_is_innermost_and_complete(capture: ProfileCapture) -> None:
    table = build_operator_table(capture, categorize_op)
    labels = stage_of(capture)
    by_name: dict[str, set[str]] = {}
    for e, label in zip(capture.events, labels, strict=True):
        by_name.setdefault(e.name, set()).add(label)
    assert by_name["aten::conv2d"] == {Stage.VISION_SAM.value}  # inside vision.sam inside prefill
    assert by_name["aten::softmax"] == {Stage.PREFILL.value}
    assert by_name["aten::gelu"] == {Stage.DECODE.value}  # decode.step.i counts as decode
    assert by_name["aten::argmax"] == {Stage.DECODE.value}
    assert set(table.stage_ms) <= {s.value for s in Stage} | {OUTSIDE_STAGES}
    assert math.isclose(sum(table.stage_ms.values()), table.total_self_ms, rel_tol=1e-9)
    for stage, cats in table.stage_category_ms.items():
        assert math.isclose(sum(cats.values()), table.stage_ms[stage], rel_tol=1e-9)


def test_categories_come_from_the_target_operator_list(capture: ProfileCapture) -> None:
    table = build_operator_table(capture, categorize_op)
    cat = {r.op_name: r.category for r in table.rows}
    assert cat["aten::addmm"] is OperatorCategory.GEMM
    assert cat["aten::native_layer_norm"] is OperatorCategory.NORM
    assert cat["aten::gelu"] is OperatorCategory.ELEMENTWISE
    assert cat["aten::_softmax"] is OperatorCategory.ATTENTION
    for r in table.rows:
        assert r.category is categorize_op(r.op_name)
    assert math.isclose(sum(table.category_ms.values()), table.total_self_ms, rel_tol=1e-9)


def test_unknown_operators_stay_uncategorized() -> None:
    cap = ProfileCapture(events=[
        OpEvent(name="my::custom_op", parent=None, self_cpu_us=5.0, cpu_total_us=5.0, self_device_us=0.0,
                is_range=False),
        OpEvent(name="aten::mm", parent=None, self_cpu_us=15.0, cpu_total_us=15.0, self_device_us=0.0,
                is_range=False),
    ])
    table = build_operator_table(cap, categorize_op)
    row = next(r for r in table.rows if r.op_name == "my::custom_op")
    assert row.category is OperatorCategory.UNCATEGORIZED
    assert table.category_ms[OperatorCategory.UNCATEGORIZED.value] == pytest.approx(0.005)
    assert row.share_of_total == pytest.approx(0.25)


def test_device_time_is_the_kernels_each_operator_launched_itself() -> None:
    """A CUDA-shaped capture: parent ops carry no kernel time of their children; range kernels are unattributed."""
    ev = [
        OpEvent(name="decode", parent=None, self_cpu_us=2.0, cpu_total_us=40.0, self_device_us=3.0, is_range=True),
        OpEvent(name="aten::linear", parent=0, self_cpu_us=4.0, cpu_total_us=20.0, self_device_us=0.0,
                is_range=False),
        OpEvent(name="aten::addmm", parent=1, self_cpu_us=16.0, cpu_total_us=16.0, self_device_us=10.0,
                is_range=False),
        OpEvent(name="aten::softmax", parent=0, self_cpu_us=18.0, cpu_total_us=18.0, self_device_us=5.0,
                is_range=False),
    ]
    cap = ProfileCapture(events=ev, device_kernel_us=18.0, profiled_steps=1)
    table = build_operator_table(cap, categorize_op)
    assert table.basis == BASIS_CUDA
    rows = {r.op_name: r for r in table.rows}
    assert rows["aten::addmm"].self_cuda_time_ms == pytest.approx(0.010)
    assert rows["aten::linear"].self_cuda_time_ms == 0.0
    assert table.total_self_ms == pytest.approx(0.015)
    assert table.unattributed_device_ms == pytest.approx(0.003)
    assert [r.op_name for r in table.rows[:2]] == ["aten::addmm", "aten::softmax"]
    assert table.stage_ms == {Stage.DECODE.value: pytest.approx(0.015)}


def test_capture_of_a_live_profile_round_trips(tmp_path: Path) -> None:
    from torch.profiler import ProfilerActivity, profile, record_function

    lin = torch.nn.Linear(8, 8)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof, record_function("prefill"):
        lin(torch.randn(2, 8))
    cap = capture_from_events(prof.events(), profiled_steps=1)
    assert any(e.is_range and e.name == "prefill" for e in cap.events)
    assert any(e.name == "aten::addmm" for e in cap.events)
    path = tmp_path / "cap.json"
    cap.save(path)
    again = ProfileCapture.load(path)
    assert again.events == cap.events
    table = build_operator_table(again, categorize_op)
    assert table.stage_ms.get(Stage.PREFILL.value, 0.0) > 0


def test_kernels_and_host_time_are_counted_per_stage() -> None:
    """Each operator's own kernels and self CPU time add up per innermost stage; ranges add nothing."""
    ev = [
        OpEvent(name="prefill", parent=None, self_cpu_us=1.0, cpu_total_us=100.0, self_device_us=0.0,
                is_range=True, kernel_count=1),
        OpEvent(name="vision.sam", parent=0, self_cpu_us=1.0, cpu_total_us=50.0, self_device_us=0.0,
                is_range=True),
        OpEvent(name="aten::conv2d", parent=1, self_cpu_us=30.0, cpu_total_us=30.0, self_device_us=8.0,
                is_range=False, kernel_count=3),
        OpEvent(name="aten::mm", parent=0, self_cpu_us=12.0, cpu_total_us=12.0, self_device_us=4.0,
                is_range=False, kernel_count=1),
        OpEvent(name="aten::add", parent=0, self_cpu_us=6.0, cpu_total_us=6.0, self_device_us=1.0,
                is_range=False, kernel_count=2),
    ]
    cap = ProfileCapture(events=ev, device_kernel_us=13.0, profiled_steps=2)
    table = build_operator_table(cap, categorize_op)
    assert table.stage_kernels == {Stage.VISION_SAM.value: 3, Stage.PREFILL.value: 3}
    assert table.stage_host_ms == {Stage.VISION_SAM.value: pytest.approx(0.030), Stage.PREFILL.value: pytest.approx(0.018)}
    summary = table.summary_dict()
    assert summary["stage_kernels"] == table.stage_kernels
    # the capture file keeps the counts (old captures without them load as 0)
    again = ProfileCapture.from_dict(cap.to_dict())
    assert [e.kernel_count for e in again.events] == [1, 0, 3, 1, 2]
    legacy = cap.to_dict()
    for e in legacy["events"]:
        del e["kernel_count"]
    old_capture = ProfileCapture.from_dict(legacy)
    assert all(e.kernel_count == 0 for e in old_capture.events)
    # a capture without kernel counts (older version, or CPU) reports none rather than zeros
    assert build_operator_table(old_capture, categorize_op).stage_kernels == {}


def test_the_profiler_pass_takes_no_host_probe(tmp_path: Path) -> None:
    """The host-speed probes' kernels would land in the operator table's '(outside stages)' row."""
    from typing import Any

    from llm_perf_opt.profiling.torch_prof import run_profiler_pass

    calls: list[dict[str, Any]] = []

    class Session:
        device = torch.device("cpu")

        def run_pass(self, pages: Any, recorder: Any, **kwargs: Any) -> None:
            calls.append(kwargs)
            torch.ones(4).add_(1.0)

    run_profiler_pass(Session(), [[], []], tmp_path / "trace.json.gz", warmup_steps=1,  # type: ignore[arg-type]
                      max_new_tokens=2)
    assert len(calls) == 3 and all(c == {"max_new_tokens": 2, "probes": False} for c in calls)
