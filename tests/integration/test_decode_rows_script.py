"""scripts/gpu/decode_rows.py: a CPU run, the fit of its summary, and bad input (the GPU figures come later)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from script_loader import load_script

from llm_perf_opt.errors import UserError


def test_a_cpu_run_fits_what_it_measured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_script("gpu/decode_rows.py")
    out = tmp_path / "new" / "dr.json"  # its folder is made before the measurement
    assert mod.main(["--device", "cpu", "--config", "tiny", "--mode", "tiny", "--batches", "1", "3",
                     "--ngram", "3", "0", "--rounds", "2", "--max-new-tokens", "5", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["rounds"] == 2 and data["gpu"] == "cpu"
    for ngram in ("3", "0"):
        rec = data["samples"][ngram]
        assert all(len(rec[b][f]) == 2 for b in ("1", "3") for f in mod.FIELDS)
        assert all(v > 0 for b in ("1", "3") for f in mod.FIELDS for v in rec[b][f])
        med = {b: statistics.median(rec[b]["forward_ms"]) for b in ("1", "3")}
        fit = data["summary"][ngram]["fit"]
        assert fit["per_row_ms"] == pytest.approx((med["3"] - med["1"]) / 2)  # two sizes: the line through them
        assert fit["fixed_ms"] == pytest.approx(med["1"] - fit["per_row_ms"])
        assert fit["per_row_probe_calls"] == pytest.approx(fit["per_row_ms"] * 1e3 / fit["probe_us"])
    text = capsys.readouterr().out
    assert "n-gram 3: fixed" in text and "the model prices 9.7 ops per row" in text
    assert mod.main(["--from", str(out)]) == 0
    assert capsys.readouterr().out.strip() == text.strip()  # the summary is recomputed from the samples


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    mod = load_script("gpu/decode_rows.py")
    out = str(tmp_path / "x.json")
    for argv, msg in ((["--device", "cpu", "--batches", "4", "4", "--out", out], "two or more different sizes"),
                      (["--device", "cpu", "--batches", "1", "1", "4", "--out", out], "must not repeat a value"),
                      (["--device", "cpu", "--ngram", "0", "0", "--out", out], "must not repeat a value"),
                      (["--device", "cpu", "--ngram", "-1", "--out", out], "--ngram sizes must be >= 0"),
                      (["--device", "cpu", "--max-new-tokens", "1", "--out", out], "--max-new-tokens >= 2"),
                      (["--device", "cpu"], "--out FILE is required")):
        with pytest.raises(UserError, match=msg):
            mod.main(argv)
    bad = tmp_path / "bad.json"
    bad.write_text('{"samples": 3}')
    with pytest.raises(UserError, match="not a file this script wrote"):
        mod.main(["--from", str(bad)])
    with pytest.raises(SystemExit):  # argparse: an unknown mode is one usage line
        mod.main(["--mode", "huge", "--out", out])
