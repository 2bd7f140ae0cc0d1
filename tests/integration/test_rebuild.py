"""`llm-perf-opt rebuild`: a run folder's reports made again from its files (CPU, tiny config)."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from llm_perf_opt.cli import main as cli_main
from llm_perf_opt.data import LLMProfileReport, load_report
from llm_perf_opt.profiling.rebuild import peak_flags
from llm_perf_opt.profiling.run import CEILINGS_COPY
from llm_perf_opt.runners.llm_profile_runner import main as profile_main
from llm_perf_opt.runners.rebuild_cli import main
from llm_perf_opt.vocab import Stage

ROOT = Path(__file__).resolve().parents[2]
#: the H100's measured ceilings, as committed (tests read them, never retype them)
H100_CEILINGS = ROOT / "reports" / "hardware" / "hw-ceilings.json"
REPORT_FILES = ("report.md", "operators.md", "stakeholder_summary.md", "assumptions.md")


def _quiet(func, argv: list[str]) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = func(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def made_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CPU run at batch 2 with H100 peaks and the committed H100 ceilings (copied, so a test can take
    them away); tests copy the run folder before changing it."""
    tmp = tmp_path_factory.mktemp("rebuild")
    ceilings = tmp / "hw-ceilings.json"
    shutil.copy(H100_CEILINGS, ceilings)
    argv = ["--device", "cpu", "--config", "tiny", "--mode", "tiny", "--dtype", "fp32", "--no-progress",
            "--synthetic", "4", "--batch-size", "2", "--max-new-tokens", "3", "--warmup", "0", "--repeats", "1",
            "--profile-images", "1", "--profile-max-new-tokens", "2", "--gpu", "h100-sxm", "--ceilings",
            str(ceilings), "--output-dir", str(tmp / "out"), "--run-id", "cpu-rebuild"]
    rc, _out, err = _quiet(profile_main, argv)
    assert rc == 0, err
    return tmp / "out" / "cpu-rebuild"


@pytest.fixture()
def run_copy(made_run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / made_run.name
    shutil.copytree(made_run, dst)
    return dst


def _metrics(run: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((run / "torch_profiler" / "metrics.json").read_text())


def _without_rebuild_note(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "reports rebuilt" not in line)


def test_a_rebuild_reproduces_the_run_s_reports(made_run: Path, run_copy: Path) -> None:
    before = _metrics(run_copy)
    assert before["stage_mbu"] and before["model_mfu"] is not None  # the run has figures to rebuild
    rc, out, err = _quiet(main, [str(run_copy)])
    assert rc == 0, err
    assert out.strip() == "cpu-rebuild: rebuilt: MFU/MBU unchanged"
    after = _metrics(run_copy)
    notes = after.pop("notes")
    assert [n for n in notes if not n.startswith("reports rebuilt ")] == before.pop("notes")
    assert sum(n.startswith("reports rebuilt ") for n in notes) == 1
    assert after == before  # timings, statistics, meta (times, torch version, device), MFU/MBU
    art, orig = run_copy / "torch_profiler", made_run / "torch_profiler"
    for name in REPORT_FILES:
        assert _without_rebuild_note((art / name).read_text()) == _without_rebuild_note((orig / name).read_text()), name
    assert "reports rebuilt " in (art / "report.md").read_text()
    # a second rebuild replaces the note instead of adding another
    assert _quiet(main, [str(run_copy / "torch_profiler")])[0] == 0
    assert sum(n.startswith("reports rebuilt ") for n in _metrics(run_copy)["notes"]) == 1


def test_a_wrong_figure_is_named_and_replaced_and_dry_run_writes_nothing(run_copy: Path) -> None:
    path = run_copy / "torch_profiler" / "metrics.json"
    good = _metrics(run_copy)
    bad = json.loads(json.dumps(good))
    bad["stage_mbu"][Stage.DECODE.value] = 0.77
    bad["model_mfu"] = None
    path.write_text(json.dumps(bad))
    report_md = (run_copy / "torch_profiler" / "report.md").read_text()
    rc, out, err = _quiet(main, [str(run_copy), "--dry-run"])
    assert rc == 0, err
    decode = 100 * good["stage_mbu"][Stage.DECODE.value]
    model = 100 * good["model_mfu"]
    assert out.strip() == (f"cpu-rebuild: would be rebuilt: MBU decode 77.00% -> {decode:.2f}%; "
                           f"MFU model - -> {model:.2f}%")
    assert json.loads(path.read_text()) == bad  # nothing written
    assert (run_copy / "torch_profiler" / "report.md").read_text() == report_md
    assert _quiet(main, [str(run_copy)])[0] == 0
    fixed = load_report(path, LLMProfileReport)
    assert fixed.stage_mbu[Stage.DECODE] == pytest.approx(good["stage_mbu"][Stage.DECODE.value], rel=1e-12)
    assert fixed.model_mfu == pytest.approx(good["model_mfu"], rel=1e-12)


def test_a_rebuild_stopped_part_way_leaves_the_folder_as_it_was(run_copy: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C after metrics.json, the plots, report.md and operators.md were written: none of them changes (the
    reports are one write, data.io.all_or_nothing), and no temporary file is left."""
    import llm_perf_opt.reporting.profile_artifacts as artifacts

    folder = run_copy / "torch_profiler"
    path = folder / "metrics.json"
    bad = _metrics(run_copy)
    bad["stage_mbu"][Stage.DECODE.value] = 0.77
    path.write_text(json.dumps(bad))
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    def stop(outcome: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts, "render_summary", stop)
    rc, _out, err = _quiet(main, [str(run_copy)])
    assert rc == 130 and "interrupted" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    monkeypatch.undo()
    # a run stopped while writing its reports has metrics.json (written first) and not the rest: a rebuild
    # makes them
    for name in (*REPORT_FILES, "stage_breakdown.png", "per_image_timings.png", "metrics.yaml"):
        (folder / name).unlink()
    assert _quiet(main, [str(run_copy)])[0] == 0
    assert _metrics(run_copy)["stage_mbu"][Stage.DECODE.value] != 0.77
    assert all((folder / name).is_file() for name in (*REPORT_FILES, "stage_breakdown.png", "metrics.yaml"))


def test_plots_are_drawn_again_unless_no_plots(run_copy: Path) -> None:
    rc, out, err = _quiet(main, [str(run_copy), "--no-plots", "--dry-run"])
    assert rc == 2 and out == "" and err.strip() == ("llm-perf-opt rebuild: error: --no-plots with --dry-run does "
                                                     "nothing: a dry run writes no file")
    png = run_copy / "torch_profiler" / "stage_breakdown.png"
    png.write_bytes(b"not a png")
    assert _quiet(main, [str(run_copy), "--no-plots"])[0] == 0
    assert png.read_bytes() == b"not a png"
    assert _quiet(main, [str(run_copy)])[0] == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_run_s_ceilings_are_used_and_a_missing_file_is_one_line(made_run: Path, run_copy: Path,
                                                                     tmp_path: Path) -> None:
    settings = json.loads((run_copy / "torch_profiler" / "settings.json").read_text())
    own = peak_flags(settings["command"])
    assert own.gpu == "h100-sxm" and own.ceilings is not None and own.ceilings.name == "hw-ceilings.json"
    copy = run_copy / "torch_profiler" / CEILINGS_COPY
    assert copy.read_bytes() == H100_CEILINGS.read_bytes()  # the run keeps the ceilings it was measured against
    moved = tmp_path / "elsewhere.json"
    shutil.move(own.ceilings, moved)
    try:
        # the command's file gone: the run's copy serves
        rc, out, err = _quiet(main, [str(run_copy)])
        assert rc == 0 and out.strip() == "cpu-rebuild: rebuilt: MFU/MBU unchanged", err
        # the copy wins over the command's path: other ceilings there change nothing
        other = json.loads(H100_CEILINGS.read_text())
        other["memory_bandwidth_bytes_per_s"] *= 2
        own.ceilings.write_text(json.dumps(other))
        rc, out, err = _quiet(main, [str(run_copy), "--dry-run"])
        assert rc == 0 and out.strip() == "cpu-rebuild: would be rebuilt: MFU/MBU unchanged", err
        own.ceilings.unlink()
        copy.unlink()  # neither: one line naming the file
        rc, out, err = _quiet(main, [str(run_copy)])
        assert rc == 1 and out == ""
        assert err.count("\n") == 1 and "--ceilings" in err and "file not found" in err
        assert err.strip().endswith("file not found (--ceilings from the run; pass the flag to override)")
        rc, out, err = _quiet(main, [str(run_copy), "--ceilings", str(moved)])
        assert rc == 0, err
        assert out.strip() == "cpu-rebuild: rebuilt: MFU/MBU unchanged"
        assert "Measured ceilings (hw bench): GPU `h100-sxm`" in (run_copy / "torch_profiler" / "report.md").read_text()
    finally:
        shutil.move(moved, own.ceilings)
    # ceilings of another GPU than --gpu: refused in one line, naming the folder and where the ceilings came from
    rc, out, err = _quiet(main, [str(run_copy), "--gpu", "a100-sxm4-80gb", "--dry-run", "--ceilings",
                                 str(H100_CEILINGS)])
    assert rc == 1 and "not on --gpu 'a100-sxm4-80gb'" in err and "from the run" not in err
    rc, out, err = _quiet(main, [str(run_copy), "--gpu", "a100-sxm4-80gb", "--dry-run"])
    assert rc == 1 and err.count("\n") == 1 and str(run_copy.resolve()) in err
    assert err.strip().endswith("not on --gpu 'a100-sxm4-80gb' (--ceilings from the run; pass the flag to override)")


def test_an_error_names_the_folder_given_as_dot(run_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (run_copy / "torch_profiler" / CEILINGS_COPY).unlink()
    settings = run_copy / "torch_profiler" / "settings.json"
    raw = json.loads(settings.read_text())
    settings.write_text(json.dumps({**raw, "command": raw["command"].replace("--ceilings ", "--ceilings gone-")}))
    monkeypatch.chdir(run_copy / "torch_profiler")
    rc, out, err = _quiet(main, ["."])
    assert rc == 1 and out == ""
    assert err.startswith(f"llm-perf-opt rebuild: error: {(run_copy / 'torch_profiler').resolve()}: --ceilings gone-")


def test_bad_folders_are_one_line_each_and_the_others_are_still_rebuilt(run_copy: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    torn = tmp_path / "torn"
    shutil.copytree(run_copy, torn)
    (torn / "torch_profiler" / "passes.jsonl").unlink()
    broken = tmp_path / "broken"
    shutil.copytree(run_copy, broken)
    (broken / "torch_profiler" / "metrics.json").write_text("{not json")
    rc, out, err = _quiet(main, [str(empty), str(torn), str(broken), str(run_copy)])
    assert rc == 1
    assert out.strip() == "cpu-rebuild: rebuilt: MFU/MBU unchanged"
    lines = err.strip().splitlines()
    assert len(lines) == 3
    assert "empty: not a run folder (no torch_profiler/ inside)" in lines[0]
    assert _quiet(main, [str(tmp_path / "nowhere")])[2].strip().endswith("nowhere: does not exist")
    assert "passes.jsonl missing" in lines[1]
    assert "broken" in lines[2] and "metrics.json" in lines[2]


def test_the_subcommand_is_registered_and_explains_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["rebuild", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("RUN_DIR", "--gpu", "--catalog", "--ceilings", "--config", "--no-plots", "--dry-run", "--progress"):
        assert flag in text, flag


def test_config_decides_the_analytic_work(run_copy: Path) -> None:
    rc, out, err = _quiet(main, [str(run_copy), "--config", "tiny", "--dry-run"])
    assert rc == 0 and out.strip() == "cpu-rebuild: would be rebuilt: MFU/MBU unchanged", err
    # the published model's work over the tiny model's times: every figure moves
    rc, out, err = _quiet(main, [str(run_copy), "--config", "default", "--dry-run"])
    assert rc == 0, err
    assert "MFU vision.sam" in out and "MBU decode" in out
    rc, out, err = _quiet(main, [str(run_copy), "--config", "no-such-config", "--dry-run"])
    assert rc == 1 and "no-such-config" in err and err.count("\n") == 1


def test_passes_that_are_not_the_run_s_are_refused(run_copy: Path) -> None:
    passes = run_copy / "torch_profiler" / "passes.jsonl"
    lines = passes.read_text().splitlines(keepends=True)
    assert len(lines) == 2
    metrics = (run_copy / "torch_profiler" / "metrics.json").read_text()
    # a record torn by an interruption while it was written (no newline): the run's reports skipped it too
    passes.write_text("".join(lines) + lines[1][:40])
    rc, out, err = _quiet(main, [str(run_copy), "--dry-run"])
    assert rc == 0 and out.strip() == "cpu-rebuild: would be rebuilt: MFU/MBU unchanged", err
    # a damaged line inside the file, a record missing, an empty file: one line each, nothing written
    first = json.loads(lines[0])
    changed = json.dumps({**first, "stage_ms": {**first["stage_ms"], "decode": first["stage_ms"]["decode"] + 1}})
    stages = len([t for t in json.loads(metrics)["stage_timings"] if t["image_index"] == first["image_indices"][0]])
    for text, want in (("{not json\n" + lines[1], "passes.jsonl line 1: not valid JSON"),
                       (lines[0], f"give {stages} stage timings where metrics.json has {2 * stages} (0 not in "
                                  f"metrics.json, {stages} missing)"),
                       ("", f"give 0 stage timings where metrics.json has {2 * stages}"),
                       (lines[0] + lines[0] + lines[1], f"({stages} not in metrics.json, 0 missing)"),
                       (changed + "\n" + lines[1], "(1 not in metrics.json, 1 missing)"),
                       (lines[0].replace('"batch_index"', '"no_such_field"', 1) + lines[1],
                        "passes.jsonl record 1: not a pass record of this version")):
        passes.write_text(text)
        rc, out, err = _quiet(main, [str(run_copy)])
        assert rc == 1 and out == "" and err.count("\n") == 1 and want in err, (want, err)
        assert (run_copy / "torch_profiler" / "metrics.json").read_text() == metrics


def test_values_the_files_never_hold_are_one_line_and_the_next_folder_is_rebuilt(run_copy: Path,
                                                                                 tmp_path: Path) -> None:
    cases = {
        "env-gpu": ("env.json", lambda d: {**d, "gpu": "x"}, "env.json: 'gpu' is str, not an object or null"),
        "repeats": ("settings.json", lambda d: {**d, "repeats": "two"}, "settings.json: not valid (invalid literal"),
        "metrics": ("metrics.json", lambda d: {**d, "stage_timings": [{**t, "image_index": "x"}
                                                                      for t in d["stage_timings"]]},
                    "metrics.json"),
        "batch": ("settings.json", lambda d: {**d, "session": {**d["session"], "batch_size": 0}},
                  "session.batch_size 0 is not a whole number >= 1"),
        "mode": ("settings.json", lambda d: {**d, "session": {**d["session"], "mode": "nosuch"}},
                 "session.mode 'nosuch' is not one of"),
        "key": ("settings.json", lambda d: {**d, "session": {**d["session"], "colour": "red"}},
                "session keys ['colour'] unknown to this version"),
    }
    folders = []
    for name, (file, change, _want) in cases.items():
        folder = tmp_path / name
        shutil.copytree(run_copy, folder)
        path = folder / "torch_profiler" / file
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
        folders.append(str(folder))
    # a pass record whose stage times are not a mapping: caught where the statistics are made, named as such
    folder = tmp_path / "stage-ms"
    shutil.copytree(run_copy, folder)
    passes = folder / "torch_profiler" / "passes.jsonl"
    passes.write_text("".join(json.dumps({**json.loads(line), "stage_ms": "x"}) + "\n"
                              for line in passes.read_text().splitlines()))
    folders.append(str(folder))
    cases["stage-ms"] = ("", lambda d: d, "a file holds a value this version cannot read (AttributeError")
    # settings the analytic model refuses: the folder's one line (no warning besides), its reports left as they are
    folder = tmp_path / "ngram"
    shutil.copytree(run_copy, folder)
    path = folder / "torch_profiler" / "settings.json"
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "session": {**raw["session"], "no_repeat_ngram_size": -3}}))
    folders.append(str(folder))
    cases["ngram"] = ("", lambda d: d, "MFU/MBU not computed: the analytic model failed (")
    before = (folder / "torch_profiler" / "metrics.json").read_text()
    rc, out, err = _quiet(main, [*folders, str(run_copy)])
    assert rc == 1 and out.strip() == "cpu-rebuild: rebuilt: MFU/MBU unchanged"
    assert (folder / "torch_profiler" / "metrics.json").read_text() == before
    lines = err.strip().splitlines()
    assert len(lines) == len(cases)
    for line, (name, (_file, _change, want)) in zip(lines, cases.items(), strict=True):
        assert f"{name}" in line and want in line, (name, line)
