"""One Stage 1 profiling run, start to finish, keeping everything measured on disk.

Order of work (each step's output is on disk before the next starts):

1. check the device, the mode and every input (one-line UserError otherwise);
2. create the run folder ``<output_dir>/<run_id>/torch_profiler/`` and write
   ``inputs.yaml``, ``env.json`` and ``settings.json``;
3. build the model, run the warm-up passes (not measured);
4. timed passes over batches x repeats, each appended to ``passes.jsonl``
   as it completes (an out-of-memory error skips that batch and is recorded);
5. the torch.profiler pass over the chosen batches (trace + operator table);
6. aggregate, MFU/MBU, and write every artifact.

Ctrl-C during 3-5 jumps to 6 with what was measured, then re-raises.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import torch
from attrs import define, field

from llm_perf_opt.cli import progress_bar
from llm_perf_opt.data.common import AttentionKind, WeightsSource
from llm_perf_opt.data.io import dump_json, dump_yaml
from llm_perf_opt.data.profile import (
    MAX_UTILIZATION,
    LLMProfileReport,
    ModelUnderTest,
    RunMeta,
    SkippedImage,
)
from llm_perf_opt.errors import UserError
from llm_perf_opt.inputs import input_set
from llm_perf_opt.inputs.pages import Page
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.profiling.aggregate import Aggregates, aggregate
from llm_perf_opt.profiling.env import collect_env
from llm_perf_opt.profiling.mfu import Peaks, Utilization, WorkFn, compute_utilization, drop_implausible
from llm_perf_opt.profiling.operators import OperatorTable, build_operator_table
from llm_perf_opt.profiling.records import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_OOM,
    PassRecord,
    RecordWriter,
    read_records,
)
from llm_perf_opt.profiling.session import ModelSession, SessionSettings
from llm_perf_opt.profiling.timeline import StageTimeline, TraceError, load_trace, stage_timelines
from llm_perf_opt.profiling.timers import StageRecorder
from llm_perf_opt.profiling.torch_prof import run_profiler_pass

#: Artifact sub-folder of a run folder.
ARTIFACT_DIR = "torch_profiler"
#: File names inside the artifact folder.
PASSES_FILE = "passes.jsonl"
TRACE_FILE = "trace.json.gz"
EVENTS_FILE = "operator_events.json.gz"
#: Operator-table totals by stage and category (what `compare` reads).
OPERATOR_TABLE_FILE = "operator_table.json"
#: per-stage host/device timeline of the profiled pass (profiling/timeline.py), from TRACE_FILE
TIMELINE_FILE = "timeline.json"
METRICS_FILE = "metrics.json"
#: Copies of the run's --ceilings and --catalog files, so that the run folder holds the peaks it was measured
#: against (``llm-perf-opt rebuild`` reads them).
CEILINGS_COPY = "hw-ceilings.json"
CATALOG_COPY = "gpu-catalog.yaml"
#: The note of a run whose analytic model failed on its workload (its reports then have no MFU/MBU).
ANALYTIC_FAILED_NOTE = "MFU/MBU not computed: the analytic model failed"
#: The note of a run that Ctrl-C, SIGINT or SIGTERM cut short (its start, in every version's wording).
INTERRUPTED_NOTE_PREFIX = "run interrupted"
INTERRUPTED_NOTE = (f"{INTERRUPTED_NOTE_PREFIX} (Ctrl-C, SIGINT or SIGTERM): the reports cover the passes measured "
                    "before it")


@define(kw_only=True, frozen=True)
class ProfileOptions:
    """Everything a run needs besides the pages."""

    settings: SessionSettings = field(metadata={"help": "model and workload"})
    warmup: int = field(default=1, metadata={"help": "unmeasured passes (first batch) before measuring"})
    repeats: int = field(default=2, metadata={"help": "measured repeats per batch"})
    profile_images: int = field(default=2, metadata={"help": "batches in the torch.profiler pass (0 = none)"})
    profile_max_new_tokens: int | None = field(default=None, metadata={
        "help": "decode length in the profiler pass (None = the run's max_new_tokens)"})
    top_k: int = field(default=20, metadata={"help": "operators listed in operators.md"})
    output_dir: Path = field(metadata={"help": "parent folder of the run folder"})
    run_id: str | None = field(default=None, metadata={"help": "run folder name (default: time + mode)"})
    nvtx: bool = field(default=True, metadata={"help": "NVTX ranges on CUDA"})
    progress: bool | None = field(default=None, metadata={"help": "progress bar (None: only on a terminal)"})
    gpu_key: str | None = field(default=None, metadata={"help": "catalogue key for peaks (default: detected)"})
    catalog_file: Path | None = field(default=None, metadata={"help": "extra GPU catalogue YAML"})
    ceilings_file: Path | None = field(default=None, metadata={"help": "hw bench ceilings JSON"})
    input_origin: str = field(default="", metadata={"help": "where the pages came from (inputs.yaml origin)"})
    command: str = field(default="", metadata={"help": "the command line, for the report"})


@define(kw_only=True)
class RunOutcome:
    """What a run produced (for the reports and the caller)."""

    run_dir: Path = field(metadata={"help": "the run folder"})
    artifact_dir: Path = field(metadata={"help": "run folder / torch_profiler"})
    report: LLMProfileReport = field(metadata={"help": "metrics.json content"})
    aggregates: Aggregates = field(metadata={"help": "statistics of the passes"})
    table: OperatorTable | None = field(default=None, metadata={"help": "operator table (None: no profiler pass)"})
    timeline: list[StageTimeline] = field(factory=list, metadata={"help": "per-stage host/device timeline"})
    utilization: Utilization | None = field(default=None, metadata={"help": "MFU/MBU vs datasheet peaks"})
    utilization_measured: Utilization | None = field(default=None, metadata={
        "help": "MFU/MBU vs hw bench ceilings"})
    env: dict[str, Any] = field(factory=dict, metadata={"help": "env.json content"})
    options: ProfileOptions | None = field(default=None, metadata={"help": "the options"})
    pages: list[Page] = field(factory=list, metadata={"help": "the input pages"})
    notes: list[str] = field(factory=list, metadata={"help": "warnings and facts for the reports"})
    interrupted: bool = field(default=False, metadata={"help": "Ctrl-C ended the run early"})
    profiled_batches: list[int] = field(factory=list, metadata={"help": "batch indices the profiler covered"})
    analytic_note: str | None = field(default=None, metadata={"help": "how the analytic work was obtained"})
    parameter_count: int = field(default=0, metadata={"help": "model parameters"})


def make_run_id(started: datetime, mode: str) -> str:
    """Sortable run id: UTC time to the second plus the mode, e.g. 20261122T051500Z-base."""
    return f"{started.strftime('%Y%m%dT%H%M%SZ')}-{mode}"


def batches_of(pages: Sequence[Page], batch_size: int) -> list[list[Page]]:
    """Consecutive batches; the last may be smaller."""
    return [list(pages[i:i + batch_size]) for i in range(0, len(pages), batch_size)]


def spread_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (first and last included), sorted and unique."""
    if k <= 0 or n <= 0:
        return []
    if k >= n:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _oom_types() -> tuple[type[BaseException], ...]:
    return (torch.cuda.OutOfMemoryError,) if hasattr(torch.cuda, "OutOfMemoryError") else ()


#: the environment variables that configure PyTorch's CUDA caching allocator (the second is the newer name)
ALLOC_CONF_VARS = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")


def allocator_hint(environ: Mapping[str, str] | None = None) -> str | None:
    """What to try after a pass ran out of device memory, or None when PYTORCH_CUDA_ALLOC_CONF (or
    PYTORCH_ALLOC_CONF) already turns on expandable segments."""
    env = os.environ if environ is None else environ
    conf = ",".join(env.get(v, "") for v in ALLOC_CONF_VARS)
    if "expandable_segments:true" in conf.replace(" ", "").lower():
        return None
    return ("with PyTorch's default caching allocator the largest batch that ran on the H200 was 72-86% of the "
            "one the analytic footprint allows (fragmentation); PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "
            "ran 96-99% of it (docs/results-h200.md sections 20, 21 and 27)")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class ProfileRunner:
    """Runs the steps of the module docstring; :meth:`run` returns the outcome."""

    def __init__(self, options: ProfileOptions, pages: Sequence[Page], *, device: torch.device,
                 work_fn_factory: Callable[[DeepseekOCRConfig], tuple[WorkFn, str]] | None = None,
                 peaks_resolver: Callable[[Any], tuple[Peaks | None, Peaks | None, list[str]]] | None = None,
                 log: Callable[[str], None] | None = None,
                 input_skipped: Sequence[tuple[str, str]] = ()) -> None:
        self.options = options
        self.input_skipped = list(input_skipped)
        self.pages = list(pages)
        self.device = device
        self.work_fn_factory = work_fn_factory
        self.peaks_resolver = peaks_resolver
        self.log = log or (lambda _msg: None)
        self.started = datetime.now(UTC)
        self.run_id = options.run_id or make_run_id(self.started, options.settings.mode)
        self.run_dir = options.output_dir / self.run_id
        self.artifact_dir = self.run_dir / ARTIFACT_DIR
        self.notes: list[str] = []
        self.session: ModelSession | None = None
        #: the model's config and parameter count: the session's once built (a rebuild reads them from files)
        self.model_config: DeepseekOCRConfig | None = None
        self.parameter_count: int | None = None
        #: end time and torch version for the report: now and this process's torch (a rebuild keeps the run's)
        self.finished: datetime | None = None
        self.torch_version = str(torch.__version__)
        self.table: OperatorTable | None = None
        self.timeline: list[StageTimeline] = []
        self.profiled_batches: list[int] = []

    # -- steps ---------------------------------------------------------------------------------------
    def prepare(self) -> dict[str, Any]:
        """Run folder, inputs.yaml, env.json, settings.json."""
        if self.artifact_dir.exists() and any(self.artifact_dir.iterdir()):
            raise UserError(f"{self.run_dir}: run folder already exists (runs are never appended to); "
                            "choose another --run-id or --output-dir")
        try:
            self.artifact_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{self.artifact_dir}: cannot create the run folder ({exc.strerror or exc})") from exc
        dump_yaml(input_set(self.pages, self.options.input_origin or "inputs"), self.artifact_dir / "inputs.yaml")
        env, _gpu = collect_env(self.device)
        (self.artifact_dir / "env.json").write_text(json.dumps(env, indent=2, default=str) + "\n")
        s = self.options.settings
        settings = {
            "run_id": self.run_id, "command": self.options.command, "started_at": self.started.isoformat(),
            "session": attrs.asdict(s),
            "warmup": self.options.warmup, "repeats": self.options.repeats,
            "profile_images": self.options.profile_images,
            "profile_max_new_tokens": self.options.profile_max_new_tokens, "top_k": self.options.top_k,
        }
        (self.artifact_dir / "settings.json").write_text(json.dumps(settings, indent=2, default=str) + "\n")
        for source, name in ((self.options.ceilings_file, CEILINGS_COPY), (self.options.catalog_file, CATALOG_COPY)):
            if source is not None:
                shutil.copyfile(source, self.artifact_dir / name)
        return env

    def measure(self, writer: RecordWriter) -> None:
        """Model build, warm-up and timed passes (records appended as they complete)."""
        opts, s = self.options, self.options.settings
        self.log(f"building the model ({s.config_name if not s.model_dir else s.model_dir}, {s.dtype.value}, "
                 f"{self.device})")
        self.session = ModelSession(s, self.device)
        self.model_config, self.parameter_count = self.session.config, self.session.parameter_count
        batches = batches_of(self.pages, s.batch_size)
        for _ in range(opts.warmup):
            self.session.run_pass(batches[0], StageRecorder(self.device, nvtx=False, timing=False))
        total = len(batches) * opts.repeats
        bar = progress_bar(total, opts.progress, "passes", "pass")
        pass_index = 0
        try:
            for repeat in range(opts.repeats):
                for b, batch in enumerate(batches):
                    first = b * s.batch_size
                    indices = list(range(first, first + len(batch)))

                    def on_stage(stage: str, _b: int = b, _r: int = repeat) -> None:
                        bar.set_postfix_str(f"batch {_b + 1}/{len(batches)} repeat {_r + 1} {stage}")

                    try:
                        rec = self.session.run_pass(batch, StageRecorder(self.device, nvtx=opts.nvtx),
                                                    on_stage=on_stage)
                    except _oom_types() as exc:
                        rec = PassRecord(pass_index=0, batch_index=0, repeat_index=0, image_indices=[],
                                         image_names=[p.name for p in batch], status=STATUS_OOM,
                                         error=_one_line(exc))
                        self.log(f"warning: batch {b} repeat {repeat}: out of GPU memory; skipped")
                    except UserError as exc:
                        rec = PassRecord(pass_index=0, batch_index=0, repeat_index=0, image_indices=[],
                                         image_names=[p.name for p in batch], status=STATUS_ERROR,
                                         error=str(exc))
                        self.log(f"warning: batch {b} repeat {repeat}: {exc}; skipped")
                    if rec.status == STATUS_OOM:
                        # out of the except block the failed pass's tensors are unreferenced: free their cache
                        gc.collect()
                        torch.cuda.empty_cache()
                        hint = allocator_hint()
                        if hint is not None and not any(n.startswith("out of GPU memory:") for n in self.notes):
                            self.notes.append(f"out of GPU memory: {hint}")
                            self.log(f"note: {hint}")
                    rec.pass_index, rec.batch_index, rec.repeat_index = pass_index, b, repeat
                    rec.image_indices = indices
                    writer.append(rec)
                    pass_index += 1
                    bar.update(1)
        finally:
            bar.close()

    def profile(self) -> None:
        """The torch.profiler pass over ``profile_images`` batches spread over the set."""
        opts = self.options
        if opts.profile_images <= 0 or self.session is None:
            return
        batches = batches_of(self.pages, opts.settings.batch_size)
        chosen = spread_indices(len(batches), opts.profile_images)
        self.log(f"torch.profiler pass over batches {chosen} (+1 warm-up step)")
        try:
            capture = run_profiler_pass(self.session, [batches[i] for i in chosen],
                                        self.artifact_dir / TRACE_FILE, warmup_steps=1,
                                        max_new_tokens=opts.profile_max_new_tokens)
        except _oom_types() as exc:
            torch.cuda.empty_cache()
            self.notes.append(f"torch.profiler pass skipped: out of GPU memory ({_one_line(exc)})")
            return
        capture.save(self.artifact_dir / EVENTS_FILE)
        from llm_perf_opt.analytic.target_operators import categorize_op

        self.table = build_operator_table(capture, categorize_op)
        (self.artifact_dir / OPERATOR_TABLE_FILE).write_text(json.dumps(self.table.summary_dict(), indent=2) + "\n")
        self.profiled_batches = chosen
        if not opts.settings.device.startswith("cuda"):
            return  # a CPU trace has no device timeline
        try:
            self.timeline = stage_timelines(load_trace(self.artifact_dir / TRACE_FILE))
        except (TraceError, KeyError, TypeError, ValueError) as exc:
            # the timeline is an extra: a trace it cannot read must not cost the run its reports
            self.notes.append(f"stage timeline not computed: {exc}")
            return
        (self.artifact_dir / TIMELINE_FILE).write_text(
            json.dumps([row.to_dict() for row in self.timeline], indent=2) + "\n")

    # -- assembling ----------------------------------------------------------------------------------
    def build_outcome(self, env: dict[str, Any], interrupted: bool) -> RunOutcome:
        """Read the records back from disk and assemble every number of the reports."""
        opts, s = self.options, self.options.settings
        records = read_records(self.artifact_dir / PASSES_FILE)
        agg = aggregate(records)
        skipped: list[SkippedImage] = [SkippedImage(ref=ref, reason=reason) for ref, reason in self.input_skipped]
        for r in records:
            if r.status != STATUS_OK:
                for i in r.image_indices:
                    skipped.append(SkippedImage(ref=self._ref(i), reason=f"repeat {r.repeat_index}: {r.error}"))
        measured = {(r.batch_index, r.repeat_index) for r in records}
        n_batches = len(batches_of(self.pages, s.batch_size))
        missing = [(b, rep) for rep in range(opts.repeats) for b in range(n_batches) if (b, rep) not in measured]
        if missing:
            reason = "run interrupted before it was measured" if interrupted else "not measured"
            for b, rep in missing:
                for i in range(b * s.batch_size, min(len(self.pages), (b + 1) * s.batch_size)):
                    skipped.append(SkippedImage(ref=self._ref(i), reason=f"repeat {rep}: {reason}"))
        util = util_measured = None
        peaks = peaks_measured = None
        analytic_note = None
        if self.peaks_resolver is not None:
            try:
                peaks, peaks_measured, notes = self.peaks_resolver(env)
                self.notes.extend(notes)
            except UserError as exc:  # the measurements must still be reported
                self.notes.append(f"MFU/MBU not computed: {exc}")
        if (peaks or peaks_measured) and self.work_fn_factory is not None and self.model_config is not None \
                and agg.ok_records:
            # The timings are already on disk; a failure of the analytic model must not lose the reports,
            # so it is reported (note + stderr) instead of ending the run.
            try:
                work_fn, analytic_note = self.work_fn_factory(self.model_config)
                if peaks:
                    util = compute_utilization(agg.ok_records, work_fn, peaks)
                if peaks_measured:
                    util_measured = compute_utilization(agg.ok_records, work_fn, peaks_measured)
            except Exception as exc:
                util = util_measured = None
                msg = f"{ANALYTIC_FAILED_NOTE} ({_one_line(exc)})"
                self.notes.append(msg)
                self.log(f"warning: {msg}")
            for u in (util, util_measured):
                for msg in drop_implausible(u, MAX_UTILIZATION) if u is not None else []:
                    self.notes.append(msg)
                    self.log(f"warning: {msg}")
        finished = self.finished or datetime.now(UTC)
        gpu = env.get("gpu") or {}
        peak_mem = max((r.peak_memory_bytes or 0 for r in agg.ok_records), default=0) or None
        report = LLMProfileReport(
            meta=RunMeta(
                run_id=self.run_id, started_at=self.started, finished_at=finished,
                device_name=gpu.get("name") or f"cpu ({env.get('cpu', {}).get('machine', 'unknown')})",
                gpu_key=(peaks.gpu_key if peaks else gpu.get("catalog_key")),
                torch_version=self.torch_version,
                transformers_version=str(env.get("software", {}).get("transformers") or "unknown"),
                git_revision=env.get("project", {}).get("git_revision"),
                mode=s.mode, batch_size=s.batch_size, max_new_tokens=s.max_new_tokens,
                fixed_length=s.fixed_length, repeats=opts.repeats, warmup=opts.warmup,
            ),
            model=ModelUnderTest(
                name="deepseek-ocr", config_origin=(s.model_dir and str(Path(s.model_dir).resolve()))
                or s.config_name,
                weights=WeightsSource.CHECKPOINT if s.model_dir else WeightsSource.RANDOM,
                checkpoint_path=str(Path(s.model_dir).resolve()) if s.model_dir else None,
                dtype=s.dtype, device=str(self.device),
                attn_implementation=AttentionKind(s.attn_implementation),
                parameter_count=self.parameter_count or 1,
            ),
            inputs=input_set(self.pages, opts.input_origin or "inputs"),
            stage_timings=agg.timings, stage_ms=dict(agg.stage_ms),
            stage_tokens_per_s=dict(agg.stage_tokens_per_s), pages_per_s=agg.pages_per_s,
            preprocessing_ms=agg.preprocessing_ms,
            stage_mfu=dict(util.stage_mfu) if util else {},
            model_mfu=util.model_mfu if util else None,
            stage_mbu=dict(util.stage_mbu) if util else {},
            operators=list(self.table.rows) if self.table else [],
            skipped_images=skipped, peak_memory_bytes=peak_mem, notes=list(self.notes),
        )
        return RunOutcome(run_dir=self.run_dir, artifact_dir=self.artifact_dir, report=report, aggregates=agg,
                          table=self.table, timeline=self.timeline, utilization=util, utilization_measured=util_measured, env=env,
                          options=opts, pages=self.pages, notes=self.notes, interrupted=interrupted,
                          profiled_batches=self.profiled_batches, analytic_note=analytic_note,
                          parameter_count=self.parameter_count or 0)

    def _ref(self, index: int) -> str:
        return self.pages[index].to_input_image().ref

    def run(self, write_artifacts: Callable[[RunOutcome], object]) -> RunOutcome:
        """All steps; artifacts are written even when a step fails or Ctrl-C stops the run."""
        env = self.prepare()
        interrupted = False
        failure: BaseException | None = None
        t0 = time.perf_counter()
        try:
            with RecordWriter(self.artifact_dir / PASSES_FILE) as writer:
                self.measure(writer)
            self.profile()
        except KeyboardInterrupt:
            interrupted = True
            self.notes.append(INTERRUPTED_NOTE)
        except _oom_types() as exc:
            failure = exc
            self.notes.append(f"run stopped: out of GPU memory outside a timed pass ({_one_line(exc)})")
        except UserError as exc:
            failure = exc
            self.notes.append(f"run stopped: {exc}")
        self.notes.append(f"run wall time {time.perf_counter() - t0:.1f} s")
        outcome = self.build_outcome(env, interrupted)
        write_artifacts(outcome)
        if interrupted:
            raise KeyboardInterrupt
        if failure is not None:
            if isinstance(failure, UserError):
                raise UserError(f"{failure} (measurements so far are in {self.run_dir})") from failure
            raise UserError(f"out of GPU memory: {_one_line(failure)} (measurements so far are in "
                            f"{self.run_dir})") from failure
        return outcome


def write_metrics(outcome: RunOutcome) -> Path:
    """metrics.json and metrics.yaml (the LLMProfileReport) through the data IO module; returns the JSON path."""
    dump_yaml(outcome.report, outcome.artifact_dir / "metrics.yaml")
    return dump_json(outcome.report, outcome.artifact_dir / METRICS_FILE)


__all__ = [
    "ANALYTIC_FAILED_NOTE", "ARTIFACT_DIR", "INTERRUPTED_NOTE", "INTERRUPTED_NOTE_PREFIX", "CATALOG_COPY", "CEILINGS_COPY", "EVENTS_FILE", "METRICS_FILE", "OPERATOR_TABLE_FILE", "PASSES_FILE", "TIMELINE_FILE", "TRACE_FILE", "ProfileOptions", "ProfileRunner", "RunOutcome",
    "batches_of", "make_run_id", "spread_indices", "write_metrics",
]
