"""scripts/gpu/decode_rows.py: a CPU run, the fit of its summary, and bad input (the GPU figures come later)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from script_loader import load_script

from llm_perf_opt.analytic.model import DECODE_ROW_HOST_WEIGHT, NGRAM_BAN_ROW_LAUNCHES, AnalyticModel
from llm_perf_opt.analytic.timeline_model import stage_host_work
from llm_perf_opt.data.analytic import OCRWorkloadProfile
from llm_perf_opt.errors import UserError
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.profiling.session import ModelSession
from llm_perf_opt.vocab import Stage

DATA = Path(__file__).resolve().parents[2] / "reports" / "hardware" / "h200"


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
        calls = {b: statistics.median([ms * 1e3 / us for ms, us in zip(rec[b]["forward_ms"], rec[b]["probe_us"],
                                                                         strict=True)]) for b in ("1", "3")}
        assert fit["per_row_calls_per_pass"] == pytest.approx((calls["3"] - calls["1"]) / 2)
        if fit["fixed_calls_per_pass"] > 0:  # a loaded CPU can time batch 3 at over three times batch 1
            assert fit["per_row_ops"] == pytest.approx(
                fit["per_row_calls_per_pass"] * mod.model_decode_ops("tiny", "tiny", 5, int(ngram))[0]
                / fit["fixed_calls_per_pass"])
            if ngram == "3":
                assert fit["row_host_weight"] == pytest.approx(mod.row_host_weight(
                    "tiny", "tiny", fit["fixed_calls_per_pass"], fit["per_row_calls_per_pass"], 5, 3))
            else:  # with the ban off there is no ban launch to weigh, and the model's decode has no per-row op
                assert "row_host_weight" not in fit and fit["model_per_row_ops"] == pytest.approx(0.0)
        else:
            assert "row_host_weight" not in fit
    text = capsys.readouterr().out
    # 5 picks over 4 forwards: 7 x 5/4 ban launches per row and forward with the ban on, none with it off
    assert "n-gram 3: fixed" in text and "the model prices 8.75 ban launches per row and forward" in text
    assert "the model prices 0.00 ban launches" in text
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


def _decode_host_ops(mode: str, batch: int, new_tokens: int = 64) -> float:
    wl = OCRWorkloadProfile.create(profile_id="t", mode=mode, image_width_px=1240, image_height_px=1754,
                                   prompt_text_tokens=9, max_new_tokens=new_tokens, batch_size=batch,
                                   attention="eager", experts="grouped_mm")
    return stage_host_work(AnalyticModel(DeepseekOCRConfig.named("default"), wl).stages[Stage.DECODE])[0]


@pytest.mark.parametrize("weight", [DECODE_ROW_HOST_WEIGHT, 0.0, 0.8])
@pytest.mark.parametrize("new_tokens", [64, 9])
def test_row_host_weight_inverts_the_models_host_ops(weight: float, new_tokens: int) -> None:
    """A host that costs c per op and runs the model's decode with the ban's launches at ``weight`` gives back
    ``weight``, whatever c; a forward carries new_tokens / (new_tokens - 1) picks' launches."""
    mod = load_script("gpu/decode_rows.py")
    ops1, ops2 = _decode_host_ops("small", 1, new_tokens), _decode_host_ops("small", 2, new_tokens)
    fixed_ops = ops1 - (ops2 - ops1)
    assert mod.model_decode_ops("small", "default", new_tokens) == (pytest.approx(fixed_ops),
                                                                    pytest.approx(ops2 - ops1))
    launches = NGRAM_BAN_ROW_LAUNCHES * new_tokens / (new_tokens - 1)
    assert mod.row_launches("small", "default", new_tokens) == pytest.approx(launches)
    c = 0.0173  # ms per op
    per_row = (ops2 - ops1 + launches * (weight - DECODE_ROW_HOST_WEIGHT)) * c
    assert mod.row_host_weight("small", "default", fixed_ops * c, per_row, new_tokens) == pytest.approx(
        weight, abs=1e-9)
    with pytest.raises(ValueError, match="no ban launches"):
        mod.row_host_weight("small", "default", fixed_ops * c, per_row, new_tokens, 0)


def test_the_models_weight_is_the_median_of_the_committed_fits(capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_script("gpu/decode_rows.py")
    weights = []
    for f in sorted(DATA.glob("decode-rows-*.json")):
        data = json.loads(f.read_text())
        weights.append(mod.summarize(data["samples"], data["mode"], data["config"], data["max_new_tokens"]
                                     )["20"]["fit"]["row_host_weight"])
    assert len(weights) >= 5
    assert statistics.median(weights) == pytest.approx(DECODE_ROW_HOST_WEIGHT, abs=0.005)
    # the command the constant's comment gives prints the same median
    assert mod.main(["--from", *map(str, sorted(DATA.glob("decode-rows-*.json")))]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"host weight of a ban launch over {len(weights)} fits (n-gram ban on): median "
                           f"{statistics.median(weights):.3f}, {min(weights):.3f} to {max(weights):.3f}")


def test_out_of_memory_is_one_line_and_keeps_the_full_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    mod = load_script("gpu/decode_rows.py")
    real = ModelSession.run_pass
    calls = {"n": 0}

    def run_pass(self: ModelSession, *a: object, **k: object) -> object:
        calls["n"] += 1
        if calls["n"] > 4 + 4 + 1:  # four warm-up passes, one full round, then the device runs out
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 48.00 GiB")
        return real(self, *a, **k)

    monkeypatch.setattr(ModelSession, "run_pass", run_pass)
    out = tmp_path / "dr.json"
    with pytest.raises(UserError, match=r"batch \d: out of GPU memory \(.*dr.json keeps the 1 full rounds taken\)"):
        mod.main(["--device", "cpu", "--config", "tiny", "--mode", "tiny", "--batches", "1", "2",
                  "--ngram", "3", "0", "--rounds", "3", "--max-new-tokens", "3", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["rounds"] == 1
    assert all(len(data["samples"][n][b]["forward_ms"]) == 1 for n in ("3", "0") for b in ("1", "2"))
