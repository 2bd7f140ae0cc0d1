"""The profiling runner end to end on CPU (tiny config): every artifact, consistent numbers, bad input, interruption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from llm_perf_opt.data import LLMProfileReport, load_report
from llm_perf_opt.data.common import Stats
from llm_perf_opt.profiling import session as session_mod
from llm_perf_opt.profiling.aggregate import STAGE_ORDER
from llm_perf_opt.profiling.records import STATUS_OK, STATUS_OOM, read_records
from llm_perf_opt.profiling.run import allocator_hint
from llm_perf_opt.reporting.profile_artifacts import REQUIRED_ARTIFACTS
from llm_perf_opt.runners.llm_profile_runner import main
from llm_perf_opt.vocab import VISION_STAGES, Stage

BASE = ["--device", "cpu", "--config", "tiny", "--mode", "tiny", "--dtype", "fp32", "--no-progress"]


def _pdf(path: Path) -> Path:
    Image.new("RGB", (300, 400), "white").save(path, resolution=72.0)
    return path


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, list[str], str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out.strip().splitlines(), err


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("profile")
    pdf = _pdf(tmp / "doc.pdf")
    argv = [*BASE, "--synthetic", "2", "--synthetic-categories", "text_heavy,image_rich", "--pdf", str(pdf),
            "--dpi", "100", "--max-new-tokens", "3", "--warmup", "1", "--repeats", "2", "--profile-images", "2",
            "--profile-max-new-tokens", "2", "--gpu", "h100-sxm", "--output-dir", str(tmp / "out"),
            "--run-id", "cpu-it"]
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(argv)
    assert rc == 0, err.getvalue()
    return tmp / "out" / "cpu-it", out.getvalue().strip().splitlines()


def test_every_artifact_exists_and_last_line_is_the_run_folder(full_run: tuple[Path, list[str]]) -> None:
    run_dir, lines = full_run
    assert lines[-1] == str(run_dir)
    art = run_dir / "torch_profiler"
    for name in (*REQUIRED_ARTIFACTS, "trace.json.gz", "stage_breakdown.png", "per_image_timings.png",
                 "operator_events.json.gz", "operator_table.json"):
        assert (art / name).is_file() and (art / name).stat().st_size > 0, name
    env = json.loads((art / "env.json").read_text())
    assert env["software"]["torch"] == torch.__version__ and "git_revision" in env["project"]
    inputs = yaml.safe_load((art / "inputs.yaml").read_text())
    assert [i["source"] for i in inputs["images"]] == ["pdf", "synthetic", "synthetic"]
    assert inputs["images"][0]["page_index"] == 0
    assert (inputs["images"][0]["width_px"], inputs["images"][0]["height_px"]) == (417, 556)  # 300x400 pt @100dpi


def test_metrics_validate_and_agree_with_the_pass_records(full_run: tuple[Path, list[str]]) -> None:
    art = full_run[0] / "torch_profiler"
    report = load_report(art / "metrics.json", LLMProfileReport)
    records = read_records(art / "passes.jsonl")
    assert len(records) == 3 * 2 and all(r.status == STATUS_OK for r in records)
    assert {(r.batch_index, r.repeat_index) for r in records} == {(b, k) for b in range(3) for k in range(2)}
    for r in records:
        vision = sum(r.stage_ms[s.value] for s in VISION_STAGES)
        assert r.stage_ms[Stage.PREFILL.value] >= vision > 0
        assert len(r.decode_step_ms) == r.decode_steps == 3 and r.decode_forwards == 2
        assert sum(r.decode_step_ms) <= r.stage_ms[Stage.DECODE.value] + 1e-6
        assert r.generated_tokens == 3
        assert r.host_probe_us is not None and 0 < r.host_probe_us < 10_000  # host speed probed per pass
        # and on the model's own code path (a tiny decoder forward of the run's config)
        assert r.host_module_probe_us is not None and 0 < r.host_module_probe_us < 10_000
        # both probes again after the pass (bracketing the host's speed over it)
        assert r.host_probe_after_us is not None and 0 < r.host_probe_after_us < 10_000
        assert r.host_module_probe_after_us is not None and 0 < r.host_module_probe_after_us < 10_000
    for stage in STAGE_ORDER:
        expected = Stats.from_values(r.stage_ms[stage.value] for r in records)
        got = report.stage_ms[stage]
        assert got.count == 6
        assert got.mean == pytest.approx(expected.mean) and got.std == pytest.approx(expected.std)
        assert got.p90 == pytest.approx(expected.p90)
    assert len(report.stage_timings) == 6 * len(STAGE_ORDER)
    assert report.pages_per_s is not None and report.pages_per_s.count == 6
    assert report.meta.repeats == 2 and report.meta.mode == "tiny" and report.skipped_images == []
    assert report.operators and abs(sum(o.share_of_total for o in report.operators) - 1.0) < 1e-6
    totals = json.loads((art / "operator_table.json").read_text())
    assert totals["basis"] == "cpu" and totals["profiled_steps"] == 2
    assert totals["total_self_ms"] == pytest.approx(sum(o.self_cpu_time_ms for o in report.operators))
    assert sum(totals["stage_ms"].values()) == pytest.approx(totals["total_self_ms"])


def test_mfu_is_within_bounds_and_recomputes(full_run: tuple[Path, list[str]]) -> None:
    art = full_run[0] / "torch_profiler"
    report = load_report(art / "metrics.json", LLMProfileReport)
    assert set(report.stage_mfu) == set(STAGE_ORDER)
    assert all(0.0 < v < 1.5 for v in report.stage_mfu.values())
    assert all(0.0 < v < 1.5 for v in report.stage_mbu.values())
    assert report.model_mfu is not None and 0.0 < report.model_mfu < 1.5
    # prefill MFU from the analytic model and the catalogue peak, recomputed here
    from llm_perf_opt.hardware.catalog import load_catalog
    from llm_perf_opt.inputs import collect_pages
    from llm_perf_opt.models.deepseek_ocr import DeepseekOCRConfig
    from llm_perf_opt.profiling.analytic_work import make_work_fn
    from llm_perf_opt.vocab import DType

    records = read_records(art / "passes.jsonl")
    pages = collect_pages(pdf=full_run[0].parent.parent / "doc.pdf", dpi=100, synthetic=2,
                          synthetic_categories=["text_heavy,image_rich"])
    work = make_work_fn(DeepseekOCRConfig.tiny(), pages, mode="tiny", dtype=DType.FP32, attn_implementation="eager")
    flops = sum(work(r)[Stage.PREFILL].flops for r in records)
    seconds = sum(r.stage_ms["prefill"] for r in records) / 1e3
    peak = load_catalog().get("h100-sxm").peak_flops_per_s(DType.FP32)
    assert report.stage_mfu[Stage.PREFILL] == pytest.approx(flops / seconds / peak, rel=1e-9)
    # MBU follows the run's experts implementation (the runner's default is grouped_mm): batched_mm copies
    # the expert weights per token, so the same passes move more bytes; FLOPs do not change
    batched = make_work_fn(DeepseekOCRConfig.tiny(), pages, mode="tiny", dtype=DType.FP32,
                           attn_implementation="eager", experts_implementation="batched_mm")
    grouped_bytes = sum(work(r)[Stage.PREFILL].bytes for r in records)
    assert sum(batched(r)[Stage.PREFILL].bytes for r in records) > grouped_bytes
    assert sum(batched(r)[Stage.PREFILL].flops for r in records) == pytest.approx(flops)
    bytes_s = grouped_bytes / seconds
    bandwidth = load_catalog().get("h100-sxm").memory_bandwidth_bytes_per_s
    assert report.stage_mbu[Stage.PREFILL] == pytest.approx(bytes_s / bandwidth, rel=1e-9)


def test_markdown_reports_carry_the_numbers(full_run: tuple[Path, list[str]]) -> None:
    art = full_run[0] / "torch_profiler"
    report = load_report(art / "metrics.json", LLMProfileReport)
    md = (art / "report.md").read_text()
    for stage in STAGE_ORDER:
        assert stage.value in md
    assert f"{report.stage_ms[Stage.DECODE].mean:,.2f}" in md
    probes = [r.host_probe_us for r in read_records(art / "passes.jsonl") if r.host_probe_us]
    assert f"mean {sum(probes) / len(probes):,.2f}, min {min(probes):,.2f}" in md  # the host speed line
    mods = [r.host_module_probe_us for r in read_records(art / "passes.jsonl") if r.host_module_probe_us]
    assert f"tiny decoder forward): mean {sum(mods) / len(mods):,.2f}, min {min(mods):,.2f}" in md
    after = [r.host_probe_after_us for r in read_records(art / "passes.jsonl") if r.host_probe_after_us]
    mods_after = [r.host_module_probe_after_us for r in read_records(art / "passes.jsonl")
                  if r.host_module_probe_after_us]
    assert (f"The same probe after each pass: mean {sum(after) / len(after):,.2f}, on the model's path "
            f"{sum(mods_after) / len(mods_after):,.2f} (compare takes") in md
    ops = (art / "operators.md").read_text()
    assert report.operators[0].op_name in ops and "self CPU time" in ops
    summary = (art / "stakeholder_summary.md").read_text()
    assert "What to try next" in summary and f"{report.pages_per_s.mean:,.3f}" in summary  # type: ignore[union-attr]
    assert "MFU / MBU" in (art / "assumptions.md").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--images", "EMPTY"], "no images found"),
    (["--images", "BROKEN"], "no readable images"),
    (["--pdf", "BADPDF"], "PDF could not be opened"),
    (["--mode", "huge", "--synthetic", "1"], "unknown resolution mode 'huge'"),
    (["--synthetic", "1", "--max-new-tokens", "0"], "--max-new-tokens 0"),
    (["--synthetic", "1", "--gpu", "h999"], "unknown GPU 'h999'"),
    (["--synthetic", "1", "--prompt", "no image tag"], "exactly one <image> tag"),
    (["--synthetic", "1", "--dtype", "fp8"], "--dtype fp8: the executable model runs in"),
    (["--synthetic", "1", "--config", "NOTDS"], "is not DeepSeek-OCR"),
    (["--synthetic", "1", "--model", "NOWEIGHTS"], "no weights in the model folder"),
    (["--synthetic", "1", "--output-dir", "BLOCKED"], "cannot create it"),
    (["--synthetic", "1", "--catalog", "BADYAML"], "not valid YAML"),
])
def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                               message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "page.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4 nonsense")
    (tmp_path / "llama.json").write_text('{"model_type": "llama", "hidden_size": 4096}')
    (tmp_path / "no-weights").mkdir()
    config_json = Path(session_mod.__file__).parents[1] / "models" / "deepseek_ocr" / "config.json"
    (tmp_path / "no-weights" / "config.json").write_text(config_json.read_text())
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "bad.yaml").write_text("gpus: [unclosed\n")
    subst = {"EMPTY": str(tmp_path / "empty"), "BROKEN": str(tmp_path / "broken"), "BADPDF": str(tmp_path / "bad.pdf"),
             "NOTDS": str(tmp_path / "llama.json"), "NOWEIGHTS": str(tmp_path / "no-weights"),
             "BLOCKED": str(tmp_path / "a-file" / "out"), "BADYAML": str(tmp_path / "bad.yaml")}
    argv = [*BASE, "--output-dir", str(tmp_path / "out"), *[subst.get(a, a) for a in extra]]
    rc, _out, err = _run(capsys, argv)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()  # checked before any run folder is made


def test_unreadable_image_in_a_set_is_skipped_and_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "pages"
    folder.mkdir()
    Image.new("RGB", (500, 700), "white").save(folder / "a.png")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    argv = [*BASE, "--images", str(folder), "--max-new-tokens", "2", "--warmup", "0", "--repeats", "1",
            "--profile-images", "0", "--output-dir", str(tmp_path / "out"), "--run-id", "skip"]
    rc, out, err = _run(capsys, argv)
    assert rc == 0 and out[-1] == str(tmp_path / "out" / "skip")
    assert "b.png: not a readable image" in err
    art = tmp_path / "out" / "skip" / "torch_profiler"
    report = load_report(art / "metrics.json", LLMProfileReport)
    assert [Path(i.path or "").name for i in report.inputs.images] == ["a.png"]
    assert len(report.skipped_images) == 1 and report.skipped_images[0].ref.endswith("b.png")
    assert load_report(art / "metrics.yaml", LLMProfileReport) == report
    assert "b.png" in (art / "report.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_requested_but_absent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _out, err = _run(capsys, ["--device", "cuda", "--synthetic", "1", "--output-dir", str(tmp_path)])
    assert rc == 2 and "no CUDA GPU is available" in err and len(err.strip().splitlines()) == 1


def _failing_run_pass(monkeypatch: pytest.MonkeyPatch, fail_on: int, exc: BaseException) -> None:
    original = session_mod.ModelSession.run_pass
    calls = {"n": 0}

    def run_pass(self, pages, recorder, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == fail_on:
            raise exc
        return original(self, pages, recorder, **kw)

    monkeypatch.setattr(session_mod.ModelSession, "run_pass", run_pass)


def test_out_of_memory_on_one_page_keeps_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_run_pass(monkeypatch, 2, torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)"))
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    argv = [*BASE, "--synthetic", "3", "--max-new-tokens", "2", "--warmup", "0", "--repeats", "1",
            "--profile-images", "0", "--output-dir", str(tmp_path), "--run-id", "oom"]
    rc, out, err = _run(capsys, argv)
    assert rc == 0 and out[-1] == str(tmp_path / "oom")
    art = tmp_path / "oom" / "torch_profiler"
    recs = read_records(art / "passes.jsonl")
    assert [r.status for r in recs] == [STATUS_OK, STATUS_OOM, STATUS_OK]
    report = load_report(art / "metrics.json", LLMProfileReport)
    assert len(report.skipped_images) == 1 and "OutOfMemoryError" in report.skipped_images[0].reason
    assert report.stage_ms[Stage.PREFILL].count == 2
    assert "synthetic:mixed_layout" in (art / "report.md").read_text()
    assert "out of GPU memory" in err
    # the allocator hint, once: on stderr and among the report's notes
    assert err.count("PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True") == 1
    assert sum("expandable_segments:True" in n for n in report.notes) == 1


def test_the_allocator_hint_is_left_out_when_expandable_segments_are_on() -> None:
    assert allocator_hint({}) is not None
    assert allocator_hint({"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512"}) is not None
    assert allocator_hint({"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512, expandable_segments:True"}) is None
    assert allocator_hint({"PYTORCH_ALLOC_CONF": "expandable_segments:True"}) is None  # torch's newer name


def test_ctrl_c_keeps_what_was_measured(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_run_pass(monkeypatch, 2, KeyboardInterrupt())
    argv = [*BASE, "--synthetic", "3", "--max-new-tokens", "2", "--warmup", "0", "--repeats", "1",
            "--output-dir", str(tmp_path), "--run-id", "stop"]
    rc, out, err = _run(capsys, argv)
    assert rc == 130 and out[-1] == str(tmp_path / "stop") and "interrupted" in err
    art = tmp_path / "stop" / "torch_profiler"
    assert len(read_records(art / "passes.jsonl")) == 1
    report = load_report(art / "metrics.json", LLMProfileReport)
    assert report.stage_ms[Stage.DECODE].count == 1
    assert len(report.skipped_images) == 2
    assert all("interrupted" in s.reason for s in report.skipped_images)
    assert any("interrupted" in n for n in report.notes)
    for name in REQUIRED_ARTIFACTS:
        assert (art / name).is_file(), name


def test_an_implausible_mfu_or_mbu_is_left_out_and_the_reports_are_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # analytic bytes 1e6 times too many: MBU far over the report's bound, which used to end the run in a traceback
    from llm_perf_opt.profiling import analytic_work
    from llm_perf_opt.profiling.mfu import StageWork

    real = analytic_work.make_work_fn

    def inflated(*args, **kw):  # type: ignore[no-untyped-def]
        work = real(*args, **kw)
        return lambda rec: {s: StageWork(flops=w.flops, bytes=w.bytes * 1e6) for s, w in work(rec).items()}

    monkeypatch.setattr(analytic_work, "make_work_fn", inflated)
    argv = [*BASE, "--synthetic", "1", "--max-new-tokens", "2", "--warmup", "0", "--repeats", "1",
            "--profile-images", "0", "--gpu", "h100-sxm", "--output-dir", str(tmp_path), "--run-id", "mbu"]
    rc, out, err = _run(capsys, argv)
    assert rc == 0 and out[-1] == str(tmp_path / "mbu")
    report = load_report(tmp_path / "mbu" / "torch_profiler" / "metrics.json", LLMProfileReport)
    assert report.stage_mbu == {} and set(report.stage_mfu) == set(STAGE_ORDER)  # MFU was plausible: kept
    dropped = [n for n in report.notes if "MBU of" in n and "left out" in n]
    assert any(n.startswith("MBU of decode ") for n in dropped) and "outside [0, 150%]" in dropped[0]
    assert "warning: MBU of decode" in err
