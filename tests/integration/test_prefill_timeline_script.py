"""scripts/gpu/prefill_timeline.py and launch_cost_check.py must work first time on the GPU.

prefill_timeline.py's pass, marks and summaries run here on CPU with the tiny config, CUDA events
replaced by host-clock stand-ins (so every backlog reads ~0); its sync counter is fed warnings of the
form torch's sync debug mode emits.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import pytest
import torch
from script_loader import load_script

from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modeling import build_model


def _script(name: str) -> Any:
    return load_script(f"gpu/{name}.py")


class _HostEvent:
    """A CUDA event stand-in that records the host clock."""

    def __init__(self, enable_timing: bool = True) -> None:
        self.t = 0.0

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, other: _HostEvent) -> float:
        return (other.t - self.t) * 1e3


def test_timeline_marks_every_decoder_layer_and_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    pt = _script("prefill_timeline")
    monkeypatch.setattr(torch.cuda, "Event", _HostEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda *a: None)
    monkeypatch.setattr(pt, "host_probe_us", lambda _dev: 1.5)
    config = DeepseekOCRConfig.named("tiny")
    model = build_model(config, device="cpu", dtype=torch.float32)
    steps = 3
    results = pt.run_batches(model, "tiny", [1, 2], reps=2, steps=steps, depth=3)
    assert [r["batch"] for r in results] == [1, 2]
    layers = config.language.num_hidden_layers
    for res in results:
        assert len(res["passes"]) == 2
        for p in res["passes"]:
            assert p["host_probe_us"] == 1.5
            # entry and exit of every decoder layer of the prefill, in order
            assert [r["name"].split(":")[0] for r in p["prefill_layers"]] == [
                f"{k} language.layers.{i}" for i in range(layers) for k in ("enter", "exit")]
            assert p["prefill_by_class"]["DeepseekOcr2TextDecoderLayer"]["calls"] == layers
            # decode: every step but the last runs a forward
            assert p["decode_by_class"]["DeepseekOcr2TextDecoderLayer"]["calls"] == layers * (steps - 1)
            assert p["prefill_by_class"]["vision.sam"]["calls"] == 1
            # the LM prefill (projector end -> prefill end) holds the decoder's forward
            assert 0 < p["lm_host_issue_ms"] <= p["lm_prefill_wall_ms"]
            assert abs(p["lag_at_lm_enter_ms"]) < 1.0
        assert res["sync_sites"] == {}  # no sync debug mode on CPU


def test_sync_sites_counts_sync_warnings_by_site(monkeypatch: pytest.MonkeyPatch) -> None:
    pt = _script("prefill_timeline")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)

    def switch(_mode: object) -> None:  # switching the mode may warn by itself: not the pass's sync
        warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)

    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", switch)

    def calls() -> None:
        for _ in range(2):
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sites = pt.sync_sites(calls)
    assert sum(sites.values()) == 2
    (site,) = sites
    assert site.startswith("other: ") and "calls" in site  # made outside the model's code


@pytest.mark.parametrize("name, args, message", [
    ("prefill_timeline", ["--batches", "1,x"], "not a comma-separated list"),
    ("prefill_timeline", ["--reps", "0"], "must be >= 1"),
    ("prefill_timeline", ["--out", "/nonexistent-folder/x.json"], "does not exist"),
    ("launch_cost_check", ["--ops", "0"], "must be >= 1"),
    ("launch_cost_check", ["--out", "/nonexistent-folder/x.json"], "does not exist"),
])
def test_bad_arguments_are_one_line(name: str, args: list[str], message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _script(name).main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
@pytest.mark.parametrize("name", ["prefill_timeline", "launch_cost_check"])
def test_no_gpu_is_one_line(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _script(name).main([]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
