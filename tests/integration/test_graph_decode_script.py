"""scripts/gpu/graph_decode.py must work first time on the GPU.

Its snapshot / restore run for real on CPU with the tiny config; the measurement runs with CUDA events,
streams and graphs replaced by host stand-ins (the "capture" runs the step once, eagerly, as a capture
does) and a fixed device trace.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from script_loader import load_script

from llm_perf_opt.models.deepseek_ocr import build_prompt, decode_step, prefill, preprocess_image
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.generation import kv_cache_shapes
from llm_perf_opt.models.deepseek_ocr.modeling import build_model


def _script() -> Any:
    return load_script("gpu/graph_decode.py")


@pytest.fixture(scope="module")
def model() -> Any:
    return build_model(DeepseekOCRConfig.named("tiny"), device="cpu", dtype=torch.float32, seed=0)


class _HostEvent:
    def __init__(self, enable_timing: bool = True) -> None:
        self.t = 0.0

    def record(self) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, other: _HostEvent) -> float:
        return (other.t - self.t) * 1e3


class _Graph:
    replays = 0

    def replay(self) -> None:
        _Graph.replays += 1


class _Stream:
    def wait_stream(self, other: Any) -> None:
        pass


def _stand_ins(monkeypatch: pytest.MonkeyPatch, gd: Any, capture: Any) -> list[tuple[Any, int]]:
    monkeypatch.setattr(torch.cuda, "Event", _HostEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "Stream", _Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: _Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _Graph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(gd, "host_probe_us", lambda _dev: 7.5)
    traced: list[tuple[Any, int]] = []

    def trace(fn: Any, reps: int) -> list[tuple[float, float]]:
        traced.append((fn, reps))
        # two kernels per call, calls back to back: 3 us of kernels in a 4 us span each
        return [t for i in range(reps) for t in ((4.0 * i, 4.0 * i + 2, "gemm"), (4.0 * i + 3, 4.0 * i + 4, "copy"))]
    monkeypatch.setattr(gd, "trace_spans", trace)
    return traced


def test_a_restored_state_runs_the_same_step_again(model: Any) -> None:
    gd = _script()
    pre = [preprocess_image(p.load(), "tiny") for p in gd.synthetic_pages(2)]
    state = prefill(model, build_prompt([p.layout for p in pre]), pre)
    snap = gd.snapshot(state)
    first = decode_step(model, gd.restore(snap), fixed_length=True, pass_mask=False)
    second = decode_step(model, gd.restore(snap), fixed_length=True, pass_mask=False)
    assert torch.equal(first.logits, second.logits) and torch.equal(first.tokens, second.tokens)
    length = state.prompt_length
    assert kv_cache_shapes(first.past_key_values)[0][0][2] == length + 1
    assert kv_cache_shapes(gd.restore(snap).past_key_values)[0][0][2] == length
    assert gd.restore(snap).step == 0 and first.step == 1


def test_measure_records_the_eager_and_the_replayed_step(model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gd = _script()
    captured = []

    @contextlib.contextmanager
    def capture(g: Any) -> Any:
        captured.append(g)
        yield

    traced = _stand_ins(monkeypatch, gd, capture)
    _Graph.replays = 0
    rec, eager, graph = gd.measure(model, gd.batch_pages("tiny", 2), "tiny", "eager", "grouped_mm", steps=3,
                                   replays=4, sets=2, ngram=0)
    assert rec["kv_len"] == rec["prompt_length"] + 4 and rec["batch"] == 2 and rec["no_repeat_ngram_size"] == 0
    assert rec["host_probe_add_us"] == 7.5 and len(rec["eager_ms_all"]) == 10
    assert len(captured) == 1 and "graph_error" not in rec and isinstance(graph, _Graph)
    assert _Graph.replays == 5 + 4 * 2  # warm-up replays, then the timed sets
    assert len(rec["graph_ms_all"]) == 2 and rec["graph_ms"] >= 0
    assert not traced and "graph_trace" not in rec  # nothing traced while timing
    gd.trace(rec, eager, graph, 4, 2)
    assert [reps for _, reps in traced] == [1, 3] and _Graph.replays == 5 + 4 * 2 + 4 * 2  # timed again after
    assert rec["graph_trace"] == {"kernels": 2.0, "kernel_sum_ms": 0.003, "span_ms": 0.004, "top": [
        {"name": "gemm", "launches": 1.0, "ms": 0.002}, {"name": "copy", "launches": 1.0, "ms": 0.001}]}
    assert rec["graph_ms_traced_process"] >= 0
    assert "2 kernels, sum 0.003 ms" in gd._line(rec) and "before any trace" in gd._line(rec)
    json.dumps(rec)


def test_a_failed_capture_is_recorded(model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gd = _script()

    @contextlib.contextmanager
    def capture(g: Any) -> Any:
        raise RuntimeError("operation not permitted when stream is capturing\nmore")
        yield

    traced = _stand_ins(monkeypatch, gd, capture)
    rec, eager, graph = gd.measure(model, gd.batch_pages("tiny", 1), "tiny", "eager", "grouped_mm", steps=1,
                                   replays=2, sets=1, ngram=20)
    assert rec["graph_error"] == "RuntimeError: operation not permitted when stream is capturing"
    assert "graph_ms" not in rec and rec["eager_ms"] > 0 and graph is None
    gd.trace(rec, eager, graph, 2, 1)
    assert [reps for _, reps in traced] == [1] and "graph_trace" not in rec
    assert gd._line(rec).endswith("capture failed: RuntimeError: operation not permitted when stream is capturing")


def test_trace_figures_per_call() -> None:
    gd = _script()
    trace = [(0.0, 10.0, "a"), (11.0, 15.0, "b"), (100.0, 110.0, "a"), (111.0, 115.0, "b"), (116.0, 117.0, "b")]
    assert gd.trace_figures(trace, 2) == {"kernels": 2.5, "kernel_sum_ms": 0.0145, "span_ms": 0.0585, "top": [
        {"name": "a", "launches": 1.0, "ms": 0.01}, {"name": "b", "launches": 1.5, "ms": 0.0045}]}
    assert gd.trace_figures([], 3) == {"kernels": 0.0, "kernel_sum_ms": 0.0, "span_ms": 0.0, "top": []}


def test_an_interrupted_run_keeps_its_timed_records(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    gd = _script()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gd, "build_model", lambda *a, **k: object())
    timed: list[int] = []

    def measure(model: Any, pre: list[int], mode: str, *rest: Any) -> tuple[dict[str, Any], Any, Any]:
        if timed:
            raise KeyboardInterrupt
        timed.append(len(pre))
        return {"mode": mode, "batch": len(pre)}, None, None

    monkeypatch.setattr(gd, "measure", measure)
    monkeypatch.setattr(gd, "batch_pages", lambda mode, batch: list(range(batch)))
    out = tmp_path / "g.json"
    assert gd.main(["--attn", "sdpa", "--batches", "1,4", "--out", str(out)]) == 130
    assert json.loads(out.read_text()) == {"records": [{"mode": "base", "batch": 1}]}
    assert "interrupted; 1 records kept in" in capsys.readouterr().err


def test_a_batch_draws_six_pages_and_has_the_layouts_of_the_synthetic_set(monkeypatch: pytest.MonkeyPatch) -> None:
    gd = _script()
    drawn: list[str] = []
    real = gd.synthetic_pages

    def counting(count: int) -> Any:
        pages = real(count)
        drawn.extend(p.name for p in pages)
        return pages

    monkeypatch.setattr(gd, "synthetic_pages", counting)
    pre = gd.batch_pages("tiny", 8)
    assert len(drawn) == gd.DISTINCT_PAGES == 6 and len(pre) == 8
    assert pre[6] is pre[0] and pre[7] is pre[1] and len({id(p) for p in pre}) == 6  # drawn once, cycled
    # page i of the cycle has the category and paper size (so the layout) of synthetic page i
    assert [(p.width, p.height) for p in pre] == [(p.width, p.height) for p in real(8)]
    assert len(gd.batch_pages("tiny", 2)) == 2 and len(drawn) == 8


def test_the_ban_setting_reaches_every_step(model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gd = _script()
    seen: list[int] = []
    real = gd.decode_step

    def step(*args: Any, **kw: Any) -> Any:
        seen.append(kw["no_repeat_ngram_size"])
        return real(*args, **kw)

    monkeypatch.setattr(gd, "decode_step", step)

    @contextlib.contextmanager
    def capture(g: Any) -> Any:
        yield

    _stand_ins(monkeypatch, gd, capture)
    gd.measure(model, gd.batch_pages("tiny", 1), "tiny", "eager", "grouped_mm", steps=2, replays=1, sets=1, ngram=3)
    assert seen and set(seen) == {3}
