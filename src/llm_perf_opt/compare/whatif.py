"""What-if planning: recompute an exported AnalyticModelReport under changed parameters.

The report holds the full model config, the workload and the GPU it was
computed for. A scenario changes any of GPU (catalogue key), dtype,
resolution mode, page size, prompt text tokens, max_new_tokens, batch size,
calibration on/off and, for a timeline calibration, the host's speed (its
host-speed probe, us per tiny eager op; 0 = every stage replayed from CUDA
graphs) and the stages replayed from CUDA graphs (no host cost, the graph's
gap between kernels); the analytic model (formulas only: no model build,
no weights) is rerun for the changed workload and one row of metrics is
produced. A scenario that changes nothing reproduces the report's own
numbers exactly (the analyzer is deterministic and the export lossless).
Sweeps are the cartesian product of value lists; identical analytic inputs
are computed once.

Columns (units in the names) are documented in docs/what-if.md.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
from attrs import define, field

from llm_perf_opt.analytic.calibration import Calibration, EfficiencyModel, check_applies
from llm_perf_opt.data.analytic import AnalyticModelReport, OCRWorkloadProfile
from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.catalog import GpuCatalog, GpuSpec, load_catalog
from llm_perf_opt.models.deepseek_ocr.modes import get_mode
from llm_perf_opt.vocab import DType, Stage, parse_dtype

#: Seconds per day (pages/day = pages/s x this).
SECONDS_PER_DAY = 86_400
#: Schema version of what-if JSON files (2: the host_probe_us column after calibrated; 3: the graph_stages
#: column after it; 4: the no_repeat_ngram_size column after batch_size; 5: the ``complete`` key, False for the
#: rows done of an interrupted or failed sweep).
WHATIF_SCHEMA = "llm-perf-opt.what-if/6"

#: (base report, workload, gpu, efficiency or None) -> AnalyticModelReport of the workload on the gpu.
Analyzer = Callable[[AnalyticModelReport, OCRWorkloadProfile, GpuSpec, "EfficiencyModel | None"], AnalyticModelReport]


class WhatIfError(UserError):
    """A scenario that cannot be evaluated (unknown GPU, impossible size, calibration for another GPU)."""


@define(kw_only=True, frozen=True)
class Scenario:
    """Changes to apply to the report's workload; None = keep the report's value."""

    gpu: str | None = None
    dtype: str | None = None
    mode: str | None = None
    image_width_px: int | None = None
    image_height_px: int | None = None
    prompt_text_tokens: int | None = None
    max_new_tokens: int | None = None
    batch_size: int | None = None
    tiles: tuple[int, int] | None = None
    no_repeat_ngram_size: int | None = None
    calibrated: bool = False
    #: calibrated scenarios: the host's probe, us/op of the calibration's probe kind (None = the calibration's own)
    host_probe_us: float | None = None
    #: calibrated scenarios: stages replayed from CUDA graphs (None or () = none besides the calibration's own)
    graph_stages: tuple[str, ...] | None = None

    def changes(self) -> dict[str, Any]:
        """Only the fields that change something (for labels)."""
        names = ("gpu", "dtype", "mode", "image_width_px", "image_height_px", "tiles", "prompt_text_tokens",
                 "max_new_tokens", "batch_size", "no_repeat_ngram_size")
        out: dict[str, Any] = {k: getattr(self, k) for k in names if getattr(self, k) is not None}
        if self.calibrated:
            out["calibrated"] = True
        if self.host_probe_us is not None:
            out["host_probe_us"] = self.host_probe_us
        if self.graph_stages:
            out["graph_stages"] = list(self.graph_stages)
        return out


@define(kw_only=True)
class WhatIfRow:
    """One scenario's metrics (one CSV row). Times are per pass (the whole batch)."""

    scenario_id: int = field(metadata={"help": "0-based index in the sweep"})
    gpu_key: str = field(metadata={"help": "GPU catalogue key"})
    dtype: str = field(metadata={"help": "compute dtype"})
    mode: str = field(metadata={"help": "resolution mode"})
    image_width_px: int = field(metadata={"help": "page width, px"})
    image_height_px: int = field(metadata={"help": "page height, px"})
    tiles: int = field(metadata={"help": "Gundam local tiles (0 when not tiled)"})
    prefill_tokens: int = field(metadata={"help": "prompt length per page: image slots + text tokens"})
    prompt_text_tokens: int = field(metadata={"help": "prompt tokens besides the image slots"})
    max_new_tokens: int = field(metadata={"help": "decode steps per page"})
    batch_size: int = field(metadata={"help": "pages per pass"})
    no_repeat_ngram_size: int = field(metadata={"help": "greedy decoding's n-gram ban (0 = off)"})
    calibrated: bool = field(metadata={"help": "times use the calibration file (else pure roofline)"})
    host_probe_us: float | None = field(metadata={
        "help": "host-speed probe the calibrated times assume, us/op (0: every stage replayed from CUDA graphs); "
                "null when uncalibrated or the calibration has no probe"})
    graph_stages: str | None = field(metadata={
        "help": "stages the calibrated times replay from CUDA graphs (no host cost, the graph's gap between "
                "kernels), joined by '+'; empty when none; null when uncalibrated or the calibration is additive"})
    vision_sam_ms: float = field(metadata={"help": "predicted vision.sam time per pass, ms"})
    vision_clip_ms: float = field(metadata={"help": "predicted vision.clip time per pass, ms"})
    projector_ms: float = field(metadata={"help": "predicted projector time per pass, ms"})
    prefill_ms: float = field(metadata={"help": "predicted language-model prefill per pass, ms"})
    decode_ms: float = field(metadata={"help": "predicted decode, all steps, per pass, ms"})
    decode_per_token_ms: float = field(metadata={"help": "predicted decode step (whole batch), ms"})
    total_ms: float = field(metadata={"help": "predicted time of one pass (all stages), ms"})
    pages_per_s: float = field(metadata={"help": "batch_size / total seconds"})
    pages_per_day: float = field(metadata={"help": "pages_per_s x 86400"})
    output_tokens_per_s: float = field(metadata={"help": "batch_size x max_new_tokens / total seconds"})
    weights_bytes: float = field(metadata={"help": "parameter bytes at the dtype"})
    kv_cache_bytes: float = field(metadata={"help": "KV cache at the end of decode, bytes"})
    activation_peak_bytes: float = field(metadata={"help": "largest live activations of any stage, bytes"})
    memory_total_bytes: float = field(metadata={"help": "device peak: weights + the largest stage's activations "
                                                        "and the KV cache live in it, bytes"})
    memory_peak_stage: str = field(metadata={"help": "the stage whose activations and live KV cache set "
                                                     "memory_total_bytes (vision.sam, prefill, decode, ...)"})
    gpu_memory_bytes: float = field(metadata={"help": "GPU memory capacity, bytes"})
    fits: bool = field(metadata={"help": "memory_total_bytes <= gpu_memory_bytes"})
    max_batch_size: int | None = field(metadata={"help": "largest batch that fits (analyzer), null if unknown"})


#: CSV column order (= WhatIfRow fields).
COLUMNS: tuple[str, ...] = tuple(a.name for a in WhatIfRow.__attrs_attrs__)


def row_from_report(report: AnalyticModelReport, *, scenario_id: int = 0, calibrated: bool = False,
                    gpu_memory_bytes: float | None = None, host_probe_us: float | None = None,
                    graph_stages: str | None = None) -> WhatIfRow:
    """The metrics of one report (``calibrated``, ``host_probe_us`` and ``graph_stages`` only label the row:
    the report holds the times)."""
    wl = report.workload
    stage_ms = {s.value: (report.stage_totals[s].time_ms if s in report.stage_totals else 0.0) for s in Stage}
    total_ms = report.model_totals.time_ms
    per_tok = report.decode.per_token.time_ms
    cap = gpu_memory_bytes if gpu_memory_bytes is not None else report.peaks.memory_capacity_bytes
    mem = report.memory
    total_s = total_ms / 1e3
    pages_per_s = wl.batch_size / total_s if total_s > 0 else math.inf
    layout = wl.layout
    return WhatIfRow(
        scenario_id=scenario_id, gpu_key=report.gpu_key, dtype=str(wl.dtype), mode=wl.mode,
        image_width_px=wl.image_width_px, image_height_px=wl.image_height_px, tiles=layout.num_tiles,
        prefill_tokens=wl.prefill_tokens, prompt_text_tokens=wl.prompt_text_tokens,
        max_new_tokens=wl.max_new_tokens, batch_size=wl.batch_size,
        no_repeat_ngram_size=wl.no_repeat_ngram_size, calibrated=calibrated,
        host_probe_us=host_probe_us, graph_stages=graph_stages,
        vision_sam_ms=stage_ms[Stage.VISION_SAM.value], vision_clip_ms=stage_ms[Stage.VISION_CLIP.value],
        projector_ms=stage_ms[Stage.PROJECTOR.value], prefill_ms=stage_ms[Stage.PREFILL.value],
        decode_ms=stage_ms[Stage.DECODE.value], decode_per_token_ms=per_tok, total_ms=total_ms,
        pages_per_s=pages_per_s, pages_per_day=pages_per_s * SECONDS_PER_DAY,
        output_tokens_per_s=wl.batch_size * wl.max_new_tokens / total_s if total_s > 0 else math.inf,
        weights_bytes=mem.weights_bytes, kv_cache_bytes=mem.kv_cache_bytes,
        activation_peak_bytes=mem.activation_peak_bytes, memory_total_bytes=mem.total_bytes,
        memory_peak_stage=mem.peak_stage or "",
        gpu_memory_bytes=float(cap) if cap is not None else math.nan,
        fits=bool(cap is not None and mem.total_bytes <= cap), max_batch_size=mem.max_batch_size,
    )


def tiles_page_size(rows: int, cols: int, mode: str) -> tuple[int, int]:
    """A page size (width, height) px that ``mode`` tiles as rows x cols: (tile*cols, tile*rows).

    Exact for every grid of the tiling rule (its aspect ratio is matched exactly
    and no larger grid of that ratio wins the tie); 1 x 1 = one tile-sized page
    (no tiling). WhatIfError outside crop mode or the allowed tile counts.
    """
    m = get_mode(mode)
    if not m.crop_mode:
        raise WhatIfError(f"what-if: tiles apply to the crop (gundam) mode only, not {m.name!r}")
    from llm_perf_opt.models.deepseek_ocr.modes import MAX_TILES, MIN_TILES

    if (rows, cols) != (1, 1) and not MIN_TILES <= rows * cols <= MAX_TILES:
        raise WhatIfError(f"what-if: tiles {rows}x{cols}: the tile count must be 1 or {MIN_TILES}..{MAX_TILES}")
    if rows < 1 or cols < 1:
        raise WhatIfError(f"what-if: tiles {rows}x{cols} must be positive")
    return m.image_size * cols, m.image_size * rows


def scenario_workload(report: AnalyticModelReport, sc: Scenario) -> OCRWorkloadProfile:
    """The report's workload with the scenario's changes (tile grid re-derived)."""
    wl = report.workload
    mode = get_mode(sc.mode).name if sc.mode is not None else wl.mode
    width = sc.image_width_px if sc.image_width_px is not None else wl.image_width_px
    height = sc.image_height_px if sc.image_height_px is not None else wl.image_height_px
    if sc.tiles is not None:
        if sc.image_width_px is not None or sc.image_height_px is not None:
            raise WhatIfError("what-if: give tiles or an image size in a scenario, not both")
        width, height = tiles_page_size(sc.tiles[0], sc.tiles[1], mode)
    dtype: DType = wl.dtype
    if sc.dtype is not None:
        try:
            dtype = parse_dtype(sc.dtype)
        except ValueError as exc:
            raise WhatIfError(f"what-if: {exc}") from None
    if sc.no_repeat_ngram_size is not None and sc.no_repeat_ngram_size < 0:
        raise WhatIfError(f"what-if: no_repeat_ngram_size must be >= 0, got {sc.no_repeat_ngram_size}")
    for name in ("prompt_text_tokens", "max_new_tokens", "batch_size"):
        v = getattr(sc, name)
        if v is not None and v < 1:
            raise WhatIfError(f"what-if: {name} must be >= 1{' (BOS included)' if name == 'prompt_text_tokens' else ''}"
                              f", got {v}")
    return OCRWorkloadProfile.create(
        profile_id=wl.profile_id, mode=mode,
        image_width_px=width, image_height_px=height,
        prompt_text_tokens=sc.prompt_text_tokens if sc.prompt_text_tokens is not None else wl.prompt_text_tokens,
        max_new_tokens=sc.max_new_tokens if sc.max_new_tokens is not None else wl.max_new_tokens,
        batch_size=sc.batch_size if sc.batch_size is not None else wl.batch_size,
        dtype=dtype, attention=wl.attention, experts=wl.experts,
        no_repeat_ngram_size=(sc.no_repeat_ngram_size if sc.no_repeat_ngram_size is not None
                              else wl.no_repeat_ngram_size),
    )


def expand_sweep(
    *,
    gpus: Sequence[str | None] = (None,),
    dtypes: Sequence[str | None] = (None,),
    modes: Sequence[str | None] = (None,),
    image_sizes: Sequence[tuple[int, int] | None] = (None,),
    prompt_text_tokens: Sequence[int | None] = (None,),
    max_new_tokens: Sequence[int | None] = (None,),
    batch_sizes: Sequence[int | None] = (None,),
    tiles: Sequence[tuple[int, int] | None] = (None,),
    no_repeat_ngram_sizes: Sequence[int | None] = (None,),
    calibrated: Sequence[bool] = (False,),
    host_probes_us: Sequence[float | None] = (None,),
    graph_stages: Sequence[tuple[str, ...] | None] = (None,),
) -> list[Scenario]:
    """Cartesian product of the value lists, in the order the arguments are listed (tiles after sizes, n-gram
    sizes after batch sizes).

    Host probes and CUDA-graph stage sets apply to calibrated scenarios only: they are the innermost axes
    there (graph stages innermost), and an uncalibrated scenario appears once (both None).
    """
    if any(p is not None for p in host_probes_us or ()) and not any(calibrated or ()):
        raise WhatIfError("what-if: host probes apply to calibrated scenarios only (none in this sweep)")
    if any(g for g in graph_stages or ()) and not any(calibrated or ()):
        raise WhatIfError("what-if: CUDA-graph stages apply to calibrated scenarios only (none in this sweep)")
    out = []
    for g, d, m, size, tl, pt, mnt, bs, ng, cal in itertools.product(
            gpus or (None,), dtypes or (None,), modes or (None,), image_sizes or (None,), tiles or (None,),
            prompt_text_tokens or (None,), max_new_tokens or (None,), batch_sizes or (None,),
            no_repeat_ngram_sizes or (None,), calibrated or (False,)):
        for hp, gs in itertools.product((host_probes_us or (None,)) if cal else (None,),
                                        (graph_stages or (None,)) if cal else (None,)):
            out.append(Scenario(gpu=g, dtype=d, mode=m, image_width_px=size[0] if size else None,
                                image_height_px=size[1] if size else None, tiles=tl, prompt_text_tokens=pt,
                                max_new_tokens=mnt, batch_size=bs, no_repeat_ngram_size=ng, calibrated=cal,
                                host_probe_us=hp,
                                graph_stages=gs))
    return out


def workload_key(wl: OCRWorkloadProfile) -> tuple[Any, ...]:
    """Hashable identity of a workload (every field)."""
    return attrs.astuple(wl)


def default_analyzer() -> Analyzer:
    """The project's analytic model (llm_perf_opt.analytic), as an :data:`Analyzer`. It keeps the last
    AnalyticModel it built: :func:`run_what_if` runs the scenarios grouped by workload, so the scenarios of one
    workload on other GPUs, calibrations or hosts reuse its trees and the sums it holds (the rows are the same
    as with a model built per scenario; keeping more models made one-use sweeps slower, with no reuse)."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.compare.analyzer_bridge import analyze_like

    last: dict[tuple[Any, ...], AnalyticModel] = {}

    def analyze(base: AnalyticModelReport, wl: OCRWorkloadProfile, gpu: GpuSpec,
                eff: EfficiencyModel | None) -> AnalyticModelReport:
        key = workload_key(wl)
        model = last.get(key)
        if model is None or (model.config is not base.model.config and model.config != base.model.config):
            last.clear()
            model = last[key] = AnalyticModel(base.model.config, wl)
        return analyze_like(base, wl, gpu, efficiency=eff, model=model)

    return analyze


class _Sweep:
    """What one process needs to evaluate scenarios of a sweep (the parent's, or a worker's copy)."""

    def __init__(self, report: AnalyticModelReport, scenarios: Sequence[Scenario], calibration: Calibration | None,
                 catalog: GpuCatalog, analyzer: Analyzer | None) -> None:
        self.report = report
        self.scenarios = scenarios
        self.calibration = calibration
        self.catalog = catalog
        self.analyze = analyzer if analyzer is not None else default_analyzer()
        self.hosts = _host_calibrations(calibration, [(sc.host_probe_us, sc.graph_stages or ()) for sc in scenarios
                                                      if sc.calibrated
                                                      and (sc.host_probe_us is not None or sc.graph_stages)])
        self.cache: dict[tuple[Any, ...], AnalyticModelReport] = {}

    def plan(self, i: int) -> tuple[GpuSpec, OCRWorkloadProfile, Calibration | None, float | None, str | None,
                                    tuple[Any, ...]]:
        """(GPU, workload, efficiency, host probe, graph stages, analysis key) of scenario ``i``; WhatIfError
        for one that cannot be evaluated (checked for every scenario before any analysis)."""
        sc = self.scenarios[i]
        gpu = self.catalog.get(sc.gpu) if sc.gpu is not None else self.catalog.get(self.report.gpu_key)
        wl = scenario_workload(self.report, sc)
        eff: Calibration | None = None
        probe: float | None = None
        graphs: str | None = None
        if sc.calibrated:
            calibration = self.calibration
            if calibration is None:
                raise WhatIfError("what-if: a scenario asks for calibration but no --calibration file was given")
            check_applies(calibration, gpu.key, dtype=str(wl.dtype))
            eff = self.hosts.get((sc.host_probe_us, sc.graph_stages or ()), calibration)
            if sc.host_probe_us is not None:
                probe = sc.host_probe_us
            else:
                probe = calibration.host_probe_us if calibration.timeline and calibration.host_probe_us > 0 else None
            graphs = "+".join(eff.graph_stages) if eff.timeline else None
        elif sc.host_probe_us is not None:
            raise WhatIfError("what-if: a host probe applies to calibrated scenarios only")
        elif sc.graph_stages:
            raise WhatIfError("what-if: CUDA-graph stages apply to calibrated scenarios only")
        # [1:9] is the workload's part (run_what_if groups by it)
        key = (gpu.key, wl.mode, wl.image_width_px, wl.image_height_px, wl.prompt_text_tokens, wl.max_new_tokens,
               wl.batch_size, wl.no_repeat_ngram_size, str(wl.dtype), sc.calibrated, sc.host_probe_us,
               sc.graph_stages or ())
        return gpu, wl, eff, probe, graphs, key

    def row(self, i: int) -> WhatIfRow:
        """The row of scenario ``i`` (identical analyses computed once per process)."""
        gpu, wl, eff, probe, graphs, key = self.plan(i)
        if key not in self.cache:
            self.cache[key] = self.analyze(self.report, wl, gpu, eff)
        return row_from_report(self.cache[key], scenario_id=i, calibrated=self.scenarios[i].calibrated,
                               gpu_memory_bytes=float(gpu.memory_bytes), host_probe_us=probe, graph_stages=graphs)


#: the worker process's sweep (set by :func:`_worker_init`)
_WORKER: list[_Sweep] = []


def _worker_init(report: AnalyticModelReport, scenarios: Sequence[Scenario], calibration: Calibration | None,
                 catalog: GpuCatalog) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it writes the rows done and stops
    _WORKER[:] = [_Sweep(report, scenarios, calibration, catalog, None)]


def _worker_rows(indices: Sequence[int]) -> list[WhatIfRow]:
    return [_WORKER[0].row(i) for i in indices]


def run_what_if(
    report: AnalyticModelReport,
    scenarios: Iterable[Scenario],
    *,
    calibration: Calibration | None = None,
    catalog: GpuCatalog | None = None,
    analyzer: Analyzer | None = None,
    jobs: int = 1,
    on_row: Callable[[WhatIfRow], None] | None = None,
) -> list[WhatIfRow]:
    """One row per scenario, in scenario order. WhatIfError / UnknownGpuError (one line) on a bad scenario,
    raised before any analysis runs. ``jobs`` > 1 spreads the distinct analyses over that many processes
    (the default analyzer only; the processes are spawned, so a script that calls this with ``jobs`` > 1
    must guard its own top level with ``if __name__ == "__main__":``); ``on_row`` is told each row as it is
    done (in completion order), so a caller keeps the rows done when the sweep is interrupted or fails."""
    from llm_perf_opt.compare.analyzer_bridge import check_uncalibrated

    check_uncalibrated(report)
    if jobs < 1:
        raise WhatIfError(f"what-if: jobs must be >= 1, got {jobs}")
    if jobs > 1 and analyzer is not None:
        raise ValueError("run_what_if: jobs > 1 runs the default analyzer only")
    cat = catalog if catalog is not None else load_catalog()
    scenarios = list(scenarios)
    for name in sorted({sc.gpu for sc in scenarios if sc.gpu is not None}):
        cat.get(name)  # an unknown GPU anywhere in the sweep stops it before any work (one line)
    sweep = _Sweep(report, scenarios, calibration, cat, analyzer)
    keys = [sweep.plan(i)[-1] for i in range(len(scenarios))]  # every scenario checked before any analysis
    rows: list[WhatIfRow | None] = [None] * len(scenarios)

    def done(row: WhatIfRow) -> None:
        rows[row.scenario_id] = row
        if on_row is not None:
            on_row(row)

    # scenarios sharing one analysis, those groups in the order their workloads first appear: the analyses of
    # one workload (other GPUs, calibrations, hosts) run one after another on one AnalyticModel
    by_workload: dict[tuple[Any, ...], dict[tuple[Any, ...], list[int]]] = {}
    for i, key in enumerate(keys):
        by_workload.setdefault(key[1:9], {}).setdefault(key, []).append(i)
    groups = [g for same in by_workload.values() for g in same.values()]
    if jobs == 1 or len(groups) < 2:
        for group in groups:
            for i in group:
                done(sweep.row(i))
    else:
        _run_parallel(sweep, groups, jobs, done)
    return [r for r in rows if r is not None]


def _run_parallel(sweep: _Sweep, groups: Sequence[Sequence[int]], jobs: int,
                  done: Callable[[WhatIfRow], None]) -> None:
    """Evaluate ``groups`` (scenario indices sharing one analysis) in ``jobs`` spawned processes, a few
    groups per task so that the rows come back as they are done. When the sweep stops (a failing scenario,
    Ctrl-C) every task already finished still hands its rows to ``done`` before the error goes on."""
    import concurrent.futures
    import concurrent.futures.process
    import multiprocessing
    import signal
    import threading

    per_task = max(1, len(groups) // (jobs * 32))
    tasks = [[i for g in groups[k:k + per_task] for i in g] for k in range(0, len(groups), per_task)]
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init, initargs=(sweep.report, sweep.scenarios, sweep.calibration, sweep.catalog))
    futures: list[concurrent.futures.Future[list[WhatIfRow]]] = []
    delivered: set[concurrent.futures.Future[list[WhatIfRow]]] = set()
    # the workers start with SIGINT ignored (a spawned child keeps an ignored signal), so Ctrl-C reaches
    # this process alone, which keeps the rows done
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        try:
            futures.extend(pool.submit(_worker_rows, t) for t in tasks)
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        for fut in concurrent.futures.as_completed(futures):
            rows = fut.result()
            delivered.add(fut)
            for row in rows:
                done(row)
    except concurrent.futures.process.BrokenProcessPool as exc:
        raise WhatIfError(f"what-if: a worker process stopped ({exc}); rerun with fewer --jobs") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for fut in futures:
            if fut not in delivered and fut.done() and not fut.cancelled() and fut.exception() is None:
                for row in fut.result():
                    done(row)


def _host_calibrations(calibration: Calibration | None, hosts: Sequence[tuple[float | None, tuple[str, ...]]]
                       ) -> dict[tuple[float | None, tuple[str, ...]], Calibration]:
    """``calibration`` moved to each (host probe or None, CUDA-graph stages) pair (checked before any work:
    one line on a calibration that cannot move, a bad probe or an unknown stage)."""
    if not hosts:
        return {}
    if calibration is None:
        raise WhatIfError("what-if: a host probe or CUDA-graph stages need a timeline calibration "
                          "(--calibration FILE)")
    out = {}
    for probe, stages in hosts:
        try:
            moved = calibration if probe is None else calibration.for_host_probe(probe)
        except UserError as exc:
            raise WhatIfError(f"what-if: --host-probe-us {probe:g}: {exc}") from None
        try:
            out[(probe, stages)] = moved.with_graph_stages(stages) if stages else moved
        except UserError as exc:
            raise WhatIfError(f"what-if: --cuda-graphs {'+'.join(stages)}: {exc}") from None
    return out


def write_csv(rows: Sequence[WhatIfRow], path: str | Path) -> Path:
    """CSV with :data:`COLUMNS` (floats written with repr: lossless)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow(["" if getattr(r, c) is None else (repr(getattr(r, c)) if isinstance(getattr(r, c), float)
                                                          else getattr(r, c)) for c in COLUMNS])
    return out


def rows_as_dicts(rows: Sequence[WhatIfRow]) -> list[dict[str, Any]]:
    """Rows as plain dicts in column order (NaN/inf become null)."""
    out = []
    for r in rows:
        d: dict[str, Any] = {}
        for c in COLUMNS:
            v = getattr(r, c)
            d[c] = None if isinstance(v, float) and not math.isfinite(v) else v
        out.append(d)
    return out
