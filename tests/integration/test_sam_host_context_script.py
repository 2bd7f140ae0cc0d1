"""scripts/gpu/sam_host_context.py on CPU: the summary of its committed H200 measurements, and bad input."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from script_loader import load_script

from llm_perf_opt.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "reports" / "hardware" / "h200" / "sam-host-context-small.json"


def test_summary_is_recomputed_from_the_samples(capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_script("gpu/sam_host_context.py")
    data = json.loads(SMALL.read_text())
    summary = mod.summarize(data["samples"], data["sam_launches"])
    assert set(summary) == {*mod.CONTEXTS, "all"}
    sleep = data["samples"]["sleep"]
    ratios = [e * 1e3 / data["sam_launches"] / p for e, p in zip(sleep["event_ms"], sleep["probe_us"], strict=True)]
    assert summary["sleep"]["per_launch_over_probe"] == pytest.approx(statistics.median(ratios))
    pooled = [x for rec in data["samples"].values() for x in rec["event_ms"]]
    assert summary["all"]["median_event_ms"] == pytest.approx(statistics.median(pooled))
    assert summary["all"]["event_cv"] == pytest.approx(statistics.stdev(pooled) / statistics.fmean(pooled))
    assert -1.0 <= summary["all"]["correlation"] <= 1.0
    for ctx, row in summary.items():  # the committed summary is what the samples give
        assert row == pytest.approx(data["summary"][ctx])
    assert mod.main(["--from", str(SMALL)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"SAM pass on a small page: {data['sam_launches']} launches")
    assert "correlation of SAM ms with the probe before it" in out


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    mod = load_script("gpu/sam_host_context.py")
    bad = tmp_path / "bad.json"
    bad.write_text('{"mode": "small"}')
    with pytest.raises(UserError, match=f"--from {bad}: not a file this script wrote"):
        mod.main(["--from", str(bad)])
    with pytest.raises(UserError, match="--out FILE is required"):
        mod.main([])
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot create its folder"):  # before the GPU is looked for
        mod.main(["--out", str(blocker / "x.json")])
