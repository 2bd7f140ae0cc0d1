"""compare: a fixture run folder + analytic report gives the expected ratios; bad input is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from compare_fixtures import DATA, FX

from llm_perf_opt.analytic.report import DEFAULT_ALLOCATOR_BATCH_FRACTION
from llm_perf_opt.compare.analytic import MismatchError, load_analytic_report
from llm_perf_opt.compare.compare import COMPARE_SCHEMA
from llm_perf_opt.compare.runs import RunFolderError, load_run
from llm_perf_opt.data.io import ReportLoadError, dump_json
from llm_perf_opt.runners import compare_cli
from llm_perf_opt.runners.compare_cli import build_comparison

REPORT = DATA / "analytic-base-b1.json"


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    dst = tmp_path / "run-base-b1"
    shutil.copytree(DATA / "run-base-b1", dst)
    return dst


def test_fixture_ratios_match_construction(run_dir: Path) -> None:
    run = load_run(run_dir)
    cmp, _ = build_comparison(run, analytic=REPORT)
    got = {s.stage: s.ratio for s in cmp.stages}
    for stage, expected in FX.FIXTURE_RATIOS.items():
        assert got[stage] == pytest.approx(expected, rel=1e-9), stage
    report = load_analytic_report(REPORT)
    t = cmp.totals
    measured_total = run.stage_mean_ms("prefill") + run.stage_mean_ms("decode")
    assert t.measured_total_ms == pytest.approx(measured_total)
    assert t.predicted_total_ms == report.model_totals.time_ms
    assert t.ratio == pytest.approx(report.model_totals.time_ms / measured_total)
    # decode per forward: the run's decode ms / (new tokens - 1) vs the analytic mean-length step
    assert t.decode_per_token_ratio == pytest.approx(
        report.decode.per_token.time_ms / (run.stage_mean_ms("decode") / (report.workload.max_new_tokens - 1)))
    # categories: measured = the operator table; shares add up to one
    assert cmp.category_basis == "cuda"
    assert sum(c.measured_share or 0 for c in cmp.categories) == pytest.approx(1.0)
    assert sum(c.predicted_share for c in cmp.categories) == pytest.approx(1.0)
    order = [(-(c.measured_ms or 0.0), -c.predicted_ms, c.category) for c in cmp.categories]
    assert order == sorted(order)  # by measured, then predicted time, then name: the same in every process
    table = run.operator_table
    assert table is not None
    for c in cmp.categories:
        if c.measured_ms is not None:
            assert c.measured_ms == pytest.approx(table.category_per_pass()[c.category])
            assert c.ratio == pytest.approx(c.predicted_ms / c.measured_ms)
    # lm_head / experts matmuls are folded into gemm (the profiler names them gemm)
    assert {c.category for c in cmp.categories}.isdisjoint({"lm_head", "moe_experts"})


def test_cli_writes_outputs_and_contract_summary(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert compare_cli.main(["--run", str(run_dir), "--analytic", str(REPORT)]) == 0
    out = run_dir / "compare"
    for name in ("compare.json", "compare.md", "stages.png", "roofline.png"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "compare.json").read_text())
    assert data["schema_version"] == COMPARE_SCHEMA
    assert [s["stage"] for s in data["stages"]] == list(FX.FIXTURE_RATIOS)
    contract = json.loads((out / "analytic_summary.json").read_text())
    assert contract["measured_total_time_ms"] == pytest.approx(data["totals"]["measured_total_ms"])
    assert contract["predicted_vs_measured_ratio"] == pytest.approx(data["totals"]["ratio"])
    unified = json.loads((run_dir / "unified_report.json").read_text())
    summary = unified["analytic_summary"]
    assert summary["measured_total_time_ms"] == pytest.approx(data["totals"]["measured_total_ms"])
    assert summary["predicted_vs_measured_ratio"] == pytest.approx(data["totals"]["ratio"])
    labels = [c["label"] for c in unified["capacity"]]
    assert labels[0] == "measured batch"
    best = next(c["batch_size"] for c in unified["capacity"] if c["label"] == "best batch that fits")
    # the best batch is the footprint's limit; the note gives what PyTorch's default allocator reaches
    note = next(n for n in unified["notes"] if n.startswith(f"best batch {best}:"))
    assert f"plan on about {int(best * DEFAULT_ALLOCATOR_BATCH_FRACTION)} " in note
    # what expandable segments reached on the H200, per attention (docs/results-h200.md sections 20-21)
    assert "reached 96-98% of that limit with eager attention and 99% with sdpa" in note
    md = (run_dir / "unified_report.md").read_text()
    assert "## Capacity on this GPU" in md and "Top operators" in md
    assert "vision.sam" in capsys.readouterr().out


def test_with_out_nothing_is_written_into_the_run_folder(run_dir: Path, tmp_path: Path) -> None:
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    out = tmp_path / "elsewhere"
    assert compare_cli.main(["--run", str(run_dir), "--analytic", str(REPORT), "--out", str(out)]) == 0
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before
    assert (out / "compare.json").is_file() and (out / "unified_report.json").is_file()
    assert (out / "unified_report.md").is_file()
    udir = tmp_path / "unified"  # --unified-dir still places it
    assert compare_cli.main(["--run", str(run_dir), "--analytic", str(REPORT), "--out", str(out),
                             "--unified-dir", str(udir)]) == 0
    assert (udir / "unified_report.json").is_file()


def test_the_unified_report_says_what_host_preprocessing_takes_of_the_measured_pages(run_dir: Path) -> None:
    metrics = run_dir / "torch_profiler" / "metrics.json"
    data = json.loads(metrics.read_text())
    assert data["preprocessing_ms"] is None  # the fixture's run has none: no such note
    assert compare_cli.main(["--run", str(run_dir), "--analytic", str(REPORT)]) == 0
    unified = json.loads((run_dir / "unified_report.json").read_text())
    assert not any(n.startswith("measured pages/s counts host preprocessing") for n in unified["notes"])
    pps = data["pages_per_s"]["mean"]  # batch 1: end to end per pass = 1 / pages/s
    pre = 0.25 / pps * 1e3  # a quarter of end to end
    data["preprocessing_ms"] = {"mean": pre, "std": 0.0, "min": pre, "max": pre, "p50": pre, "p90": pre, "count": 3}
    metrics.write_text(json.dumps(data))
    assert compare_cli.main(["--run", str(run_dir), "--analytic", str(REPORT)]) == 0
    unified = json.loads((run_dir / "unified_report.json").read_text())
    note = next(n for n in unified["notes"] if n.startswith("measured pages/s counts host preprocessing"))
    stages_pps = 1 / (unified["total_measured_ms"] / 1e3)
    assert f"25% of the {1e3 / pps:,.0f} ms per pass" in note
    assert f"the timed stages alone give {stages_pps:,.3f} pages/s" in note


def test_without_analytic_uses_the_runs_workload(run_dir: Path) -> None:
    run = load_run(run_dir)
    cmp, preds = build_comparison(run)
    (rep, images), = preds
    assert images == 1
    wl = rep.workload
    assert (wl.mode, wl.batch_size, wl.max_new_tokens, wl.prefill_tokens) == ("base", 1, 8, 282)
    for s in cmp.stages:
        measured = run.lm_prefill_ms() if s.stage == "prefill" else run.stage_mean_ms(s.stage)
        assert s.ratio == pytest.approx(s.predicted_ms / measured)


def test_workload_mismatch_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    other = FX.base_report(FX.workload(new_tokens=16))
    path = dump_json(other, tmp_path / "other.json")
    with pytest.raises(MismatchError, match="max_new_tokens is 16 in the report, 8 in the run"):
        build_comparison(load_run(run_dir), analytic=path)


def test_model_mismatch_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    other = FX.base_report(FX.workload(), config="default")
    path = dump_json(other, tmp_path / "default.json")
    with pytest.raises(MismatchError, match="config 'default' but the run used 'tiny'"):
        build_comparison(load_run(run_dir), analytic=path)


def test_other_schema_version_is_one_line(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = json.loads(REPORT.read_text())
    raw["schema_version"] = "llm-perf-opt.analytic-report/999"
    bad = tmp_path / "v999.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(ReportLoadError, match="schema_version"):
        load_analytic_report(bad)
    assert compare_cli.main(["--run", str(run_dir), "--analytic", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "analytic-report/999" in err


def test_missing_run_folder(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="run folder not found"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match="no profiling report"):
        load_run(tmp_path / "empty")


def test_mixed_page_sizes_are_analysed_per_tile_grid(tmp_path: Path) -> None:
    wl = FX.workload("gundam", (1700, 2200))
    run_dir = FX.write_run(tmp_path / "mixed", wl, {s: 1.0 for s in FX.FIXTURE_RATIOS})
    metrics = run_dir / "torch_profiler" / "metrics.json"
    raw = json.loads(metrics.read_text())
    second = dict(raw["inputs"]["images"][0], synthetic_id="synthetic:text_heavy:1", width_px=1280, height_px=640)
    raw["inputs"]["images"].append(second)
    metrics.write_text(json.dumps(raw))
    run = load_run(run_dir)
    cmp, preds = build_comparison(run)
    assert sorted((p.workload.tile_rows, p.workload.tile_cols, n) for p, n in preds) == [(1, 2, 1), (3, 2, 1)]
    sam = [p.stage_totals["vision.sam"].time_ms for p, _ in preds]  # type: ignore[index]
    assert cmp.stages[0].predicted_ms == pytest.approx(sum(sam) / 2)
    with pytest.raises(MismatchError, match="tiles"):
        build_comparison(run, analytic=dump_json(preds[0][0], tmp_path / "one.json"))


def test_report_from_another_model_version_is_flagged(run_dir: Path, tmp_path: Path) -> None:
    raw = json.loads(REPORT.read_text())
    raw["stage_totals"]["vision.sam"]["time_ms"] *= 1.5
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(raw))
    cmp, _ = build_comparison(load_run(run_dir), analytic=edited)
    assert any("differs from the current analytic model" in n for n in cmp.notes)
    assert cmp.stages[0].ratio == pytest.approx(FX.FIXTURE_RATIOS["vision.sam"] * 1.5)


def test_kernel_counts_are_compared_per_stage(run_dir: Path) -> None:
    """Measured kernels per pass (decode: per forward) from operator_table.json next to the analytic launches."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.target_operators import categorize_op
    from llm_perf_opt.profiling.operators import ProfileCapture, build_operator_table

    folder = run_dir / "torch_profiler"
    table = build_operator_table(ProfileCapture.load(folder / "operator_events.json"), categorize_op)
    summary = table.summary_dict()
    summary["profiled_steps"] = 2
    summary["stage_kernels"] = {"vision.sam": 300, "prefill": 1000, "decode": 2 * 90 * 15}
    (folder / "operator_table.json").write_text(json.dumps(summary))
    (folder / "settings.json").write_text(json.dumps({"profile_max_new_tokens": 16,
                                                      "session": {"experts_implementation": "grouped_mm"}}))
    run = load_run(run_dir)
    cmp, _ = build_comparison(run, analytic=REPORT)
    got = {s.stage: s for s in cmp.stages}
    assert got["vision.sam"].measured_kernels == pytest.approx(150)
    assert got["prefill"].measured_kernels == pytest.approx(500)
    assert got["decode"].measured_kernels == pytest.approx(90)  # 2 passes x 15 forwards
    assert got["vision.clip"].measured_kernels is None
    # device time per stage: the table's stage x category ms per pass (2 passes); decode scaled from the
    # profiled 15 forwards to the run's max_new_tokens - 1
    per_pass = {s: sum(c.values()) / 2 for s, c in summary["stage_category_ms"].items()}
    assert got["vision.sam"].measured_device_ms == pytest.approx(per_pass["vision.sam"])
    n = load_run(run_dir).report.meta.max_new_tokens
    assert got["decode"].measured_device_ms == pytest.approx(per_pass["decode"] * (n - 1) / 15)
    assert got["prefill"].device_ratio == pytest.approx(got["prefill"].predicted_ms / per_pass["prefill"])
    report = load_analytic_report(REPORT)
    model = AnalyticModel(report.model.config, report.workload)
    step = model.decode_step(model.decode_mean_kv_len)
    assert got["decode"].predicted_kernels == pytest.approx(step.forward_kernel_launches())
    sam = model.stages[next(s for s in model.stages if s.value == "vision.sam")]
    assert got["vision.sam"].predicted_kernels == pytest.approx(sam.forward_kernel_launches())


def test_unknown_experts_implementation_in_settings_is_one_line(run_dir: Path) -> None:
    (run_dir / "torch_profiler" / "settings.json").write_text(
        json.dumps({"session": {"experts_implementation": "triton"}}))
    with pytest.raises(RunFolderError, match="experts_implementation 'triton'"):
        load_run(run_dir)


def test_host_probe_is_read_from_the_pass_records(run_dir: Path) -> None:
    assert load_run(run_dir).host_probe_us is None  # the fixture run has no passes file
    lines = [json.dumps({"pass_index": 0, "status": "ok", "host_probe_us": 4.0}),
             json.dumps({"pass_index": 1, "status": "oom", "host_probe_us": 99.0}),
             json.dumps({"pass_index": 2, "status": "ok", "host_probe_us": 6.0}),
             json.dumps({"pass_index": 3, "status": "ok"}), '{"pass_index": 4, "status": "o']
    # the last line torn (a run stopped while writing it, no newline after it) is left out
    (run_dir / "torch_profiler" / "passes.jsonl").write_text("\n".join(lines))
    assert load_run(run_dir).host_probe_us == pytest.approx(5.0)
    assert load_run(run_dir).host_module_probe_us is None  # passes without the module probe
    lines = [json.dumps({"status": "ok", "host_probe_us": 4.0, "host_module_probe_us": 9.0,
                         "stage_ms": {"decode": 80.0}}),
             json.dumps({"status": "ok", "host_probe_us": 6.0, "host_module_probe_us": 11.0,
                         "stage_ms": {"decode": 120.0}}),
             json.dumps({"status": "error", "host_module_probe_us": 50.0, "stage_ms": {"decode": 1.0}})]
    (run_dir / "torch_profiler" / "passes.jsonl").write_text("\n".join(lines) + "\n")
    run = load_run(run_dir)
    assert run.host_module_probe_us == pytest.approx(10.0) and run.host_probe_us == pytest.approx(5.0)
    assert run.module_probe_decode == ((9.0, 80.0), (11.0, 120.0)) and run.probe_decode == ((4.0, 80.0), (6.0, 120.0))


def test_a_corrupt_run_file_is_one_line_naming_it(run_dir: Path) -> None:
    folder = run_dir / "torch_profiler"
    good = json.dumps({"pass_index": 0, "status": "ok", "host_probe_us": 4.0})
    (folder / "passes.jsonl").write_text("\n".join([good, '{"pass_index": 1, "stage_ms', good]) + "\n")
    with pytest.raises(RunFolderError, match=r"passes.jsonl line 2: not valid JSON"):
        load_run(run_dir)
    (folder / "passes.jsonl").write_text(good + "\n[1, 2]\n")
    with pytest.raises(RunFolderError, match=r"passes.jsonl line 2: not a JSON object"):
        load_run(run_dir)
    (folder / "passes.jsonl").write_text(good + "\n")
    (folder / "settings.json").write_text('{"session": {"no_repeat_ngram_size": 0, "exp')
    with pytest.raises(RunFolderError, match=r"settings.json: not valid JSON \(line 1 column \d+\); truncated"):
        load_run(run_dir)
    (folder / "settings.json").write_text("[]")
    with pytest.raises(RunFolderError, match=r"settings.json: not a JSON object"):
        load_run(run_dir)
    (folder / "settings.json").unlink()
    (folder / "operator_table.json").write_text('{"basis": "cuda", "stage_category_ms": {"vision')
    with pytest.raises(RunFolderError, match=r"operator_table.json: not valid JSON"):
        load_run(run_dir)
    (folder / "operator_table.json").write_text("{}")
    with pytest.raises(RunFolderError, match=r"operator_table.json: not an operator table"):
        load_run(run_dir)


def test_a_pass_probed_after_it_stands_at_the_mean_of_its_two_probes(run_dir: Path) -> None:
    from llm_perf_opt.compare.runs import pass_probe, run_pass_probe

    rec = {"host_probe_us": 4.0, "host_probe_after_us": 8.0, "host_module_probe_us": 10.0,
           "host_module_probe_after_us": 14.0}
    assert [pass_probe(rec, "add", w) for w in ("before", "after", "bracket")] == [4.0, 8.0, 6.0]
    assert run_pass_probe(rec, "module") == pytest.approx(12.0)
    # a pass of a run before the after-pass probe keeps the probe before it; a bad value counts as missing
    assert run_pass_probe({"host_module_probe_us": 10.0}, "module") == 10.0
    assert run_pass_probe({"host_probe_us": 4.0, "host_probe_after_us": -1.0}) == 4.0
    assert pass_probe({"host_probe_us": 4.0, "host_probe_after_us": True}, "add", "after") is None
    with pytest.raises(ValueError, match="unknown host probe"):
        pass_probe(rec, "add", "during")
    lines = [json.dumps({"status": "ok", "host_module_probe_us": 9.0, "host_module_probe_after_us": 13.0,
                         "host_probe_us": 4.0, "stage_ms": {"decode": 80.0}}),
             json.dumps({"status": "ok", "host_module_probe_us": 11.0, "stage_ms": {"decode": 120.0}})]
    (run_dir / "torch_profiler" / "passes.jsonl").write_text("\n".join(lines) + "\n")
    run = load_run(run_dir)
    assert run.module_probe_decode == ((11.0, 80.0), (11.0, 120.0))
    assert run.host_module_probe_us == pytest.approx(11.0) and run.host_probe_us == pytest.approx(4.0)


def test_probe_decode_pairs_skip_what_is_not_a_measurement() -> None:
    from llm_perf_opt.compare.runs import probe_decode_pairs

    records = [["not", "an", "object"], {"status": "oom", "host_probe_us": 50.0},
               {"host_probe_us": 4.0, "stage_ms": [1.0]},  # stage_ms not an object: a probe, no pair
               {"host_probe_us": 6.0, "stage_ms": {"decode": True}},  # a bool is no time
               {"host_probe_us": float("inf"), "stage_ms": {"decode": 10.0}},  # nor an infinite probe
               {"host_probe_us": 8.0, "host_probe_after_us": 10.0, "stage_ms": {"decode": 20.0}}]
    assert probe_decode_pairs(records) == (pytest.approx(19 / 3), ((9.0, 20.0),))  # run: bracket where both
    assert probe_decode_pairs(records, when="before") == (pytest.approx(6.0), ((8.0, 20.0),))
    assert probe_decode_pairs(records, when="after") == (10.0, ((10.0, 20.0),))
    assert probe_decode_pairs([], "module") == (None, ())
