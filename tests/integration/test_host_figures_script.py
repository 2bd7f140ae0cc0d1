"""scripts/analytical/host_figures.py on the committed census, runs and calibrations (CPU only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from script_loader import load_script

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "reports" / "profile"
H200_CEILINGS = ROOT / "reports" / "hardware" / "h200" / "hw-ceilings.json"


def _h200_gaps_us() -> tuple[float, float]:
    """The committed H200 ceilings' (stream, CUDA-graph) kernel gaps in us, as the scripts print them."""
    data = json.loads(H200_CEILINGS.read_text())
    return data["kernel_gap_s"] * 1e6, data["kernel_gap_graph_s"] * 1e6


def _script() -> Any:
    return load_script("analytical/host_figures.py")


def test_census_host_time_per_launch_call_and_per_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    census = ROOT / "reports" / "profile" / "h200-census" / "census-h200.json"
    assert _script().main(["census", str(census), "--workload", "base:1"]) == 0
    rows = {line.split()[1]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    kernels, per_call, per_kernel = (float(rows["decode"][i]) for i in (2, 4, 5))
    assert kernels == 1049
    # the runtime's launch call is a fraction of the host time per kernel (CUDA_LAUNCH_HOST_WEIGHT)
    assert 0.2 < per_call / per_kernel < 0.4


def test_probe_slopes_and_a_clear_line_for_a_run_without_probes(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    runs = [str(RUNS / f"h200-{m}-b1-20261202T033259Z") for m in ("base", "gundam", "small")]
    assert _script().main(["probe", *runs]) == 0
    out = capsys.readouterr().out
    assert "between run means: slope" in out and "(3 runs)" in out and "all passes pooled" in out
    # within runs: least squares, correlation and the reduced-major-axis slope (= slope / correlation)
    within = next(line for line in out.splitlines() if line.startswith("within runs"))
    slope, corr, rma = (float(within.split(word)[1].split(",")[0].split()[0])
                        for word in ("slope ", "correlation ", "reduced-major-axis slope "))
    assert rma == pytest.approx(slope / corr, abs=0.02) and abs(corr) <= 1
    # the H100 runs predate the probe
    assert _script().main(["probe", str(RUNS / "h100-base-20261122T053733Z")]) == 2
    assert "no pass has both a host probe (add, taken: run) and a decode time" in capsys.readouterr().err
    # the committed H200 runs predate the module probe; a run folder whose passes have it is read
    assert _script().main(["probe", "--probe", "module", runs[0]]) == 2
    assert "no pass has both a host probe (module, taken: run) and a decode time" in capsys.readouterr().err
    copy = tmp_path / "run"
    shutil.copytree(runs[0], copy)
    passes = copy / "torch_profiler" / "passes.jsonl"
    recs = [json.loads(line) for line in passes.read_text().splitlines() if line.strip()]
    for i, rec in enumerate(recs):
        rec["host_module_probe_us"] = 10.0 + i
    passes.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert _script().main(["probe", "--probe", "module", str(copy)]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    ok = [r for r in recs if r.get("status", "ok") == "ok" and r.get("stage_ms", {}).get("decode")]
    assert float(row[1]) == pytest.approx(sum(r["host_module_probe_us"] for r in ok) / len(ok), abs=0.01)


def test_prior_table_and_exponent_variants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llm_perf_opt.analytic.calibration import Calibration, save_calibration

    cals = sorted((ROOT / "reports" / "compare").glob("*/calibration-*-prior.json"))
    assert len(cals) >= 2
    assert _script().main(["prior", *map(str, cals)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("all")
    cal = ROOT / "reports" / "compare" / "compare-h200-20261202T033259Z" / "calibration-h200-timeline.json"
    assert _script().main(["exponents", "--calibration", str(cal),
                           str(RUNS / "h200-base-b1-20261202T042320Z")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    labels = [line.split(" within")[0].strip() for line in lines]
    assert labels[0].startswith("fitted e = ") and labels[1:] == ["e = 1", "e = 0"]
    # a calibration without evaluated runs is refused in one line
    empty = save_calibration(Calibration(gpu_key="h200"), tmp_path / "empty.json")
    assert _script().main(["prior", str(empty)]) == 2
    assert "holds no evaluated run" in capsys.readouterr().err


def test_launches_next_to_the_census(capsys: pytest.CaptureFixture[str]) -> None:
    stages = ROOT / "tests" / "data" / "census" / "census-h200-stages.json"
    assert _script().main(["launches", str(stages)]) == 0
    rows = {(r[0], r[1]): r for r in (line.split() for line in capsys.readouterr().out.splitlines()[1:])}
    census, analytic = float(rows[("base:1", "decode")][2]), float(rows[("base:1", "decode")][4])
    assert abs(analytic - census) <= 1


def test_launches_follow_the_censuss_ngram_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A census summary of the ban off is set against the model with the ban off (one row's ban fewer)."""
    stages = json.loads((ROOT / "tests" / "data" / "census" / "census-h200-stages.json").read_text())

    def decode_at(ngram: object) -> float:
        path = tmp_path / "stages.json"
        path.write_text(json.dumps({**stages, "no_repeat_ngram_size": ngram}))
        assert _script().main(["launches", str(path)]) == 0
        rows = {(r[0], r[1]): r for r in (line.split() for line in capsys.readouterr().out.splitlines()[1:])}
        return float(rows[("base:1", "decode")][4])

    assert decode_at(20) - decode_at(0) == pytest.approx(9.33, abs=0.5)  # 7 launches x 4 picks / 3 forwards
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**stages, "new_tokens": "four"}))
    assert _script().main(["launches", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "are not counts" in err


def test_launches_refuses_a_full_census_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    census = ROOT / "reports" / "profile" / "h200-census" / "census-h200.json"
    assert _script().main(["launches", str(census)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a full census" in err


def test_device_model_from_the_measured_ceilings_next_to_the_census(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from llm_perf_opt.runners import calibrate_cli

    prior = tmp_path / "prior.json"
    ceilings = ROOT / "reports" / "hardware" / "h200" / "hw-ceilings.json"
    assert calibrate_cli.main(["--prior", "--gpu", "h200", "--ceilings", str(ceilings), "--out", str(prior)]) == 0
    capsys.readouterr()
    census = ROOT / "reports" / "profile" / "h200-census" / "census-h200.json"
    assert _script().main(["device", str(census), "--calibration", str(prior), "--workload", "base:1",
                           "--workload", "base:4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line in lines[1:]:
        # SAM's kernels: the census's ms, then the model's from the measured ceilings, kernel floor and
        # access-pattern bandwidths alone (nothing fitted)
        census_ms, model_ms = float(line.split()[1]), float(line.split()[3])
        assert model_ms == pytest.approx(census_ms, rel=0.10), line
    assert _script().main(["device", str(census), "--calibration", str(prior), "--workload", "huge:9"]) == 2
    assert "no workload 'huge:9'" in capsys.readouterr().err


def test_error_tables_of_the_committed_comparisons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _script().main(["table", str(ROOT / "reports" / "compare" / "compare-h200")]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| h200-")]
    assert len(rows) == 4 * 5 and "timeline, held-out stages: " in out and "standard errors" in out
    assert _script().main(["cross", str(ROOT / "reports" / "compare" / "cross-session-h200-20261202T142808Z")]) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("| h200-") for line in out.splitlines()) == 8 and "without the projector" in out
    assert _script().main(["table", str(tmp_path)]) == 2
    assert "no calibration-*-timeline.json" in capsys.readouterr().err
    assert _script().main(["cross", str(tmp_path)]) == 2


def test_an_error_within_two_standard_errors_of_the_measured_mean_counts_as_matched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import math

    def stage(name: str, ratio: float, std_ms: float) -> dict[str, Any]:
        return {"stage": name, "measured_ms": 10.0, "measured_std_ms": std_ms, "samples": 16,
                "calibrated_ratio": ratio}

    # sem = std / sqrt(16) / 10 ms: 8 ms -> 20%, 0.8 ms -> 2%
    stages = [stage("vision.sam", 1.05, 0.8), stage("vision.clip", 1.30, 8.0), stage("prefill", 1.30, 0.8),
              stage("decode", 0.50, 8.0)]
    (tmp_path / "run-a" / "compare").mkdir(parents=True)
    (tmp_path / "run-a" / "compare" / "compare.json").write_text(json.dumps({"stages": stages}))
    assert _script().main(["cross", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| run-a | +5.0% (sem 2.0%) | +30.0% (sem 20.0%) | - | +30.0% (sem 2.0%) | -50.0% (sem 20.0%) |" in out
    rms = math.sqrt((0.05**2 + 0.3**2 + 0.3**2 + 0.5**2) / 4)
    # SAM within 10%; CLIP within 2 sem (40%); prefill and decode neither
    assert f"all stages: 1 of 4 within 10% (rms {rms:.1%}), 2 within 10% or 2 standard errors" in out


def test_census_kernel_groups_at_the_bench_rates(capsys: pytest.CaptureFixture[str]) -> None:
    detail = ROOT / "reports" / "profile" / "h200-census" / "census-h200-detail.json"
    ceilings = ROOT / "reports" / "hardware" / "h200" / "hw-ceilings.json"
    assert _script().main(["rates", str(detail), "--ceilings", str(ceilings), "--workload", "base:1"]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines()[1:-1]:
        parts = line.split()
        rows.setdefault(parts[0], (float(parts[4]), float(parts[5])))
    # every score pattern of the global layers, as recognised from the census's operators and shapes
    for key in ("outer_add@64", "permuted_copy@64", "bias_add@64", "cast_up@64", "softmax_fp32@64",
                "cast_down@64", "transposed_add@64", "transposed_copy@64", "head_split@14", "patch_conv@64"):
        achieved, bench = rows[key]
        assert achieved == pytest.approx(bench, rel=0.05), key
    assert _script().main(["rates", str(detail), "--ceilings", str(ceilings), "--workload", "gundam:1"]) == 2
    assert "no workload 'gundam:1'" in capsys.readouterr().err


def test_census_gemm_groups_next_to_the_roofline(capsys: pytest.CaptureFixture[str]) -> None:
    census = ROOT / "reports" / "profile" / "h200-census" / "census-h200-detail.json"
    ceilings = ROOT / "reports" / "hardware" / "h200" / "hw-ceilings.json"
    assert _script().main(["gemms", str(census), "--ceilings", str(ceilings), "--workload", "base:1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {(line.split()[0], line.split()[1]): line.split() for line in lines[1:-2]}
    # CLIP's score GEMM: 16 heads x 257 x 257 x 64, 24 layers, far below the measured matmul ceiling
    calls, us, tflops, model_us, ratio = (float(x) for x in rows[("bmm", "16x257x257x64")][2:7])
    assert calls == 24 and tflops == pytest.approx(2 * 16 * 257 * 257 * 64 / us / 1e6, rel=0.01)
    assert ratio == pytest.approx(model_us / us, abs=0.006) and ratio < 0.5
    assert not any("Memset" in line for line in lines)
    # the committed ceilings time that shape (hw gemms): near the kernel's own duration in the census
    bench_us, bench_ratio = (float(x) for x in rows[("bmm", "16x257x257x64")][7:9])
    assert bench_ratio == pytest.approx(bench_us / us, abs=0.006) and 0.8 < bench_ratio < 1.25
    assert lines[-2].startswith("GEMMs: ") and "bf16 matmul ceiling 683.8 TFLOP/s" in lines[-2]
    assert lines[-1].startswith("bench GEMM times: ")
    assert _script().main(["gemms", str(census), "--ceilings", str(ceilings), "--workload", "tiny:9"]) == 2
    assert "no workload 'tiny:9'" in capsys.readouterr().err


def test_census_kernel_groups_by_op_and_shape(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    census = ROOT / "reports" / "profile" / "h200-census" / "census-h200-gemm-detail.json"
    rows = json.loads(census.read_text())["workloads"]["base:4"]["kernel_detail"]["prefill"]
    sorts = sum(float(r["device_us"]) for r in rows if r["op"] == "aten::sort") / 1e3
    grouped = sum(float(r["device_us"]) for r in rows if r["op"] == "aten::_grouped_mm") / 1e3
    assert _script().main(["kernels", str(census), "--workload", "base:4", "--op", "aten::sort",
                           "--op", "aten::_grouped_mm"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == f"per op: aten::_grouped_mm {grouped:.3f}, aten::sort {sorts:.3f}"
    assert out[-1].startswith(f"total {sorts + grouped:.3f} ms over ")
    # a shape filter (spaces ignored) keeps the groups on the (token, expert) pairs only
    assert _script().main(["kernels", str(census), "--workload", "base:4", "--op", "aten::mul",
                           "--shape", "[6768, 1280]"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:-2]
    assert lines and all("[6768, 1280]" in line for line in lines)
    assert _script().main(["kernels", str(census), "--workload", "base:4", "--op", "aten::nothing"]) == 2
    assert "no kernel group of base:4 prefill matches" in capsys.readouterr().err


def test_passes_spread_and_correlations_within_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import statistics

    runs = [RUNS / f"h200-{m}-b1-20261204T000735Z" for m in ("base", "small")]
    assert _script().main(["passes", *map(str, runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(x) for x in (runs[1] / "torch_profiler" / "passes.jsonl").read_text().splitlines()]
    sam = [r["stage_ms"]["vision.sam"] for r in rows]
    small = lines[2].split()
    assert small[0] == runs[1].name and float(small[1]) == pytest.approx(statistics.fmean(sam), abs=0.01)
    assert float(small[2]) == pytest.approx(statistics.stdev(sam) / statistics.fmean(sam), abs=0.01)
    assert lines[-1].startswith("within runs (16 passes): vision.sam with the module probe ")
    # each run is divided by its own means: a run scaled as a whole leaves the correlations as they were
    copy = tmp_path / "scaled"
    (copy / "torch_profiler").mkdir(parents=True)
    scaled = [{**r, "stage_ms": {k: 3 * v for k, v in r["stage_ms"].items()},
               "host_module_probe_us": 2 * r["host_module_probe_us"]} for r in rows]
    (copy / "torch_profiler" / "passes.jsonl").write_text("\n".join(json.dumps(r) for r in scaled) + "\n")
    assert _script().main(["passes", str(runs[0]), str(copy)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == lines[-1]
    assert _script().main(["passes", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no passes.jsonl" in err


def test_probe_before_after_or_bracketing_each_pass(capsys: pytest.CaptureFixture[str]) -> None:
    import statistics

    # a run set that recorded both probes before and after every pass (docs/results-h200.md section 19)
    run = RUNS / "h200-base-b1-20261204T141251Z"
    rows = [json.loads(x) for x in (run / "torch_profiler" / "passes.jsonl").read_text().splitlines()]
    want = {"before": statistics.fmean(r["host_module_probe_us"] for r in rows),
            "after": statistics.fmean(r["host_module_probe_after_us"] for r in rows)}
    want["bracket"] = (want["before"] + want["after"]) / 2
    assert abs(want["after"] - want["before"]) > 0.05  # the three choices are told apart at 0.01 us
    for when, value in want.items():
        assert _script().main(["probe", "--probe", "module", "--when", when, str(run)]) == 0
        row = capsys.readouterr().out.splitlines()[1].split()
        assert float(row[1]) == pytest.approx(value, abs=0.01), when
        assert _script().main(["passes", "--when", when, str(run), str(run)]) == 0
        assert float(capsys.readouterr().out.splitlines()[1].split()[3]) == pytest.approx(value, abs=0.01)
    # compare reads each pass at the mean of its two probes, and so does the scripts' default
    from llm_perf_opt.compare.runs import load_run

    assert load_run(run).host_module_probe_us == pytest.approx(want["bracket"])
    assert _script().main(["probe", "--probe", "module", str(run)]) == 0
    assert float(capsys.readouterr().out.splitlines()[1].split()[1]) == pytest.approx(want["bracket"], abs=0.01)
    # a run from before the after-pass probe has nothing after its passes: one line naming it; by default
    # it is read at the probe before each pass
    old = RUNS / "h200-base-b1-20261204T112529Z"
    for sub in (["probe", "--probe", "module"], ["passes"]):
        assert _script().main([*sub, "--when", "after", str(old)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "taken: after" in err and old.name in err
    assert _script().main(["passes", str(old), str(old)]) == 0
    before = statistics.fmean(json.loads(x)["host_module_probe_us"]
                              for x in (old / "torch_profiler" / "passes.jsonl").read_text().splitlines())
    assert float(capsys.readouterr().out.splitlines()[1].split()[3]) == pytest.approx(before, abs=0.01)


def test_help_of_the_script_and_of_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    mod = _script()
    with pytest.raises(SystemExit) as top:
        mod.main(["--help"])
    assert top.value.code == 0
    subcommands = ("census", "probe", "passes", "exponents", "launches", "prior", "device", "table", "cross", "moved",
                   "batch-gap", "gaps", "rates", "kernels", "leaves", "gemms")
    out = capsys.readouterr().out
    assert all(name in out for name in subcommands)
    for name in subcommands:
        with pytest.raises(SystemExit) as sub:
            mod.main([name, "--help"])
        assert sub.value.code == 0 and "usage:" in capsys.readouterr().out


def test_routing_counts_of_the_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_script("analytical/routing_counts.py")
    out = tmp_path / "routing.json"
    assert mod.main(["--config", "tiny", "--dtype", "fp32", "--out", str(out)]) == 0
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig

    lang = DeepseekOCRConfig.named("tiny").language
    counts = json.loads(out.read_text())["prefill"]
    moe_layers = [i for i in range(lang.num_hidden_layers) if lang.is_moe_layer(i)]
    assert sorted(map(int, counts)) == moe_layers
    pairs = {sum(c) for c in counts.values()}
    assert len(pairs) == 1 and pairs.pop() % lang.num_experts_per_tok == 0  # every prompt token routed k times
    assert all(len(c) == lang.n_routed_experts for c in counts.values())
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["layer", "pairs", "experts", "hit", "busiest", "/", "mean"]
    assert mod.main(["--batch-size", "0"]) == 2
    assert "--batch-size 0: must be >= 1" in capsys.readouterr().err
    assert mod.main(["--decode-steps", "-1"]) == 2
    assert "--decode-steps -1: must be >= 0" in capsys.readouterr().err
    # decode forwards: one routing per step and layer, batch rows x k pairs each
    assert mod.main(["--config", "tiny", "--dtype", "fp32", "--batch-size", "3", "--decode-steps", "2",
                     "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["decode_steps"] == 2 and sorted(map(int, data["decode"])) == moe_layers
    assert all(len(steps) == 2 and all(sum(c) == 3 * lang.num_experts_per_tok for c in steps)
               for steps in data["decode"].values())
    assert "decode, 2 steps of 3 rows" in capsys.readouterr().out
    assert mod.main(["--config", "tiny", "--out", str(tmp_path / "no" / "routing.json")]) == 2
    assert "no folder" in capsys.readouterr().err


def test_leaves_charges_a_timed_call_its_measured_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llm_perf_opt.analytic.calibration import Calibration, save_calibration

    key = "experts_grouped_mm@64x6x1x1280x896"  # Base b1 decode: one token per MoE layer
    cal = save_calibration(Calibration(gpu_key="h200", kernel_floor_s=2e-6, gemm_times_s={key: 100e-6}),
                           tmp_path / "cal.json")
    assert _script().main(["leaves", "--calibration", str(cal), "--workload", "base:1", "--stage", "decode"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert rows["RoutedExperts"][1:] == ["11", "1.100"]  # 11 MoE layers x 100 us
    assert rows["AttentionCore"][1] == "12"  # one per decoder layer
    assert _script().main(["leaves", "--calibration", str(cal), "--stage", "nope"]) == 2
    assert "stage 'nope' not in the model" in capsys.readouterr().err
    assert _script().main(["leaves", "--calibration", str(cal), "--workload", "base"]) == 2
    assert "expected MODE:BATCH" in capsys.readouterr().err


def _compare(root: Path, rel: str, prefill: float, sam: float = 1.0) -> None:
    path = root / rel / "compare" / "compare.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"stages": [{"stage": "prefill", "ratio": 0.5, "calibrated_ratio": prefill},
                                           {"stage": "vision.sam", "ratio": 0.9, "calibrated_ratio": sam}]}))


def test_moved_and_batch_gap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for root, b4 in ((old, 0.80), (new, 0.98)):
        _compare(root, "cross-session-h200-S/h200-base-b1-20261203T090148Z", 1.05, sam=1.002 if root is new else 1.0)
        _compare(root, "cross-session-h200-S/h200-base-b4-20261203T090148Z", b4)
        _compare(root, "compare-h200/held-out-calibrated/h200-small-b4-20261203T090148Z", 1.10)
    assert _script().main(["moved", str(old), str(new)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("3 compare.json in both roots, 12 stage ratios; 1 moved by >= 0.005")
    assert "h200-base-b4-20261203T090148Z prefill calibrated_ratio: 0.800 -> 0.980" in out[1]
    assert "largest move left out" in out[2] and "vision.sam calibrated_ratio: 1.000 -> 1.002" in out[2]
    assert _script().main(["batch-gap", str(new)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "cross-session-h200-S base b4: prefill -2.0%, b1 +5.0%, gap -7.0%"
    # both batch-4 runs (cross-session and held-out): mean of -2% and +10%
    assert out[1].startswith("every batch > 1 run (2): calibrated prefill error mean +4.0%")
    assert _script().main(["batch-gap", str(tmp_path / "empty")]) == 2
    assert "no compare.json" in capsys.readouterr().err


def test_gaps_between_queued_kernels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the committed Base b4 run whose profiled pass kept the host ahead through CLIP and the projector
    run = RUNS / "h200-base-b4-20261203T110219Z"
    ceilings = ROOT / "reports" / "hardware" / "h200" / "hw-ceilings.json"
    compare = ROOT / "reports" / "compare" / "cross-session-h200-20261203T110219Z"
    assert _script().main(["gaps", str(run), "--ceilings", str(ceilings), "--compare", str(compare)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[1]: float(line.split()[-1]) for line in out.splitlines()
            if line.startswith("h200-") and "per kernel" not in line}
    # the timed passes of the same run: CLIP behind SAM's backlog, measured minus kernel time per kernel
    (timed,) = [line for line in out.splitlines() if line.endswith("us per kernel")]
    assert 1.0 < float(timed.split()[-4]) < 2.0
    assert set(rows) == {"vision.clip", "projector"}  # SAM syncs, prefill and decode are host bound
    assert 1.0 < rows["vision.clip"] < 2.0
    assert f"bench (hw gap): {_h200_gaps_us()[0]:.2f} us" in out
    # a run whose host never stayed ahead says so; a folder without a timeline is one line
    host_bound = tmp_path / "run"
    host_bound.mkdir()
    (host_bound / "timeline.json").write_text(json.dumps([{
        "stage": "vision.clip", "kernels": 500, "device_span_ms": 20.0, "device_busy_ms": 2.0, "sync_ms": 0.0,
        "start_backlog_ms": 2.0, "end_backlog_ms": -0.1}]))
    assert _script().main(["gaps", str(host_bound)]) == 0
    assert "no range without syncs whose host stayed ahead" in capsys.readouterr().out
    (tmp_path / "old-run").mkdir()
    assert _script().main(["gaps", str(tmp_path / "old-run"), str(host_bound)]) == 0
    assert "old-run: skipped, no timeline.json" in capsys.readouterr().out
    assert _script().main(["gaps", str(tmp_path / "missing")]) != 0
    assert "no such run folder" in capsys.readouterr().err
    (host_bound / "timeline.json").write_text("{not json")
    assert _script().main(["gaps", str(host_bound)]) != 0
    assert "unreadable timeline.json" in capsys.readouterr().err


def test_graph_replayed_steps_next_to_the_model_without_host(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from llm_perf_opt.analytic.calibration import load_calibration

    hf = _script()
    cal_path = ROOT / "reports" / "compare" / "compare-h200-20261202T033259Z" / "calibration-h200-timeline.json"
    cal = load_calibration(cal_path)
    prompt = hf._census_pages("base:1", "default", "sdpa").shape.prefill_tokens
    rec = {"mode": "base", "batch": 1, "attention": "sdpa", "experts": "grouped_mm", "prompt_length": prompt,
           "kv_len": prompt + 9, "host_probe_add_us": cal.host_probe_us, "eager_ms": 20.0, "graph_ms": 4.0,
           "graph_trace": {"kernels": 1000, "kernel_sum_ms": 3.0, "span_ms": 4.0}}
    failed = {**rec, "batch": 4, "attention": "eager", "graph_error": "RuntimeError: not capturable"}
    del failed["graph_ms"], failed["graph_trace"]
    failed["eager_trace"] = {"kernels": 1070, "kernel_sum_ms": 3.5, "span_ms": 19.0}
    path = tmp_path / "graph.json"
    path.write_text(json.dumps({"records": [rec, failed]}))
    assert hf.main(["graph", str(path), "--calibration", str(cal_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    b1 = lines[1].split()
    kernels_model, kernel_ms_model, no_host = float(b1[5]), float(b1[8]), float(b1[10])
    assert b1[:3] == ["base:1", "sdpa", str(prompt + 9)] and float(b1[3]) == 1000
    # no host cost: the step is its blocks' device time plus the gap per kernel of a graph replay
    gap_s = cal.for_host_probe(0.0).stage_gap_s("decode")
    assert no_host == pytest.approx(kernel_ms_model + kernels_model * gap_s * 1e3, abs=2e-3)
    assert b1[11] == f"({no_host / 4.0 - 1:+.0%})"
    # at the calibration's own probe the host dominates: the step is several times the no-host one
    assert float(b1[-2]) > 2 * no_host
    assert lines[2].split()[:2] == ["base:4", "eager"] and "failed" in lines[2] and float(lines[2].split()[3]) == 1070
    assert lines[3] == "  capture failed: RuntimeError: not capturable"
    # --kernels: the trace's kernels of most time, at most N, from the replays' trace, else the eager step's
    rec["graph_trace"]["top"] = [{"name": "gemv", "launches": 12.0, "ms": 1.5}, {"name": "cat", "launches": 24.0,
                                                                                 "ms": 1.0}]
    failed["eager_trace"]["top"] = [{"name": "copy", "launches": 2.0, "ms": 0.25}]
    path.write_text(json.dumps({"records": [rec, failed]}))
    assert hf.main(["graph", str(path), "--calibration", str(cal_path), "--kernels", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["1.500", "ms", "12", "launches", "gemv"]
    assert lines[5].split() == ["0.250", "ms", "2", "launches", "copy"] and len(lines) == 7
    with pytest.raises(SystemExit) as neg:  # a negative count: one usage line
        hf.main(["graph", str(path), "--calibration", str(cal_path), "--kernels", "-1"])
    assert neg.value.code == 2 and "expected an integer >= 0, got -1" in capsys.readouterr().err
    # another workload's record, a file that is not a result: one line each
    path.write_text(json.dumps({"records": [{**rec, "prompt_length": prompt - 1}]}))
    assert hf.main(["graph", str(path), "--calibration", str(cal_path)]) == 2
    assert "not the same workload" in capsys.readouterr().err
    path.write_text("[]")
    assert hf.main(["graph", str(path), "--calibration", str(cal_path)]) == 2
    assert "not a graph_decode.py result" in capsys.readouterr().err


def test_the_committed_graph_replays_match_the_model_without_host(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """docs/results-h200.md sections 14-15: the decode steps replayed from a CUDA graph on the H200 against the
    prior of the committed ceilings with no host cost (graph gap): every workload within 15% (-12% to +5%
    with the 1.12 us stream gap; the bench-timed calls lose today's stream gap per kernel, while their times
    were taken in an earlier session)."""
    from llm_perf_opt.runners import calibrate_cli

    prior = tmp_path / "prior.json"
    assert calibrate_cli.main(["--prior", "--gpu", "h200", "--ceilings",
                               str(ROOT / "reports" / "hardware" / "h200" / "hw-ceilings.json"),
                               "--out", str(prior)]) == 0
    capsys.readouterr()
    rows = []
    for name in ("graph-decode-base.json", "graph-decode-base-long.json"):
        path = RUNS / "h200-graph-decode" / name
        assert _script().main(["graph", str(path), "--calibration", str(prior)]) == 0
        out = capsys.readouterr().out.splitlines()
        stream_us, graph_us = _h200_gaps_us()
        assert out[-1].startswith(f"gap between kernels: {stream_us:.2f} us on a stream, {graph_us:.2f} us with no host")
        rows += [line.split() for line in out[1:-1]]
    assert len(rows) == 5
    for row in rows:
        graph_ms, model_ms = float(row[9]), float(row[10])
        assert abs(model_ms / graph_ms - 1) < 0.15, row


def test_tie_host_sets_a_stage_at_another_calibrations_ratio(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """tie-host: SAM's host cost becomes decode's times the SAM/decode ratio of another (committed) fit."""
    from llm_perf_opt.analytic.calibration import load_calibration

    folder = ROOT / "reports" / "compare" / "compare-h200-20261202T033259Z"
    prior, like = folder / "calibration-h200-prior.json", folder / "calibration-h200-timeline.json"
    out = tmp_path / "tied.json"
    assert _script().main(["tie-host", str(prior), "--stage", "vision.sam", "--to", "decode", "--like", str(like),
                           "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("vision.sam: ")
    h_like = json.loads(like.read_text())["stage_host_s_per_kernel"]
    h_prior = json.loads(prior.read_text())["stage_host_s_per_kernel"]
    tied = load_calibration(out)
    assert tied.stage_host_s_per_kernel["vision.sam"] == pytest.approx(
        h_prior["decode"] * h_like["vision.sam"] / h_like["decode"], rel=1e-12)
    assert tied.stage_host_s_per_kernel["vision.sam"] != pytest.approx(h_prior["vision.sam"])
    for stage in ("vision.clip", "projector", "prefill", "decode"):
        assert tied.stage_host_s_per_kernel[stage] == h_prior[stage]
    # an additive calibration has no host costs to tie: one line, exit 2
    assert _script().main(["tie-host", str(folder / "calibration-h200.json"), "--stage", "vision.sam", "--to",
                           "decode", "--like", str(like), "--out", str(out)]) == 2
    assert "not a timeline calibration" in capsys.readouterr().err
    assert _script().main(["tie-host", str(prior), "--stage", "decode", "--to", "decode", "--like", str(like),
                           "--out", str(out)]) == 2
    assert "--stage and --to are both decode" in capsys.readouterr().err


def test_a_reader_that_closed_its_pipe_is_no_error() -> None:
    import os
    import subprocess
    import sys

    cal = ROOT / "reports" / "compare" / "cross-session-h200-20261204T112529Z" / "calibration-h200-prior.json"
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head` does once it has its lines: every write now fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "analytical" / "host_figures.py"), "prior",
                               str(cal)], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    finally:
        os.close(write_end)
    assert proc.returncode == 0 and proc.stderr == ""


def test_memory_puts_each_runs_peak_next_to_the_footprint(capsys: pytest.CaptureFixture[str]) -> None:
    runs = [ROOT / "reports" / "profile" / f"h200-{r}-20261202T012852Z" for r in ("base-b1", "base-b4")]
    assert _script().main(["memory", *map(str, runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "peak", "GB", "footprint", "GB", "error"]
    for run, line in zip(runs, lines[1:], strict=True):
        name, peak, pred, err = line.split()
        metrics = json.loads((run / "torch_profiler" / "metrics.json").read_text())
        assert name == run.name and float(peak) == pytest.approx(metrics["peak_memory_bytes"] / 1e9, abs=5e-4)
        assert float(err.rstrip("%")) / 100 == pytest.approx(float(pred) / float(peak) - 1, abs=2e-3)
        assert -0.02 < float(pred) / float(peak) - 1 < 0.005  # the footprint of section 20
    assert _script().main(["memory", str(ROOT / "reports" / "profile" / "h200-census")]) == 2  # not a run: one line


def test_rows_gives_a_batch_rows_decode_cost_from_b1_b4_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    cal = ROOT / "reports" / "compare" / "cross-session-h200-20261204T142146Z" / "calibration-h200-prior.json"
    dec = {e["run_id"].split("-")[1] + e["run_id"].split("-")[2]: e
           for e in json.loads(cal.read_text())["fit"]["after"] if e["stage"] == "decode"}
    assert _script().main(["rows", str(cal)]) == 0
    out = capsys.readouterr().out.splitlines()
    for mode in ("base", "small"):
        row = next(line for line in out if line.split()[1:2] == [mode])
        want = [(dec[f"{mode}b4"][k] - dec[f"{mode}b1"][k]) / 3 / 64 * 1e3 for k in ("measured_ms", "predicted_ms")]
        assert [float(x) for x in row.split()[2:]] == pytest.approx(want, abs=0.06)
    assert out[-1].startswith("median of 2 pairs:")
    assert _script().main(["rows", str(cal), "--new-tokens", "0"]) == 2
    assert _script().main(["rows", str(ROOT / "reports" / "hardware" / "h200" / "projector-pages.json")]) == 2


def test_probe_per_pass_gives_each_decode_forward_in_its_own_probe_calls(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/results-h200.md section 21: Small b64's two passes in their own module-probe calls."""
    run = RUNS / "h200-small-b64-20261204T170006Z"
    assert _script().main(["probe", "--probe", "module", "--when", "bracket", "--per-pass", str(run)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("pass ")]
    recs = [json.loads(ln) for ln in (run / "torch_profiler" / "passes.jsonl").read_text().splitlines() if ln.strip()]
    recs = [r for r in recs if r.get("status", "ok") == "ok"]
    assert len(lines) == len(recs) == 2
    for line, r in zip(lines, recs, strict=True):
        probe = (r["host_module_probe_us"] + r["host_module_probe_after_us"]) / 2
        per_forward = r["stage_ms"]["decode"] / r["decode_forwards"]
        assert f"probe {probe:.2f} us, decode {per_forward:.2f} ms per forward" in line
        assert line.endswith(f"= {per_forward * 1e3 / probe:,.0f} probe calls")
    assert [ln.split("= ")[1] for ln in lines] == ["1,599 probe calls", "1,536 probe calls"]


def test_steps_puts_the_decode_step_against_kv_next_to_the_model(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cal = ROOT / "reports" / "compare" / "cross-session-h200-20261204T210208Z" / "calibration-h200-prior.json"
    run = tmp_path / "h200-small-b64-ngram0-20261204T210208Z"
    shutil.copytree(RUNS / run.name, run)
    passes = run / "torch_profiler" / "passes.jsonl"
    rows = [json.loads(line) for line in passes.read_text().splitlines() if line.strip()]
    for r in rows:  # a known line: 20 ms + 0.05 ms per forward (50 ms per 1,000 positions), 3 mallocs per forward
        f = r["decode_forwards"]
        r["decode_step_ms"] = [20.0 + 0.05 * j for j in range(f)] + [0.1]
        r["decode_device_allocs"] = 3 * f
    passes.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _script().main(["steps", str(run), "--calibration", str(cal), "--window", "10"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(run.name))
    cells = line.split()
    assert cells[1] == "63" and cells[2] == "121-183"
    assert float(cells[3]) == pytest.approx(20.0 + 0.05 * 4.5, abs=0.01)  # mean of the first 10 forwards
    assert float(cells[5]) == pytest.approx(20.0 + 0.05 * 57.5, abs=0.01)  # and of the last 10
    assert float(cells[7]) == pytest.approx(50.0, abs=0.01)
    # the model's steps at this workload's two window centres, as simulate_pass gives them (host-bound: flat)
    from llm_perf_opt.analytic.calibration import load_calibration
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.roofline import RooflinePeaks
    from llm_perf_opt.analytic.timeline_model import simulate_pass
    from llm_perf_opt.compare.runs import load_run, run_workloads
    from llm_perf_opt.hardware import effective_peaks, load_catalog
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
    from llm_perf_opt.vocab import Stage, parse_dtype

    measured = load_run(run)
    c = load_calibration(cal)
    host = c.at_host_speed(measured.probe_us(c.host_probe))
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get(c.gpu_key)), parse_dtype(c.dtype))
    (wl, _), = run_workloads(measured)
    m = AnalyticModel(DeepseekOCRConfig.named("default"), wl)
    want = [simulate_pass({Stage.DECODE: m.decode_step(m.shape.decode_kv_len(0) + j)}, 16, peaks, host)
            .decode_forward_s * 1e3 for j in (4.5, 57.5)]
    assert [float(cells[8]), float(cells[10])] == pytest.approx(want, abs=0.006)
    assert cells[11] == "+0.0%" and float(cells[12]) == pytest.approx(0.0, abs=0.006)
    assert float(cells[-1]) == pytest.approx(3.0)
    # a run without per-step times, and a calibration that is not a timeline one: one line each
    (run / "torch_profiler" / "passes.jsonl").write_text(json.dumps({**rows[0], "decode_step_ms": []}) + "\n")
    assert _script().main(["steps", str(run), "--calibration", str(cal)]) == 2
    assert "no pass with per-step decode times" in capsys.readouterr().err
    (run / "torch_profiler" / "passes.jsonl").write_text(json.dumps({**rows[0], "decode_step_ms": ["x"] * 64}) + "\n")
    assert _script().main(["steps", str(run), "--calibration", str(cal)]) == 2
    assert "decode_step_ms, decode_forwards or decode_device_allocs is not numbers" in capsys.readouterr().err
    additive = ROOT / "reports" / "compare" / "compare-h200" / "calibration-h200.json"
    assert _script().main(["steps", str(RUNS / run.name), "--calibration", str(additive)]) == 2
    assert "not a timeline calibration" in capsys.readouterr().err


def test_levels_shows_host_speed_levels_within_a_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "a-run-folder-name-of-more-than-fifty-characters-b16"  # printed whole
    shutil.copytree(RUNS / "h200-base-b16-ngram20-20261204T195740Z", run)
    passes = run / "torch_profiler" / "passes.jsonl"
    rows = [json.loads(line) for line in passes.read_text().splitlines() if line.strip()]
    assert [r["decode_forwards"] for r in rows] == [63, 63]
    # pass 0 steady at 20 ms; pass 1 at 20 ms, then 30 ms from forward 24 on; the pick after the last forward
    # (0.1 ms) is not a forward and is left out
    rows[0]["decode_step_ms"] = [20.0] * 63 + [0.1]
    rows[1]["decode_step_ms"] = [20.0] * 24 + [30.0] * 39 + [0.1]
    rows[1]["host_module_probe_after_us"] = None
    passes.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _script().main(["levels", str(run), "--window", "16"]) == 0
    out = [x for x in capsys.readouterr().out.splitlines() if x.startswith(run.name)]
    assert len(out) == 2
    first, second = (line.split() for line in out)
    assert first[-5:] == ["1.00", "20.0", "20.0", "20.0", "20.0"]
    # windows of 16: forwards 0-15 at 20, 16-31 half and half (median 25), 32-47 and 48-62 at 30
    assert second[-5:] == ["1.50", "20.0", "25.0", "30.0", "30.0"]
    assert second[2] == f"{rows[1]['host_module_probe_us']:.1f}" and second[4] == "-"
    # a pass without per-step times is left out; none with them, a bad window: one line each
    passes.write_text(json.dumps({**rows[0], "decode_step_ms": []}) + "\n" + json.dumps(rows[1]) + "\n")
    assert _script().main(["levels", str(run), "--window", "16"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [x.split()[1] for x in out if x.startswith(run.name + " ")] == ["1"]
    assert f"{run.name}: 1 pass(es) without per-step decode times left out" in out
    passes.write_text(json.dumps({**rows[0], "decode_step_ms": None}) + "\n")
    assert _script().main(["levels", str(run)]) == 2
    assert "no pass with per-step decode times" in capsys.readouterr().err
    assert _script().main(["levels", str(run), "--window", "0"]) == 2
    assert "--window 0: must be >= 1" in capsys.readouterr().err


def test_segments_against_every_forward(capsys: pytest.CaptureFixture[str]) -> None:
    cal = ROOT / "reports" / "compare" / "cross-session-h200-20261204T210208Z" / "calibration-h200-prior.json"
    argv = ["segments", "--calibration", str(cal), "--modes", "small", "--batches", "64,512", "--tokens", "600",
            "--groups", "1,8"]
    assert _script().main(argv) == 0
    rows = {int(x.split()[1]): x.split() for x in capsys.readouterr().out.splitlines() if x.startswith("small")}
    host_bound, crossing = rows[64], rows[512]
    assert float(host_bound[3].split("-")[1]) == pytest.approx(float(host_bound[3].split("-")[0]))  # flat steps
    assert [float(c.rstrip("%")) for c in host_bound[4:]] == [0.0, 0.0, 0.0]
    first, last = (float(v) for v in crossing[3].split("-"))
    assert last > 1.2 * first  # the step turns device-bound as the cache grows
    mean_step, one_group, eight = (float(c.rstrip("%")) for c in crossing[4:])
    assert mean_step == one_group < -2.0 and abs(eight) < 0.5  # one group is the mean step
    assert _script().main(["segments", "--calibration", str(cal), "--batches", "4,x"]) == 2
    assert "comma-separated whole numbers" in capsys.readouterr().err


def test_backlog_sets_the_models_backlog_before_a_stage_next_to_each_pass(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Large b1's projector is its kernels alone (~0.024 ms) in the passes where CLIP kept a backlog and its host
    time (~0.2 ms) in the others; the model ends CLIP with next to no backlog and prices the host time, as
    the compare of the same calibration does."""
    from llm_perf_opt.analytic.calibration import load_calibration

    stamp = "20261202T215944Z"
    cal = ROOT / "reports" / "compare" / f"cross-session-h200-{stamp}" / "calibration-h200-prior.json"
    large, base4 = (RUNS / f"h200-{w}-{stamp}" for w in ("large-b1", "base-b4"))
    assert _script().main(["backlog", str(large), str(base4), "--calibration", str(cal)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "vision.clip end backlog ms" in out[0] and "projector ms" in out[0]
    rows = {x.split()[0]: x.split() for x in out[1:-1]}
    predicted = {e.run_id: e.predicted_ms for e in load_calibration(cal).fit.after if e.stage == "projector"}
    passes = [json.loads(x)["stage_ms"] for x in (large / "torch_profiler" / "passes.jsonl").read_text().splitlines()]
    lag, pred, *cells = rows[large.name][1:]
    assert float(pred) == pytest.approx(predicted[large.name], abs=5e-4)
    assert 0.0 <= float(lag) < 0.01  # host-bound CLIP: the device has next to nothing queued
    assert cells == [f"{p['projector']:.3f}({p['vision.clip']:.2f})" for p in passes]
    lag4, pred4 = (float(x) for x in rows[base4.name][1:3])
    assert lag4 > 1.0 and pred4 == pytest.approx(predicted[base4.name], abs=5e-4)  # CLIP's kernels hide it
    # a stage with none before it, a run without stage times: one line each
    assert _script().main(["backlog", str(large), "--calibration", str(cal), "--stage", "vision.sam"]) != 0
    assert "--stage 'vision.sam'" in capsys.readouterr().err
    bare = tmp_path / "bare"
    (bare / "torch_profiler").mkdir(parents=True)
    (bare / "torch_profiler" / "passes.jsonl").write_text(json.dumps({"status": "ok"}) + "\n")
    assert _script().main(["backlog", str(bare), "--calibration", str(cal)]) != 0
    assert "no pass with projector and vision.clip times" in capsys.readouterr().err
