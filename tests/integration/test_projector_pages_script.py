"""scripts/gpu/projector_pages.py: the summary of its committed H200 measurement, a CPU run, and bad input."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from script_loader import load_script

from llm_perf_opt.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
H200 = ROOT / "reports" / "hardware" / "h200" / "projector-pages.json"


def test_summary_is_recomputed_from_the_samples(capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_script("gpu/projector_pages.py")
    data = json.loads(H200.read_text())
    summary = mod.summarize(data["samples"])
    assert set(summary) == set(data["modes"])
    for mode in data["modes"]:
        med = {int(n): statistics.median(rec["projector_host_ms"]) for n, rec in data["samples"][mode].items()}
        fit = summary[mode]["fit"]["projector_host_ms"]
        # the least-squares line through the medians: residuals sum to zero and are orthogonal to the pages
        res = {n: m - (fit["fixed_ms"] + fit["per_page_ms"] * n) for n, m in med.items()}
        assert sum(res.values()) == pytest.approx(0.0, abs=1e-9)
        assert sum(n * r for n, r in res.items()) == pytest.approx(0.0, abs=1e-9)
        probe = summary[mode]["fit"]["probe_us"]
        assert fit["per_page_probe_calls"] == pytest.approx(fit["per_page_ms"] * 1e3 / probe)
        for n, row in summary[mode]["medians"].items():  # the committed summary is what the samples give
            assert row == pytest.approx(data["summary"][mode]["medians"][n])
    # on the H200 a page adds host time to the range, and the range has a fixed part beside it
    small = summary["small"]["fit"]["projector_host_ms"]
    assert small["per_page_ms"] > 0 and small["fixed_ms"] > small["per_page_ms"]
    assert mod.main(["--from", str(H200)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("projector range per page count (NVIDIA H200")
    assert "small: host clock: fixed" in out


def test_a_cpu_run_writes_what_it_summarizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_script("gpu/projector_pages.py")
    out = tmp_path / "pp.json"
    assert mod.main(["--device", "cpu", "--config", "tiny", "--modes", "tiny", "--pages", "1", "3",
                     "--rounds", "2", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["rounds"] == 2 and data["gpu"] == "cpu" and data["gpu_uuid"] is None
    rec = data["samples"]["tiny"]
    assert all(len(rec[n][f]) == 2 for n in ("1", "3") for f in mod.FIELDS)
    fit = data["summary"]["tiny"]["fit"]["projector_host_ms"]
    med = {n: statistics.median(rec[n]["projector_host_ms"]) for n in ("1", "3")}
    assert fit["per_page_ms"] == pytest.approx((med["3"] - med["1"]) / 2)  # two counts: the line through them
    assert "tiny: host clock: fixed" in capsys.readouterr().out


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    mod = load_script("gpu/projector_pages.py")
    bad = tmp_path / "bad.json"
    bad.write_text('{"modes": ["small"]}')
    with pytest.raises(UserError, match=f"--from {bad}: not a file this script wrote"):
        mod.main(["--from", str(bad)])
    with pytest.raises(UserError, match="--out FILE is required"):
        mod.main([])
    with pytest.raises(UserError, match="unknown mode"):
        mod.main(["--out", str(tmp_path / "x.json"), "--modes", "huge"])
    with pytest.raises(UserError, match="two or more different counts"):
        mod.main(["--out", str(tmp_path / "x.json"), "--pages", "4", "4"])
