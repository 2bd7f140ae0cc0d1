"""The n-gram ban as a workload parameter: the model's picks and launches, the analyzer flag, compare reading a
run's setting (and refusing a report of another), the what-if axis, and the H200 counts the constants rest on."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import attrs
import pytest
from compare_fixtures import DATA, FX

from llm_perf_opt.analytic.model import NGRAM_BAN_ROW_LAUNCHES, AnalyticModel, ngram_ban_picks
from llm_perf_opt.analytic.workloads import WorkloadError, get_profile, with_overrides
from llm_perf_opt.compare.analytic import MismatchError, load_analytic_report
from llm_perf_opt.compare.runs import RunFolderError, load_run, run_workloads
from llm_perf_opt.compare.whatif import Scenario, WhatIfError, expand_sweep, run_what_if
from llm_perf_opt.data.analytic import OCRWorkloadProfile
from llm_perf_opt.data.io import dump_json
from llm_perf_opt.data.validators import FieldValueError
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.runners import what_if_cli
from llm_perf_opt.runners.compare_cli import build_comparison
from llm_perf_opt.vocab import DEFAULT_NO_REPEAT_NGRAM, Stage

REPO = Path(__file__).resolve().parents[2]


def test_ban_picks_follow_the_generation_loop() -> None:
    # generation.ban_repeated_ngrams skips a row whose history (prompt + picks so far) is shorter than n
    assert ngram_ban_picks(300, 64, 20) == 64
    assert ngram_ban_picks(10, 64, 20) == 64 - 10  # picks 0..9 see 10..19 ids: no ban
    assert ngram_ban_picks(10, 5, 20) == 0
    assert ngram_ban_picks(300, 64, 0) == 0
    assert ngram_ban_picks(19, 1, 20) == 0 and ngram_ban_picks(20, 1, 20) == 1


def test_workload_field_default_override_and_bad_values() -> None:
    base = get_profile("dsocr-base-v1")
    assert base.no_repeat_ngram_size == DEFAULT_NO_REPEAT_NGRAM == 20
    off = with_overrides(base, no_repeat_ngram_size=0)
    assert off.no_repeat_ngram_size == 0 and off.profile_id.endswith("-custom")
    with pytest.raises(WorkloadError, match="no_repeat_ngram_size must be >= 0, got -1"):
        with_overrides(base, no_repeat_ngram_size=-1)
    with pytest.raises(FieldValueError):
        OCRWorkloadProfile.create(profile_id="x", mode="base", image_width_px=1024, image_height_px=1024,
                                  prompt_text_tokens=9, max_new_tokens=8, no_repeat_ngram_size=-3)


def test_the_ban_is_the_decode_steps_only_per_row_term() -> None:
    cfg = DeepseekOCRConfig.named("default")
    base = get_profile("dsocr-small-v1")

    def model(batch: int, n: int) -> AnalyticModel:
        return AnalyticModel(cfg, with_overrides(base, batch_size=batch, max_new_tokens=64, no_repeat_ngram_size=n))

    on, off = model(8, 20), model(8, 0)
    for st in (Stage.VISION_SAM, Stage.VISION_CLIP, Stage.PROJECTOR, Stage.PREFILL):
        assert on.stages[st].forward_kernel_launches() == off.stages[st].forward_kernel_launches()
    extra = on.stages[Stage.DECODE].forward_kernel_launches() - off.stages[Stage.DECODE].forward_kernel_launches()
    assert extra == pytest.approx(8 * NGRAM_BAN_ROW_LAUNCHES * 64 / 63)
    assert on.ban_picks_per_forward() == pytest.approx(64 / 63) and off.ban_picks_per_forward() == 0


def test_the_counted_ban_launches_match_the_h200_census_and_runs() -> None:
    """The constant is the count the H200 census and profiler passes give (reports/profile, committed)."""
    census = REPO / "reports" / "profile" / "h200-census"
    on = json.loads((census / "census-h200.json").read_text())["workloads"]
    off = json.loads((census / "census-h200-ngram0.json").read_text())
    assert off["no_repeat_ngram_size"] == 0

    def decode_kernels(w: dict) -> float:
        return sum(v["kernels"] for v in w["stages"]["decode"].values())

    # batch 1, 4 picks over 3 forwards: the ban's launches are the difference with the ban off
    forwards = on["base:1"]["decode_forwards"]
    ban_b1 = decode_kernels(on["base:1"]) - decode_kernels(off["workloads"]["base:1"])
    assert ban_b1 / ((forwards + 1) / forwards) == pytest.approx(NGRAM_BAN_ROW_LAUNCHES, abs=0.01)
    # with the ban off, batch 4 launches what batch 1 does within one launch per forward
    assert abs(decode_kernels(off["workloads"]["base:4"]) - decode_kernels(off["workloads"]["base:1"])) <= 1.0
    # the profiler passes of the paired Stage 1 runs (16 picks over 15 forwards)
    for run, rows in (("small-b32", 32), ("base-b16", 16)):
        k = {n: json.loads((REPO / "reports" / "profile" / f"h200-{run}-ngram{n}-20261204T195740Z" / "torch_profiler"
                            / "operator_table.json").read_text())["stage_kernels"]["decode"] for n in (0, 20)}
        per_pick = (k[20] - k[0]) / 15 / rows / (16 / 15)
        assert per_pick == pytest.approx(NGRAM_BAN_ROW_LAUNCHES, abs=0.05), run


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    dst = tmp_path / "run-base-b1"
    shutil.copytree(DATA / "run-base-b1", dst)
    return dst


def _set_ngram(run_dir: Path, value: object) -> None:
    (run_dir / "torch_profiler" / "settings.json").write_text(json.dumps({"session": {"no_repeat_ngram_size": value}}))


def test_compare_takes_the_runs_setting_and_refuses_a_report_of_another(run_dir: Path, tmp_path: Path) -> None:
    assert load_run(run_dir).no_repeat_ngram_size == 20  # no settings.json: the profiler's default
    _set_ngram(run_dir, 0)
    run = load_run(run_dir)
    assert run.no_repeat_ngram_size == 0
    ((wl, _),) = run_workloads(run)
    assert wl.no_repeat_ngram_size == 0
    banned = dump_json(FX.base_report(FX.workload()), tmp_path / "ban-on.json")
    with pytest.raises(MismatchError, match="no_repeat_ngram_size is 20 in the report, 0 in the run"):
        build_comparison(run, analytic=banned)
    # without a report the prediction is of the run's own setting, and has fewer decode launches
    cmp_off, _ = build_comparison(run)
    _set_ngram(run_dir, 20)
    cmp_on, _ = build_comparison(load_run(run_dir))
    dec = {c: next(s for s in cmp.stages if s.stage == "decode") for c, cmp in (("off", cmp_off), ("on", cmp_on))}
    assert dec["off"].predicted_kernels < dec["on"].predicted_kernels


@pytest.mark.parametrize("value", [-1, "20", True])
def test_a_bad_setting_in_the_run_is_one_line(run_dir: Path, value: object) -> None:
    _set_ngram(run_dir, value)
    with pytest.raises(RunFolderError, match="session.no_repeat_ngram_size .* is not an integer >= 0"):
        load_run(run_dir)


def test_what_if_turns_the_ban_off(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_file = dump_json(FX.base_report(FX.workload(batch=4)), tmp_path / "r.json")
    report = load_analytic_report(report_file)
    same, off = run_what_if(report, [Scenario(), Scenario(no_repeat_ngram_size=0)])
    assert same.no_repeat_ngram_size == 20 and off.no_repeat_ngram_size == 0
    assert off.decode_ms < same.decode_ms and off.pages_per_day > same.pages_per_day
    for col in ("vision_sam_ms", "vision_clip_ms", "projector_ms", "prefill_ms"):
        assert getattr(off, col) == getattr(same, col), col
    assert Scenario(no_repeat_ngram_size=0).changes() == {"no_repeat_ngram_size": 0}
    assert len(expand_sweep(batch_sizes=[1, 2], no_repeat_ngram_sizes=[0, 20])) == 4
    with pytest.raises(WhatIfError, match="no_repeat_ngram_size must be >= 0, got -2"):
        run_what_if(report, [Scenario(no_repeat_ngram_size=-2)])
    out = tmp_path / "sweep"
    assert what_if_cli.main(["--report", str(report_file), "--no-repeat-ngram-size", "20", "0", "--out", str(out),
                             "--name", "s", "--quiet"]) == 0
    with (out / "s.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["no_repeat_ngram_size"] for r in rows] == ["20", "0"]
    assert float(rows[1]["decode_ms"]) == off.decode_ms
    # a report exported before the field existed reads as the default (the ban on)
    raw = json.loads(report_file.read_text())
    del raw["workload"]["no_repeat_ngram_size"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(raw))
    assert attrs.asdict(run_what_if(load_analytic_report(old), [Scenario()])[0]) == attrs.asdict(same)


def test_the_analyzer_models_the_ban_it_is_told(tmp_path: Path) -> None:
    from llm_perf_opt.runners import dsocr_analyzer_main

    out = {}
    for n in (20, 0):
        folder = tmp_path / f"n{n}"
        assert dsocr_analyzer_main.main(["--device", "none", "--workload-profile-id", "dsocr-tiny-v1", "--batch-size",
                                         "8", "--no-repeat-ngram-size", str(n), "--output-dir", str(folder)]) == 0
        out[n] = json.loads((folder / "static_analysis" / "analytic_model" / "report.json").read_text())
    assert out[0]["workload"]["no_repeat_ngram_size"] == 0 and out[20]["workload"]["no_repeat_ngram_size"] == 20
    assert out[0]["stage_totals"]["decode"]["io_bytes"] < out[20]["stage_totals"]["decode"]["io_bytes"]
    assert out[0]["stage_totals"]["prefill"] == out[20]["stage_totals"]["prefill"]


def test_the_help_texts_give_the_models_count(capsys: pytest.CaptureFixture[str]) -> None:
    from llm_perf_opt.runners import dsocr_analyzer_main

    for main in (dsocr_analyzer_main.main, what_if_cli.main):
        with pytest.raises(SystemExit):
            main(["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert f"adds {NGRAM_BAN_ROW_LAUNCHES:g} launches per page and token" in text


def test_the_ban_launches_seven_kernels_per_row_whose_history_is_long_enough() -> None:
    """generation.ban_repeated_ngrams under the dispatch meter: NGRAM_BAN_ROW_LAUNCHES kernels per row and
    pick, none for a row whose history (after its left padding) is shorter than n; over a request the
    picks are :func:`ngram_ban_picks`'s."""
    import torch
    from dispatch_meter import DispatchMeter

    from llm_perf_opt.models.deepseek_ocr.generation import ban_repeated_ngrams

    n, vocab, prompt, new_tokens = 4, 50, 2, 6
    pad = 3  # row 1 is left-padded: its own history starts at column 3
    history = torch.randint(0, vocab, (2, pad + prompt))
    kernels = []
    for _pick in range(new_tokens):
        logits = torch.randn(2, vocab)
        meter = DispatchMeter(device="cpu")
        with meter:
            meter.active = True
            ban_repeated_ngrams(logits, history, [pad, pad], n)
        kernels.append(meter.total_kernels)
        history = torch.cat([history, torch.randint(0, vocab, (2, 1))], dim=1)
    per_pick = [k / 2 for k in kernels]  # two rows with the same own history length
    assert per_pick == [0.0 if prompt + i < n else NGRAM_BAN_ROW_LAUNCHES for i in range(new_tokens)]
    assert sum(k > 0 for k in kernels) == ngram_ban_picks(prompt, new_tokens, n)


def test_a_short_prompt_and_one_or_two_new_tokens() -> None:
    cfg = DeepseekOCRConfig.named("tiny")
    tiny = get_profile("dsocr-tiny-v1")
    prefill = AnalyticModel(cfg, tiny).shape.prefill_tokens
    long_n = AnalyticModel(cfg, with_overrides(tiny, max_new_tokens=64, no_repeat_ngram_size=prefill + 10))
    assert long_n.ban_picks_per_forward() == pytest.approx((64 - 10) / 63)  # the first 10 picks skip the ban
    one = AnalyticModel(cfg, with_overrides(tiny, max_new_tokens=1))
    assert one.shape.decode_forwards == 0 and one.ban_picks_per_forward() == 0.0
    two = AnalyticModel(cfg, with_overrides(tiny, max_new_tokens=2))
    assert two.ban_picks_per_forward() == pytest.approx(2.0)


def test_the_contract_view_carries_the_setting() -> None:
    from llm_perf_opt.contracts import to_analytic_summary

    report = FX.base_report(with_overrides(FX.workload(), no_repeat_ngram_size=0))
    assert to_analytic_summary(report).workload.no_repeat_ngram_size == 0
