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
    out = tmp_path / "new" / "pp.json"  # its folder is made before the measurement
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
    bad.write_text("[1, 2]")
    with pytest.raises(UserError, match="not a file this script wrote .TypeError: not a JSON object"):
        mod.main(["--from", str(bad)])
    with pytest.raises(UserError, match="not a file this script wrote .FileNotFoundError"):
        mod.main(["--from", str(tmp_path / "missing.json")])
    with pytest.raises(UserError, match="--out FILE is required"):
        mod.main([])
    with pytest.raises(UserError, match="unknown mode"):
        mod.main(["--out", str(tmp_path / "x.json"), "--modes", "huge"])
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot create its folder"):
        mod.main(["--out", str(tmp_path / "file" / "x.json"), "--device", "cpu"])
    with pytest.raises(UserError, match="two or more different counts"):
        mod.main(["--out", str(tmp_path / "x.json"), "--pages", "4", "4"])


def test_the_model_constants_come_from_the_measurement() -> None:
    """analytic.base's PROJECTOR_* constants: the committed fits in the prior's dispatched ops, the model's
    launches out (the derivation their comment gives)."""
    from llm_perf_opt.analytic.base import (
        PROJECTOR_GROUP_HOST_OPS,
        PROJECTOR_RANGE_HOST_OPS,
        PROJECTOR_VIEW_CALL_WEIGHT,
    )
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.timeline_model import CUDA_LAUNCH_HOST_WEIGHT
    from llm_perf_opt.compare.calibrate import host_s_per_op_from_per_kernel
    from llm_perf_opt.data.analytic import OCRWorkloadProfile
    from llm_perf_opt.hardware import host_speed
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
    from llm_perf_opt.runners.calibrate_cli import PRIOR_PAGE_PX, PRIOR_PROMPT_TOKENS
    from llm_perf_opt.vocab import Stage

    h200 = ROOT / "reports" / "hardware" / "h200"
    files = [h200 / f"host-speed-decode-{i}.json" for i in range(1, 11)]
    module = host_speed.pool_host_speeds([(f, host_speed.load_host_speed(f)) for f in files]).probes["module"]
    assert module.us_per_launch is not None
    # probe calls per dispatched op, as calibrate --prior --host-speed converts (its default Base page)
    wl = OCRWorkloadProfile.create(profile_id="prior", mode="base", image_width_px=PRIOR_PAGE_PX[0],
                                   image_height_px=PRIOR_PAGE_PX[1], prompt_text_tokens=PRIOR_PROMPT_TOKENS,
                                   max_new_tokens=64, dtype="bf16", attention="eager", experts="grouped_mm")
    decode = AnalyticModel(DeepseekOCRConfig.default(), wl).stages[Stage.DECODE]
    per_op = host_s_per_op_from_per_kernel(module.us_per_launch * 1e-6, decode) * 1e6 / module.as_dict()["median_us"]
    assert per_op == pytest.approx(1.660, abs=0.001)  # the figure the constants' comment names
    # each machine's fits in ops, less the probe calls its host clock holds outside the range
    per_page: list[tuple[float, float, int]] = []
    fixed: dict[str, list[float]] = {"one group": [], "two groups": []}
    outside = []
    for path in (H200, H200.with_name("projector-pages-2.json")):
        summary = json.loads(path.read_text())["summary"]
        host = {m: s["fit"]["projector_host_ms"] for m, s in summary.items()}
        outside.append(host["small"]["fixed_probe_calls"] - summary["small"]["fit"]["projector_ms"]["fixed_probe_calls"])
        # per page (counted against the real range in tests/unit/test_analytic_dispatch.py): Small and Base 2
        # launches and 10 calls that launch nothing; a tiled Gundam page 3 launches, 1 launch inside a
        # reshape and 18 such calls
        per_page += [(host[m]["per_page_probe_calls"] / per_op, launches, calls)
                     for m, launches, calls in (("small", 2.0, 10), ("base", 2.0, 10),
                                                ("gundam", 3.0 + CUDA_LAUNCH_HOST_WEIGHT, 18))]
        for m in ("small", "base", "gundam"):
            fixed["two groups" if m == "gundam" else "one group"].append(
                (host[m]["fixed_probe_calls"] - outside[-1]) / per_op)
    assert outside == pytest.approx([3.4, 4.1], abs=0.05)
    # least squares for the weight of one call that launches nothing
    w = sum(n * (y - launches) for y, launches, n in per_page) / sum(n * n for _, _, n in per_page)
    assert abs(PROJECTOR_VIEW_CALL_WEIGHT - w) <= 0.001
    # fixed, inside the range: one view group (fusion and linear launches, flatten and transpose) for Small
    # and Base, two for Gundam: range + group and range + 2 * group, least squares
    one = statistics.fmean(x - 2.0 - 2 * w for x in fixed["one group"])
    two = statistics.fmean(x - 4.0 - 4 * w for x in fixed["two groups"])
    assert abs(PROJECTOR_GROUP_HOST_OPS - (two - one)) <= 0.05
    assert abs(PROJECTOR_RANGE_HOST_OPS - (2 * one - two)) <= 0.05
