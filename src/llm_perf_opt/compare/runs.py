"""Measured side of a comparison: a Stage 1 run folder and the workload it ran.

A run folder (``tmp/profile-output/<run_id>/``) holds the LLMProfileReport
as ``torch_profiler/metrics.json`` (``report.json`` and a folder-less
``metrics.json`` are accepted too) and, beside it, optionally the runner's
``operator_table.json`` (per-stage, per-category self time of the profiled
passes); without it the profiler capture ``operator_events.json(.gz)`` is
rebuilt into that table with the runner's own code.

Stage conventions of the timers (profiling/timers.py): ranges nest, so the
measured ``prefill`` range encloses the vision stages that the model runs
inside its first forward; :func:`lm_prefill_ms` takes them out so that
``prefill`` compares with the analytic language-model prefill. ``decode`` is
the time of all decode steps of one pass.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from attrs import define, field

from llm_perf_opt.data.analytic import OCRWorkloadProfile
from llm_perf_opt.data.io import ReportLoadError, load_report
from llm_perf_opt.data.profile import LLMProfileReport
from llm_perf_opt.errors import UserError
from llm_perf_opt.models.deepseek_ocr.modes import token_layout
from llm_perf_opt.profiling.records import read_json_objects
from llm_perf_opt.vocab import (
    DEFAULT_NO_REPEAT_NGRAM,
    EXPERTS_IMPLEMENTATIONS,
    VISION_STAGES,
    ExpertsImplementation,
    Stage,
)

#: Where the LLMProfileReport of a run folder may be, in order of preference.
REPORT_CANDIDATES = ("torch_profiler/metrics.json", "torch_profiler/report.json", "metrics.json", "report.json")


class RunFolderError(UserError):
    """A run folder without a readable profiling report, or with data a comparison cannot use."""


@define(kw_only=True)
class OperatorTableView:
    """Per-stage, per-category device (or CPU) time of the profiled passes, ms per pass."""

    basis: str = field(metadata={"help": "'cuda' (self device time) or 'cpu'"})
    profiled_steps: int = field(metadata={"help": "passes the profiler captured (>= 1 used as divisor)"})
    stage_category_ms: dict[str, dict[str, float]] = field(
        metadata={"help": "stage -> category -> self time summed over the profiled passes, ms"})
    decode_new_tokens: int | None = field(
        default=None, metadata={"help": "new tokens per sequence in the profiled passes (None: the run's)"})
    stage_kernels: dict[str, int] = field(
        factory=dict, metadata={"help": "stage -> device kernels over the profiled passes (empty: not recorded)"})

    def kernels_per_pass(self) -> dict[str, float]:
        """stage -> device kernels per pass (empty for tables written before kernels were counted)."""
        n = max(1, self.profiled_steps)
        return {s: k / n for s, k in self.stage_kernels.items()}

    def per_pass(self) -> dict[str, dict[str, float]]:
        """stage -> category -> ms per pass."""
        n = max(1, self.profiled_steps)
        return {s: {c: v / n for c, v in cats.items()} for s, cats in self.stage_category_ms.items()}

    def category_per_pass(self) -> dict[str, float]:
        """category -> ms per pass over every stage (and outside stages)."""
        out: dict[str, float] = {}
        for cats in self.per_pass().values():
            for c, v in cats.items():
                out[c] = out.get(c, 0.0) + v
        return out


@define(kw_only=True)
class MeasuredRun:
    """One Stage 1 run folder, loaded."""

    run_dir: Path
    report_path: Path
    report: LLMProfileReport
    operator_table: OperatorTableView | None = None
    #: MoE experts implementation the run used (settings.json; transformers' default when absent)
    experts_implementation: ExpertsImplementation = "grouped_mm"
    #: greedy decoding's n-gram ban the run used (settings.json; the profiler's default, 20, when absent)
    no_repeat_ngram_size: int = DEFAULT_NO_REPEAT_NGRAM
    #: mean host-speed probe of the run's passes, us per tiny eager op (passes.jsonl, each pass's probe as
    #: :func:`run_pass_probe` takes it; None: not recorded)
    host_probe_us: float | None = None
    #: (probe us, decode ms) of each ok pass that has both (passes.jsonl; empty: not recorded)
    probe_decode: tuple[tuple[float, float], ...] = ()
    #: mean probe on the model's own code path, us per aten call of a tiny decoder forward (passes.jsonl
    #: host_module_probe_us; None: not recorded)
    host_module_probe_us: float | None = None
    #: (module probe us, decode ms) of each ok pass that has both (empty: not recorded)
    module_probe_decode: tuple[tuple[float, float], ...] = ()

    def probe_us(self, kind: str) -> float | None:
        """The run's mean host probe of ``kind`` ('add': host_probe_us, 'module': host_module_probe_us)."""
        if kind == "add":
            return self.host_probe_us
        if kind == "module":
            return self.host_module_probe_us
        raise ValueError(f"unknown host probe {kind!r}")

    @property
    def run_id(self) -> str:
        """The run's id (its folder name)."""
        return self.report.meta.run_id

    @property
    def gpu_key(self) -> str | None:
        """Catalogue key of the GPU the run used (None off a catalogued GPU)."""
        return self.report.meta.gpu_key

    def stage_mean_ms(self, stage: Stage | str) -> float | None:
        """Mean measured ms of a stage range per pass; None when not measured."""
        stats = self.report.stage_ms.get(Stage(stage))
        return stats.mean if stats is not None else None

    def stage_std_ms(self, stage: Stage | str) -> float | None:
        """Standard deviation of the stage's ms per pass; None when not measured."""
        stats = self.report.stage_ms.get(Stage(stage))
        return stats.std if stats is not None else None

    def stage_samples(self, stage: Stage | str) -> int:
        """Samples behind a stage's mean."""
        stats = self.report.stage_ms.get(Stage(stage))
        return stats.count if stats is not None else 0

    def lm_prefill_ms(self) -> float | None:
        """Measured prefill minus the vision stages it encloses (the language-model prefill), ms."""
        prefill = self.stage_mean_ms(Stage.PREFILL)
        if prefill is None:
            return None
        vision = sum(self.stage_mean_ms(s) or 0.0 for s in VISION_STAGES)
        return max(prefill - vision, 0.0)

    def decode_tokens_per_pass(self) -> float | None:
        """Mean new tokens per sequence in a pass (decode timing tokens / batch size), or None."""
        toks = [t.tokens / self.report.meta.batch_size for t in self.report.stage_timings if t.stage is Stage.DECODE]
        return sum(toks) / len(toks) if toks else None

    def decode_per_token_ms(self) -> float | None:
        """Mean measured ms of one decoder forward (whole batch).

        The runner's decode range generates N new tokens per sequence with N - 1
        decoder forwards (the first token comes from the prefill logits,
        profiling/session.py), so a pass's decode ms is divided by N - 1.
        """
        b = self.report.meta.batch_size
        vals = [t.elapsed_ms / (t.tokens / b - 1) for t in self.report.stage_timings
                if t.stage is Stage.DECODE and t.tokens / b > 1]
        return math.fsum(vals) / len(vals) if vals else None

    def measured_total_ms(self) -> float | None:
        """Measured time of one pass: prefill (vision included) + decode, ms."""
        prefill = self.stage_mean_ms(Stage.PREFILL)
        decode = self.stage_mean_ms(Stage.DECODE) or 0.0
        if prefill is None:
            return None
        return prefill + decode

    def machine(self) -> tuple[str | None, str | None]:
        """(GPU UUID, host CPU model) from the runner's env.json; None for what it does not record (runs
        before the CPU model was recorded, CPU runs, folders without env.json)."""
        raw = self._env_json()
        try:
            uuid = (raw.get("gpu") or {}).get("uuid")
            cpu = (raw.get("cpu") or {}).get("model")
        except AttributeError:
            return None, None
        return (str(uuid) if uuid else None), (str(cpu) if cpu else None)

    def _env_json(self) -> dict[str, Any]:
        """The runner's env.json next to the report ({} when absent or unreadable)."""
        env = self.report_path.parent / "env.json"
        try:
            raw = json.loads(env.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return raw if isinstance(raw, dict) else {}

    def software(self) -> dict[str, str]:
        """torch / transformers (and CUDA, from the runner's env.json when present) versions of the run."""
        out = {"torch": self.report.meta.torch_version, "transformers": self.report.meta.transformers_version}
        try:
            cuda = (self._env_json().get("software") or {}).get("torch_cuda")
        except AttributeError:
            cuda = None
        if cuda:
            out["cuda"] = str(cuda)
        return out


def _find_report(run_dir: Path) -> Path:
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        raise RunFolderError(f"run folder not found: {run_dir}")
    for rel in REPORT_CANDIDATES:
        p = run_dir / rel
        if p.is_file():
            return p
    raise RunFolderError(
        f"{run_dir}: no profiling report (looked for {', '.join(REPORT_CANDIDATES)})"
    )


#: Operator-table totals written by the Stage 1 runner (profiling/run.py), read first.
TABLE_FILE = "operator_table.json"
#: Raw profiler captures (profiling/operators.py ProfileCapture), rebuilt into a table when no table file exists.
CAPTURE_FILES = ("operator_events.json.gz", "operator_events.json")


def _table_from_dict(raw: Any, source: Path) -> OperatorTableView | None:
    if not (isinstance(raw, dict) and "stage_category_ms" in raw and "basis" in raw):
        return None
    try:
        return OperatorTableView(
            basis=str(raw["basis"]), profiled_steps=int(raw.get("profiled_steps", 0) or 0),
            stage_category_ms={str(st): {str(c): float(v) for c, v in cats.items()}
                               for st, cats in raw["stage_category_ms"].items()},
            stage_kernels={str(st): int(k) for st, k in (raw.get("stage_kernels") or {}).items()},
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise RunFolderError(f"{source}: malformed operator table ({exc})") from None


def _read_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _strict_json(p: Path) -> Any:
    """The JSON of a run-folder file that exists; RunFolderError in one line when it cannot be read."""
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{p}: cannot be read ({exc.__class__.__name__})") from None
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{p}: not valid JSON (line {exc.lineno} column {exc.colno}); truncated or "
                             "malformed") from None


def _find_operator_table(folder: Path, report_path: Path) -> OperatorTableView | None:
    table_path = folder / TABLE_FILE
    if table_path.is_file():
        view = _table_from_dict(_strict_json(table_path), table_path)
        if view is None:
            raise RunFolderError(f"{table_path}: not an operator table (no basis or stage_category_ms)")
        return view
    for name in CAPTURE_FILES:
        capture_path = folder / name
        if not capture_path.is_file():
            continue
        from llm_perf_opt.analytic.target_operators import categorize_op
        from llm_perf_opt.profiling.operators import ProfileCapture, build_operator_table

        try:
            capture = ProfileCapture.load(capture_path)
        except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise RunFolderError(f"{capture_path}: malformed profiler capture ({exc.__class__.__name__}: {exc})"
                                 ) from None
        table = build_operator_table(capture, categorize_op)
        return OperatorTableView(basis=table.basis, profiled_steps=table.profiled_steps,
                                 stage_category_ms=table.stage_category_ms, stage_kernels=table.stage_kernels)
    for p in sorted(folder.glob("*.json")):
        if p == report_path or p.stat().st_size > 50_000_000:
            continue
        view = _table_from_dict(_read_json(p), p)
        if view is not None:
            return view
    return None


def _settings(folder: Path) -> dict[str, Any]:
    """The runner's settings.json of a run folder ({} when absent: runs written before it);
    RunFolderError in one line when it is there but cannot be read or is not an object."""
    p = folder / "settings.json"
    if not p.is_file():
        return {}
    raw = _strict_json(p)
    if not isinstance(raw, dict):
        raise RunFolderError(f"{p}: not a JSON object")
    return raw


def _profile_new_tokens(folder: Path) -> int | None:
    """profile_max_new_tokens from the runner's settings.json (None when absent or unset)."""
    value = _settings(folder).get("profile_max_new_tokens")
    return int(value) if isinstance(value, int) else None


def _session_setting(folder: Path, key: str) -> Any:
    """session[key] of the runner's settings.json, or None (no file, unreadable, or no such key)."""
    session = _settings(folder).get("session")
    return session.get(key) if isinstance(session, dict) else None


def _experts_implementation(folder: Path) -> ExpertsImplementation:
    """session.experts_implementation from the runner's settings.json ('grouped_mm' when absent)."""
    value = _session_setting(folder, "experts_implementation")
    if value is None:
        return "grouped_mm"
    if value not in EXPERTS_IMPLEMENTATIONS:
        raise RunFolderError(f"{folder / 'settings.json'}: session.experts_implementation {value!r} is not one of "
                             f"{EXPERTS_IMPLEMENTATIONS}")
    return cast(ExpertsImplementation, value)


def _no_repeat_ngram_size(folder: Path) -> int:
    """session.no_repeat_ngram_size from the runner's settings.json (the default, 20, when absent)."""
    value = _session_setting(folder, "no_repeat_ngram_size")
    if value is None:
        return DEFAULT_NO_REPEAT_NGRAM
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RunFolderError(f"{folder / 'settings.json'}: session.no_repeat_ngram_size {value!r} is not an "
                             "integer >= 0")
    return value


#: passes.jsonl keys of each host probe, (taken before the pass, taken after it)
PROBE_KEYS: dict[str, tuple[str, str]] = {"add": ("host_probe_us", "host_probe_after_us"),
                                          "module": ("host_module_probe_us", "host_module_probe_after_us")}
#: which of a pass's probes stands for it: the one before it, the one after it, or their mean ("bracket")
PROBE_WHEN = ("before", "after", "bracket")


def pass_probe(record: dict[str, Any], kind: str = "add", when: str = "before") -> float | None:
    """A passes.jsonl record's host probe of ``kind`` ('add' or 'module'), us per op, taken ``when`` (one of
    PROBE_WHEN); None when that probe is missing, not a finite positive number, or (runs before the
    after-pass probe) not recorded after the pass."""
    if kind not in PROBE_KEYS or when not in PROBE_WHEN:
        raise ValueError(f"unknown host probe {kind!r} or time {when!r}")
    ok = [_positive(record.get(k)) for k in PROBE_KEYS[kind]]
    if when == "before":
        return ok[0]
    if when == "after":
        return ok[1]
    return None if ok[0] is None or ok[1] is None else (ok[0] + ok[1]) / 2


def _positive(value: Any) -> float | None:
    """``value`` as a float when it is a finite positive number (not a bool), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None


def run_pass_probe(record: dict[str, Any], kind: str = "add") -> float | None:
    """The host probe of ``kind`` that stands for a pass in compare and calibrate: the mean of the probes
    before and after it when the pass has both ("bracket"), else the one before it (runs before the
    after-pass probe). The bracket follows the pass's own stage times better than the probe before it
    (docs/results-h200.md section 19)."""
    bracket = pass_probe(record, kind, "bracket")
    return bracket if bracket is not None else pass_probe(record, kind, "before")


def probe_of(record: dict[str, Any], kind: str = "add", when: str = "run") -> float | None:
    """A pass's probe of ``kind`` taken ``when``: "run" (:func:`run_pass_probe`, what compare uses) or one of
    PROBE_WHEN (:func:`pass_probe`)."""
    return run_pass_probe(record, kind) if when == "run" else pass_probe(record, kind, when)


def probe_decode_pairs(records: Sequence[Any], kind: str = "add", when: str = "run"
                       ) -> tuple[float | None, tuple[tuple[float, float], ...]]:
    """(mean probe over the ok passes that have one, (probe us, decode ms) per ok pass having both) of
    passes.jsonl records. ``when``: "run" (:func:`run_pass_probe`, what compare uses) or one of PROBE_WHEN.
    Records that are not objects, or not ok, are skipped."""
    values: list[float] = []
    pairs: list[tuple[float, float]] = []
    for rec in records:
        if not isinstance(rec, dict) or rec.get("status", "ok") != "ok":
            continue
        v = probe_of(rec, kind, when)
        if v is None:
            continue
        values.append(v)
        stages = rec.get("stage_ms")
        dec = _positive(stages.get(Stage.DECODE.value)) if isinstance(stages, dict) else None
        if dec is not None:
            pairs.append((v, dec))
    return (sum(values) / len(values) if values else None), tuple(pairs)


def _host_probe(folder: Path, kind: str = "add") -> tuple[float | None, tuple[tuple[float, float], ...]]:
    """:func:`probe_decode_pairs` of ``folder``'s passes.jsonl, each pass's probe as compare takes it.

    A last line cut short (a run stopped while writing it: no newline at the end) is left out; any other
    line that is not a JSON object is a RunFolderError naming the file and line.
    """
    p = folder / "passes.jsonl"
    if not p.is_file():
        return None, ()
    records = read_json_objects(p, RunFolderError)
    return probe_decode_pairs(records, kind)


def load_run(run_dir: str | Path) -> MeasuredRun:
    """Load a run folder (or its report file); RunFolderError / ReportLoadError in one line."""
    path = Path(run_dir)
    report_path = _find_report(path)
    try:
        report = load_report(report_path, LLMProfileReport)
    except ReportLoadError:
        raise
    folder = report_path.parent
    table = _find_operator_table(folder, report_path)
    if table is not None:
        table.decode_new_tokens = _profile_new_tokens(folder)
    probe, pairs = _host_probe(folder)
    module_probe, module_pairs = _host_probe(folder, "module")
    root = path if path.is_dir() else folder
    if root.name == "torch_profiler":
        root = root.parent
    return MeasuredRun(run_dir=root, report_path=report_path, report=report, operator_table=table,
                       experts_implementation=_experts_implementation(folder),
                       no_repeat_ngram_size=_no_repeat_ngram_size(folder), host_probe_us=probe,
                       probe_decode=pairs, host_module_probe_us=module_probe,
                       module_probe_decode=module_pairs)


def prompt_tokens_per_page(run: MeasuredRun) -> int | None:
    """Prompt length per page (image slots + text + BOS) from the prefill timings, or None.

    A prefill timing's ``tokens`` counts the whole batch; divided by the batch size.
    """
    toks = [t.tokens for t in run.report.stage_timings if t.stage is Stage.PREFILL and t.tokens > 0]
    if not toks:
        return None
    per_page = Counter(round(t / run.report.meta.batch_size) for t in toks)
    return per_page.most_common(1)[0][0]


def run_workloads(run: MeasuredRun, *, prompt_text_tokens: int | None = None) -> list[tuple[OCRWorkloadProfile, int]]:
    """The distinct workloads of a run with how many of its images each covers.

    prompt_text_tokens: tokens besides the image slots (BOS included); derived
    from the prefill timings when None. RunFolderError when it cannot be.
    New tokens: max_new_tokens for fixed-length runs; otherwise the measured
    mean new tokens per sequence (rounded), so that decode totals compare.
    """
    meta = run.report.meta
    new_tokens = meta.max_new_tokens
    measured_new = run.decode_tokens_per_pass()
    if not meta.fixed_length and measured_new is not None and measured_new >= 1:
        new_tokens = max(1, round(measured_new))
    images = run.report.inputs.images
    groups: Counter[tuple[int, int]] = Counter((im.width_px, im.height_px) for im in images)
    text = prompt_text_tokens
    out: dict[tuple[int, int, int], tuple[OCRWorkloadProfile, int]] = {}
    for (w, h), count in sorted(groups.items()):
        layout = token_layout(meta.mode, w, h)
        if text is None:
            per_page = prompt_tokens_per_page(run)
            if per_page is None:
                raise RunFolderError(
                    f"{run.report_path}: no prefill token counts; pass --prompt-text-tokens"
                )
            t = per_page - layout.prompt_slots
            if t < 0:
                raise RunFolderError(
                    f"{run.report_path}: prefill has {per_page} tokens per page, fewer than the "
                    f"{layout.prompt_slots} image slots of mode {meta.mode} at {w}x{h}; pass --prompt-text-tokens"
                )
        else:
            t = text
        wl = OCRWorkloadProfile.create(
            profile_id=f"{run.run_id}-{layout.mode}-{layout.rows}x{layout.cols}",
            mode=meta.mode, image_width_px=w, image_height_px=h, prompt_text_tokens=t,
            max_new_tokens=new_tokens, batch_size=meta.batch_size, dtype=run.report.model.dtype,
            attention=run.report.model.attn_implementation, experts=run.experts_implementation,
            no_repeat_ngram_size=run.no_repeat_ngram_size,
        )
        key = (layout.rows, layout.cols, t)
        if key in out:
            out[key] = (out[key][0], out[key][1] + count)
        else:
            out[key] = (wl, count)
    return list(out.values())
