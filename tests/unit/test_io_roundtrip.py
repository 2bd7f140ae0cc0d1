"""Round trips of every report type through JSON and YAML, and loader errors on bad files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from samples_data import analytic_report, category_record, profile_report, target_operator_list

from llm_perf_opt.data import (
    AnalyticModelReport,
    DeepSeekOCRModelSpec,
    LLMProfileReport,
    LLMProfileReportSummary,
    OCRWorkloadProfile,
    OperatorCategoryRecord,
    ReportLoadError,
    TargetOperatorList,
    dump,
    dump_json,
    dump_yaml,
    load_report,
)
from llm_perf_opt.data import io as data_io
from llm_perf_opt.errors import UserError
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.vocab import Stage

SAMPLES: list[tuple[type, Any]] = [
    (LLMProfileReport, profile_report()),
    (LLMProfileReportSummary, profile_report().summary()),
    (AnalyticModelReport, analytic_report()),
    (TargetOperatorList, target_operator_list()),
    (OperatorCategoryRecord, category_record()),
    (OCRWorkloadProfile, analytic_report().workload),
    (DeepSeekOCRModelSpec, DeepSeekOCRModelSpec.from_config(DeepseekOCRConfig.tiny())),
]


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
@pytest.mark.parametrize(("cls", "obj"), SAMPLES, ids=[c.__name__ for c, _ in SAMPLES])
def test_round_trip(tmp_path: Path, cls: type, obj: Any, suffix: str) -> None:
    path = dump(obj, tmp_path / f"report{suffix}")
    loaded = load_report(path, cls)
    assert loaded == obj
    # Second generation is byte-identical: nothing is lost or reordered.
    again = dump(loaded, tmp_path / f"again{suffix}")
    assert again.read_text() == path.read_text()


def test_json_is_plain_and_uses_vocabulary_strings(tmp_path: Path) -> None:
    path = dump_json(profile_report(), tmp_path / "r.json")
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == "llm-perf-opt.profile-report/1"
    assert set(raw["stage_ms"]) == {"prefill", "decode"}
    assert raw["meta"]["started_at"] == "2026-11-22T05:00:00+00:00"
    assert raw["model"]["dtype"] == "bf16"
    assert raw["operators"][0]["category"] == "gemm"
    yaml_path = dump_yaml(analytic_report(), tmp_path / "a.yaml")
    ydata = yaml.safe_load(yaml_path.read_text())
    assert ydata["stage_totals"]["vision.sam"]["time_ms"] == pytest.approx(1.5)
    assert ydata["model"]["config"]["sam"]["global_attn_indexes"] == [2, 5, 8, 11]


def test_model_spec_restores_the_config() -> None:
    spec = analytic_report().model
    raw = spec.config_dict()
    assert raw == DeepseekOCRConfig.default().to_dict()
    restored = DeepSeekOCRModelSpec.from_config_dict(raw)
    assert restored.to_config() == DeepseekOCRConfig.default()
    assert isinstance(restored.to_config().sam.global_attn_indexes, tuple)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _report_dict() -> dict[str, Any]:
    return data_io.to_dict(profile_report())


def test_truncated_json_names_the_file(tmp_path: Path) -> None:
    good = dump_json(profile_report(), tmp_path / "r.json").read_text()
    path = _write(tmp_path / "cut.json", good[: len(good) // 2])
    with pytest.raises(ReportLoadError) as info:
        load_report(path, LLMProfileReport)
    msg = str(info.value)
    assert str(path) in msg and "not valid JSON" in msg and "\n" not in msg


def test_truncated_yaml_names_the_file(tmp_path: Path) -> None:
    good = dump_yaml(analytic_report(), tmp_path / "a.yaml").read_text()
    # Cut inside the quoted timestamp so the YAML parser itself fails.
    path = _write(tmp_path / "cut.yaml", good[: good.index("generated_at: '") + 20])
    with pytest.raises(ReportLoadError, match=r"cut\.yaml: not valid YAML"):
        load_report(path, AnalyticModelReport)


def test_truncated_yaml_that_parses_reports_the_missing_field(tmp_path: Path) -> None:
    good = dump_yaml(analytic_report(), tmp_path / "a.yaml").read_text()
    cut = good[: good.index("\nmemory:")] + "\n"
    path = _write(tmp_path / "cut.yaml", cut)
    with pytest.raises(ReportLoadError) as info:
        load_report(path, AnalyticModelReport)
    msg = str(info.value)
    assert msg.startswith(f"{path}: field memory: required field missing"), msg


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.__setitem__("schema_version", "llm-perf-opt.profile-report/0"),
         "field schema_version: 'llm-perf-opt.profile-report/0' is not 'llm-perf-opt.profile-report/1'"),
        (lambda d: d.pop("schema_version"), "field schema_version: missing"),
        (lambda d: d["stage_timings"][3].__setitem__("elapsed_ms", -2.0),
         "field stage_timings[3].elapsed_ms: -2.0 must be > 0"),
        (lambda d: d["stage_timings"][0].__setitem__("tokens", -1), "field stage_timings[0].tokens: -1 must be >= 0"),
        (lambda d: d["stage_timings"][1].__setitem__("tokens_per_s", -5.0),
         "field stage_timings[1].tokens_per_s: -5.0 must be >= 0"),
        (lambda d: d["stage_timings"][0].__setitem__("stage", "vision"), "field stage_timings[0].stage: not one of"),
        (lambda d: d["stage_mfu"].__setitem__("prefill", 1.7), "field stage_mfu['prefill']: 1.7 outside [0.0, 1.5]"),
        (lambda d: d.__setitem__("model_mfu", -0.1), "field model_mfu: -0.1 outside [0.0, 1.5]"),
        (lambda d: d["model"].__setitem__("dtype", "int3"), "field model.dtype: not one of bf16"),
        (lambda d: d["inputs"].__setitem__("images", []), "field inputs.images: must not be empty"),
        (lambda d: d["inputs"]["images"][0].__setitem__("path", "pages/a.png"),
         "field inputs.images[0].path: 'pages/a.png' is not an absolute path"),
        (lambda d: d["meta"].__setitem__("batch_size", "two"), "field meta.batch_size: expected int"),
        (lambda d: d["meta"].__setitem__("started_at", "yesterday"), "field meta.started_at: expected datetime"),
        (lambda d: d["meta"].pop("run_id"), "field meta.run_id: required field missing"),
        (lambda d: d["meta"].__setitem__("colour", "red"), "field meta: unknown field(s) colour"),
        (lambda d: d["stage_ms"].__setitem__("prefill", {**d["stage_ms"]["prefill"], "p90": 1e9}),
         "field stage_ms['prefill'].max"),
    ],
)
def test_bad_field_gives_one_line_with_file_and_field(tmp_path: Path, mutate: Any, expected: str) -> None:
    data = _report_dict()
    mutate(data)
    for suffix, text in ((".json", json.dumps(data)), (".yaml", yaml.safe_dump(data))):
        path = _write(tmp_path / f"bad{suffix}", text)
        with pytest.raises(ReportLoadError) as info:
            load_report(path, LLMProfileReport)
        msg = str(info.value)
        assert msg.startswith(f"{path}: "), msg
        assert expected in msg, msg
        assert "\n" not in msg


def test_wrong_report_type_is_a_version_error(tmp_path: Path) -> None:
    path = dump_json(analytic_report(), tmp_path / "a.json")
    with pytest.raises(ReportLoadError, match="field schema_version: 'llm-perf-opt.analytic-report/1' is not"):
        load_report(path, LLMProfileReport)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.json", None, "file not found"),
        ("empty.json", "", "empty file"),
        ("list.json", "[1, 2]", "expected a mapping at the top level, got list"),
        ("scalar.yaml", "42\n", "expected a mapping at the top level, got int"),
        ("report.txt", "{}", "unknown report suffix '.txt'"),
    ],
)
def test_unusable_files(tmp_path: Path, name: str, content: str | None, expected: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ReportLoadError, match=expected):
        load_report(path, LLMProfileReport)


def test_directory_is_not_a_report(tmp_path: Path) -> None:
    with pytest.raises(ReportLoadError, match="is a directory"):
        load_report(tmp_path, LLMProfileReport)


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = dump_json(profile_report(), tmp_path / "r.json")
    before = path.read_text()

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    changed = profile_report()
    changed.model_mfu = 0.5
    with pytest.raises(OSError, match="disk full"):
        dump_json(changed, path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_dump_creates_parent_folders_and_rejects_unknown_suffix(tmp_path: Path) -> None:
    path = dump(profile_report(), tmp_path / "a" / "b" / "r.yaml")
    assert load_report(path, LLMProfileReport).stage_ms[Stage.PREFILL].count == 6
    with pytest.raises(UserError, match="unknown report suffix"):
        dump(profile_report(), tmp_path / "r.csv")


def test_impossible_page_size_in_a_workload_file(tmp_path: Path) -> None:
    data = data_io.to_dict(analytic_report().workload)
    data["image_width_px"] = 40000
    path = _write(tmp_path / "w.yaml", yaml.safe_dump(data))
    with pytest.raises(ReportLoadError, match=r"w\.yaml: field image_width_px: impossible image size 40000x2200"):
        load_report(path, OCRWorkloadProfile)
    nested = data_io.to_dict(analytic_report())
    nested["workload"]["image_width_px"] = 40000
    path = _write(tmp_path / "a.json", json.dumps(nested))
    with pytest.raises(ReportLoadError, match=r"a\.json: field workload.image_width_px: impossible image size"):
        load_report(path, AnalyticModelReport)


def test_a_markdown_report_is_written_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llm_perf_opt.reporting.profile_report import write_text

    path = write_text(tmp_path / "report.md", "old\n")

    def stop(fd: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the new text is being written

    monkeypatch.setattr(os, "fsync", stop)
    with pytest.raises(KeyboardInterrupt):
        write_text(path, "new " * 10_000)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_files_written_together_change_all_or_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """data_io.all_or_nothing: a block stopped part way leaves every file as it was and no temporary file; a
    block that ends renames them all, and a Ctrl-C during the renames waits for the last one."""
    import signal

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    data_io.atomic_write_text(a, "old a\n")
    data_io.atomic_write_text(b, "old b\n")
    with pytest.raises(KeyboardInterrupt), data_io.all_or_nothing():
        data_io.atomic_write_text(a, "new a\n")
        assert a.read_text() == "old a\n"  # not renamed before the block ends
        raise KeyboardInterrupt  # Ctrl-C between the two writes
    assert (a.read_text(), b.read_text()) == ("old a\n", "old b\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]

    replace = os.replace
    renamed: list[str] = []

    def replace_and_interrupt(src: str, dst: Path) -> None:
        replace(src, dst)
        renamed.append(Path(dst).name)
        if len(renamed) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after the first rename

    monkeypatch.setattr(os, "replace", replace_and_interrupt)
    with pytest.raises(KeyboardInterrupt), data_io.all_or_nothing():
        data_io.atomic_write_text(a, "new a\n")
        with data_io.all_or_nothing():  # an inner block joins the outer one
            data_io.atomic_write_bytes(b, b"new b\n")
    assert renamed == ["a.txt", "b.txt"]
    assert (a.read_text(), b.read_text()) == ("new a\n", "new b\n")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # a target that cannot be replaced (a folder): the error, and no temporary file left behind
    monkeypatch.setattr(os, "replace", replace)
    (tmp_path / "c.txt").mkdir()
    with pytest.raises(OSError), data_io.all_or_nothing():
        data_io.atomic_write_text(tmp_path / "c.txt", "c\n")
        data_io.atomic_write_text(b, "newer b\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "c.txt"]


def test_a_block_holds_back_its_own_threads_writes_only(tmp_path: Path) -> None:
    """A file another thread writes while this thread is inside all_or_nothing is written at once, and is not
    renamed (or removed) by this thread's block."""
    import threading

    mine, theirs = tmp_path / "mine.txt", tmp_path / "theirs.txt"
    with pytest.raises(KeyboardInterrupt), data_io.all_or_nothing():
        data_io.atomic_write_text(mine, "mine\n")
        worker = threading.Thread(target=data_io.atomic_write_text, args=(theirs, "theirs\n"))
        worker.start()
        worker.join()
        assert theirs.read_text() == "theirs\n" and not mine.exists()
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.txt"]
