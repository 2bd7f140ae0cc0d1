"""Rebuild the reports of a Stage 1 run folder from its files, with no GPU and no model.

A run folder keeps what was measured: ``passes.jsonl`` (every timed pass),
``settings.json`` (model and workload), ``env.json``, ``inputs.yaml``,
``operator_table.json`` with the operator rows in ``metrics.json``, ``timeline.json``
and the notes in ``metrics.json``. From those, :func:`load_runner` sets up a
:class:`~llm_perf_opt.profiling.run.ProfileRunner` as the run left it, and its
``build_outcome`` assembles every number again with the current code: statistics,
the analytic work of each pass and so MFU/MBU. The measurements, the run's times,
torch version and notes are kept; the notes the report build itself writes (MFU/MBU
and plot notes) are made again, and one note says when and by which revision the
reports were rebuilt.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import torch

from llm_perf_opt.data.common import ImageSource
from llm_perf_opt.data.io import ReportLoadError, load_report
from llm_perf_opt.data.profile import InputImage, LLMProfileReport, OperatorSummary, StageTiming
from llm_perf_opt.errors import UserError
from llm_perf_opt.inputs.pages import Page
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.models.deepseek_ocr.modes import MODES
from llm_perf_opt.profiling.aggregate import aggregate
from llm_perf_opt.profiling.env import git_revision
from llm_perf_opt.profiling.operators import OperatorTable
from llm_perf_opt.profiling.records import PassRecord, read_json_objects
from llm_perf_opt.profiling.run import (
    ARTIFACT_DIR,
    INTERRUPTED_NOTE_PREFIX,
    METRICS_FILE,
    OPERATOR_TABLE_FILE,
    PASSES_FILE,
    TIMELINE_FILE,
    ProfileOptions,
    ProfileRunner,
    batches_of,
    spread_indices,
)
from llm_perf_opt.profiling.session import SessionSettings
from llm_perf_opt.profiling.timeline import StageTimeline
from llm_perf_opt.vocab import parse_dtype

#: Notes the report build writes (peaks, MFU/MBU bounds, plots) and a rebuild writes again; a run's other
#: notes (wall time, interruption, out of memory, skipped profiler pass) are kept as measured.
DERIVED_NOTE_PREFIXES: tuple[str, ...] = ("MFU/MBU ", "MFU of ", "MBU of ", "plots not drawn", "reports rebuilt ")


def artifact_dir_of(path: Path) -> Path:
    """The artifact folder of a run folder given as the run folder or as its ``torch_profiler`` folder."""
    path = path.resolve()
    if not path.exists():
        raise UserError(f"{path}: does not exist")
    folder = path if path.name == ARTIFACT_DIR else path / ARTIFACT_DIR
    if not folder.is_dir():
        raise UserError(f"{path}: not a run folder (no {ARTIFACT_DIR}/ inside)")
    for name in ("settings.json", "env.json", PASSES_FILE, METRICS_FILE):
        if not (folder / name).is_file():
            raise UserError(f"{folder}: {name} missing; the reports cannot be rebuilt without it")
    return folder


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read ({exc.__class__.__name__})") from None


def pass_records(path: Path) -> list[PassRecord]:
    """Every record of a run's passes.jsonl; a line that is not a pass record is refused (a torn last line is
    left out, as the run's own reports left it out)."""
    out: list[PassRecord] = []
    for n, raw in enumerate(read_json_objects(path), 1):
        try:
            out.append(PassRecord(**raw))
        except TypeError as exc:
            raise UserError(f"{path} record {n}: not a pass record of this version ({exc})") from None
    return out


def check_records_match(records: list[PassRecord], report: LLMProfileReport, source: Path) -> None:
    """The stage timings ``records`` give are the report's, each (batch, repeat, stage, ms to 0.001) as often: a
    passes.jsonl that lost, gained, repeated or changed passes would give other statistics than the run's
    (UserError in one line)."""

    def key(t: StageTiming) -> tuple[int, int, str, float]:
        return t.image_index, t.repeat_index, t.stage.value, round(t.elapsed_ms, 3)

    timed = Counter(key(t) for t in aggregate(records).timings)
    reported = Counter(key(t) for t in report.stage_timings)
    if timed != reported:
        extra, missing = sum((timed - reported).values()), sum((reported - timed).values())
        raise UserError(f"{source}: its passes give {sum(timed.values())} stage timings where metrics.json has "
                        f"{sum(reported.values())} ({extra} not in metrics.json, {missing} missing); the file does "
                        "not hold the run's passes")


def session_settings(raw: dict[str, Any], source: Path) -> SessionSettings:
    """The run's SessionSettings from settings.json's ``session`` (keys added since the run take their
    defaults, which are what the run used; keys no longer known are refused)."""
    known = {f.name for f in attrs.fields(SessionSettings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(f"{source}: session keys {unknown} unknown to this version")
    try:
        values = dict(raw)
        values["dtype"] = parse_dtype(str(values.get("dtype", "bf16")))
        settings = SessionSettings(**values)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source}: session settings not valid ({exc})") from None
    if not isinstance(settings.batch_size, int) or settings.batch_size < 1:
        raise UserError(f"{source}: session.batch_size {settings.batch_size!r} is not a whole number >= 1")
    if settings.mode not in MODES:
        raise UserError(f"{source}: session.mode {settings.mode!r} is not one of {', '.join(MODES)}")
    return settings


def _default(cls: type, name: str) -> Any:
    """The default of attrs field ``name`` of ``cls`` (what a run of a version without that setting used)."""
    return getattr(attrs.fields(cls), name).default


def _no_image() -> Any:
    raise UserError("a rebuilt run has no page images (the reports need only the pages' sizes)")


def pages_of(images: list[InputImage], names: dict[int, str]) -> list[Page]:
    """Pages with the run's names (from its pass records; the image's file or synthetic id otherwise) and
    sizes; their loader refuses, since a rebuild never reads pixels."""
    pages = []
    for i, img in enumerate(images):
        source = img.synthetic_id if img.source is ImageSource.SYNTHETIC else (img.path or "")
        default = Path(img.path).name if img.path else (img.synthetic_id or f"page-{i}")
        pages.append(Page(name=names.get(i, default), source=source or default, width=img.width_px,
                          height=img.height_px, category=img.category.value, kind=img.source, loader=_no_image,
                          path=img.path, page_index=img.page_index))
    return pages


def operator_table(folder: Path, rows: list[OperatorSummary]) -> OperatorTable | None:
    """The run's operator table: totals from operator_table.json, rows from metrics.json (None when the run
    had no profiler pass)."""
    path = folder / OPERATOR_TABLE_FILE
    if not path.is_file():
        if rows:
            raise UserError(f"{path}: missing while {METRICS_FILE} lists {len(rows)} operators; the table's "
                            "totals cannot be rebuilt without it")
        return None
    raw = _read_json(path)
    try:
        return OperatorTable(rows=list(rows), **raw)
    except TypeError as exc:
        raise UserError(f"{path}: not an operator table of this version ({exc})") from None


def timeline(folder: Path) -> list[StageTimeline]:
    """timeline.json's rows (none when the run wrote no timeline)."""
    path = folder / TIMELINE_FILE
    if not path.is_file():
        return []
    raw = _read_json(path)
    try:
        return [StageTimeline(**row) for row in raw]
    except TypeError as exc:
        raise UserError(f"{path}: not a stage timeline of this version ({exc})") from None


def peak_flags(command: str) -> argparse.Namespace:
    """``--gpu``, ``--catalog`` and ``--ceilings`` of the run's recorded command (None where not given)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--gpu", default=None)
    parser.add_argument("--catalog", type=Path, default=None)
    parser.add_argument("--ceilings", type=Path, default=None)
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = []
    known, _rest = parser.parse_known_args(tokens)
    return known


@attrs.define(kw_only=True)
class LoadedRun:
    """A run folder read back: a runner as the run left it, the report it wrote and its env.json."""

    runner: ProfileRunner = attrs.field(metadata={"help": "runner holding the run's options, pages and files"})
    report: LLMProfileReport = attrs.field(metadata={"help": "the run's metrics.json"})
    env: dict[str, Any] = attrs.field(metadata={"help": "the run's env.json"})

    @property
    def interrupted(self) -> bool:
        """Whether Ctrl-C or SIGTERM cut the run short (its note says so)."""
        return any(n.startswith(INTERRUPTED_NOTE_PREFIX) for n in self.report.notes)


def load_runner(run_dir: Path, *, log: Any = None) -> LoadedRun:
    """``run_dir``'s files read back into a ProfileRunner as the run left them.

    The runner's ``model_config``, ``work_fn_factory`` and ``peaks_resolver`` are left for the caller to set
    (they decide MFU/MBU).
    """
    folder = artifact_dir_of(Path(run_dir))
    try:
        old = load_report(folder / METRICS_FILE, LLMProfileReport)
    except ReportLoadError as exc:
        raise UserError(str(exc)) from None
    settings = _read_json(folder / "settings.json")
    if not isinstance(settings, dict) or not isinstance(settings.get("session"), dict):
        raise UserError(f"{folder / 'settings.json'}: no 'session' object")
    session = session_settings(settings["session"], folder / "settings.json")
    env = _read_json(folder / "env.json")
    if not isinstance(env, dict):
        raise UserError(f"{folder / 'env.json'}: not a JSON object")
    for key in ("gpu", "cpu", "software", "project"):  # the sections the reports read
        if env.get(key) is not None and not isinstance(env[key], dict):
            raise UserError(f"{folder / 'env.json'}: {key!r} is {type(env[key]).__name__}, not an object or null")
    records = pass_records(folder / PASSES_FILE)
    check_records_match(records, old, folder / PASSES_FILE)
    names = {i: name for r in records for i, name in zip(r.image_indices, r.image_names, strict=False)}
    try:
        options = ProfileOptions(
            settings=session, warmup=int(settings.get("warmup", old.meta.warmup)),
            repeats=int(settings.get("repeats", old.meta.repeats)),
            profile_images=int(settings.get("profile_images", _default(ProfileOptions, "profile_images"))),
            profile_max_new_tokens=settings.get("profile_max_new_tokens"),
            top_k=int(settings.get("top_k", _default(ProfileOptions, "top_k"))),
            output_dir=folder.parent.parent, run_id=old.meta.run_id, input_origin=old.inputs.origin,
            command=str(settings.get("command", "")), progress=False)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{folder / 'settings.json'}: not valid ({exc})") from None
    pages = pages_of(list(old.inputs.images), names)
    input_skipped = [(s.ref, s.reason) for s in old.skipped_images if not s.reason.startswith("repeat ")]
    try:
        device = torch.device(session.device)
    except RuntimeError:
        raise UserError(f"{folder / 'settings.json'}: device {session.device!r} is not a torch device") from None
    runner = ProfileRunner(options, pages, device=device, log=log, input_skipped=input_skipped)
    runner.run_dir, runner.artifact_dir = folder.parent, folder
    runner.started, runner.finished = old.meta.started_at, old.meta.finished_at
    runner.torch_version = old.meta.torch_version
    runner.parameter_count = old.model.parameter_count
    runner.table = operator_table(folder, list(old.operators))
    runner.timeline = timeline(folder)
    if runner.table is not None:
        runner.profiled_batches = spread_indices(len(batches_of(pages, session.batch_size)), options.profile_images)
    runner.notes = [n for n in old.notes if not n.startswith(DERIVED_NOTE_PREFIXES)]
    return LoadedRun(runner=runner, report=old, env=env)


def model_config(settings: SessionSettings, config_override: str | None = None) -> DeepseekOCRConfig:
    """The config the run's model was built from: ``config_override`` (a name or config.json path), else
    the checkpoint's config.json, else the run's ``--config``."""
    if config_override is not None:
        return DeepseekOCRConfig.named(config_override)
    if settings.model_dir is not None:
        path = Path(settings.model_dir) / "config.json"
        if not path.is_file():
            raise UserError(f"the run's checkpoint config {path} is not here; pass --config NAME_OR_PATH")
        return DeepseekOCRConfig.from_json_file(path)
    return DeepseekOCRConfig.named(settings.config_name)


def rebuild_note(overrides: Sequence[str] = (), when: datetime | None = None) -> str:
    """The note a rebuilt report carries: when, and at which revision of this project (``env.git_revision``;
    '+ local changes' when the package's own files differ from it, the reports being rewritten aside)."""
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    revision, dirty = git_revision(scope=Path(__file__).resolve().parents[1])
    rev = f"{revision or 'unknown'}{' + local changes' if dirty else ''}"
    given = f" with {' '.join(overrides)}" if overrides else ""
    return (f"reports rebuilt {stamp} by `llm-perf-opt rebuild`{given} (project revision {rev}) "
            "from the run's files: measurements and notes as the run wrote them, statistics and MFU/MBU by "
            "this revision")


__all__ = [
    "DERIVED_NOTE_PREFIXES", "LoadedRun", "artifact_dir_of", "load_runner", "model_config",
    "check_records_match", "operator_table", "pages_of", "pass_records", "peak_flags", "rebuild_note", "session_settings", "timeline",
]
