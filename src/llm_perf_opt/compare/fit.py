"""Fitting roofline efficiencies to measured times (the engine behind `llm-perf-opt calibrate`).

The analytic model is reduced to *work cells*: the FLOPs, bytes and kernel
launches of one operator category inside one stage of one run, with the
GPU rates they run against. A measured time is an *observation*: the sum of
the predicted times of the cells it covers (a stage, a category, or both).

Per cell the calibrated roofline is (calibration.roofline_time_s)::

    t = max(x_c * compute_s, y_c * memory_s) + kernels * L

with x_c = 1 / compute efficiency, y_c = 1 / bandwidth efficiency of the
cell's category c and L the launch cost (s/kernel) for wall-clock
observations (stage timers: kernels plus the host gaps between them); for
device-time observations (operator table: kernels only) the per-kernel term
is a separate floor F (s/kernel: the shortest a kernel takes on the device). For a fixed assignment of
each cell to its bound (compute or memory) the model is linear in
(x, y, L), so the fit alternates: assign bounds under the current parameters,
solve a non-negative least-squares problem on relative errors (rows divided
by the measured time), repeat until the assignment no longer changes.
Weak prior rows (weight ``prior_weight``) hold parameters that no
observation constrains at their prior value; they are reported as
unidentified.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np
from attrs import define, field

from llm_perf_opt.analytic.calibration import (
    PURE_ROOFLINE,
    EfficiencyModel,
    bound_time_s,
    efficiency_for_stage,
)
from llm_perf_opt.compare.nnls import nnls
from llm_perf_opt.errors import UserError


class FitError(UserError):
    """The data cannot support a fit (no observations, no work, non-positive times)."""


@define(kw_only=True, frozen=True)
class WorkCell:
    """Analytic work of one operator category within one stage of one run."""

    run_id: str = field(metadata={"help": "run the cell belongs to"})
    stage: str = field(metadata={"help": "Stage string"})
    category: str = field(metadata={"help": "OperatorCategory string"})
    compute_s: float = field(metadata={"help": "FLOPs / peak FLOP rate: compute time at 100% efficiency, s"})
    memory_s: float = field(metadata={"help": "bytes / bandwidth: memory time at 100% efficiency, s"})
    kernels: float = field(default=0.0, metadata={"help": "kernel launches"})
    flops: float = field(default=0.0, metadata={"help": "FLOPs (tensor + CUDA core), for reports only"})
    io_bytes: float = field(default=0.0, metadata={"help": "bytes moved, for reports only"})

    def time_s(self, eff: EfficiencyModel, include_launch: bool = True) -> float:
        """Predicted seconds under ``eff``: wall clock (launch cost per kernel) when ``include_launch``,
        else device time (``eff.kernel_floor_s`` per kernel when the model has one, else none)."""
        eff = efficiency_for_stage(eff, self.stage)
        if include_launch:
            return bound_time_s(compute_s=self.compute_s, memory_s=self.memory_s, category=self.category,
                                kernels=self.kernels, efficiency=eff)
        t = bound_time_s(compute_s=self.compute_s, memory_s=self.memory_s, category=self.category,
                         kernels=0.0, efficiency=eff)
        return t + self.kernels * float(getattr(eff, "kernel_floor_s", 0.0))


@define(kw_only=True, frozen=True)
class Observation:
    """One measured time: the cells of ``run_id`` matching ``stage`` and ``categories`` (None = any).

    ``categories`` is a set because a profiler category can hold several
    analytic ones (e.g. measured gemm = analytic gemm + lm_head, see compare/analytic.py).
    """

    run_id: str
    measured_s: float = field(metadata={"help": "measured seconds (> 0)"})
    stage: str | None = None
    categories: frozenset[str] | None = field(
        default=None, converter=lambda v: None if v is None else frozenset([v] if isinstance(v, str) else v))
    include_launch: bool = field(
        default=True, metadata={"help": "True for wall-clock stage times; False for operator device times"}
    )
    weight: float = 1.0

    def covers(self, cell: WorkCell) -> bool:
        """True when ``cell`` contributes to this observation."""
        return (cell.run_id == self.run_id and (self.stage is None or cell.stage == self.stage)
                and (self.categories is None or cell.category in self.categories))

    @property
    def label(self) -> str:
        """'run:stage:category' with '*' for any."""
        cats = "+".join(sorted(self.categories)) if self.categories else "*"
        return f"{self.run_id}:{self.stage or '*'}:{cats}"


def predict(cells: Sequence[WorkCell], obs: Observation, eff: EfficiencyModel) -> float:
    """Predicted seconds of one observation."""
    return math.fsum(c.time_s(eff, obs.include_launch) for c in cells if obs.covers(c))


@define(frozen=True)
class _Params:
    """Fitted parameters as an EfficiencyModel (inverse efficiencies x, y and launch cost)."""

    x: dict[str, float]
    y: dict[str, float]
    launch_overhead_s: float
    kernel_floor_s: float = 0.0
    stage_launch: dict[str, float] | None = None

    def compute_efficiency(self, category: str) -> float:
        return 1.0 / self.x[category] if category in self.x else 1.0

    def bandwidth_efficiency(self, category: str) -> float:
        return 1.0 / self.y[category] if category in self.y else 1.0

    def for_stage(self, stage: str) -> _Params:
        if not self.stage_launch or stage not in self.stage_launch:
            return self
        return _Params(self.x, self.y, self.stage_launch[stage], self.kernel_floor_s)


@define(kw_only=True, frozen=True)
class FitResult:
    """Fitted efficiencies and how the fit went."""

    compute_efficiencies: dict[str, float]
    bandwidth_efficiencies: dict[str, float]
    launch_overhead_s: float
    kernel_floor_s: float
    stage_launch_overhead_s: dict[str, float]
    iterations: int
    observations: int
    unidentified: tuple[str, ...]
    rms_relative_error_before: float
    rms_relative_error_after: float

    @property
    def model(self) -> _Params:
        """The fit as an EfficiencyModel."""
        return _Params({c: 1 / e for c, e in self.compute_efficiencies.items()},
                       {c: 1 / e for c, e in self.bandwidth_efficiencies.items()}, self.launch_overhead_s,
                       self.kernel_floor_s, dict(self.stage_launch_overhead_s) or None)


def rms_relative_error(cells: Sequence[WorkCell], observations: Sequence[WorkCell] | Sequence[Observation],
                       eff: EfficiencyModel) -> float:
    """Root-mean-square of (predicted - measured) / measured over ``observations``."""
    errs = [(predict(cells, o, eff) - o.measured_s) / o.measured_s for o in observations
            if isinstance(o, Observation)]
    return math.sqrt(math.fsum(e * e for e in errs) / len(errs)) if errs else math.nan


def _mean_launch(v: np.ndarray, lidx: dict[str, int], cells: Sequence[WorkCell]) -> float:
    """The single launch cost, or with per-stage costs their kernel-weighted mean (for stage-blind users)."""
    if list(lidx) == ["*"]:
        return float(v[lidx["*"]])
    kernels = {g: sum(c.kernels for c in cells if c.stage == g) for g in lidx}
    total = sum(kernels.values())
    if total <= 0:
        return float(np.mean([v[j] for j in lidx.values()]))
    return float(sum(v[j] * kernels[g] for g, j in lidx.items()) / total)


def fit_efficiencies(
    cells: Sequence[WorkCell],
    observations: Sequence[Observation],
    *,
    prior: EfficiencyModel = PURE_ROOFLINE,
    max_efficiency: float = 1.0,
    fit_launch: bool = True,
    prior_weight: float = 1e-6,
    max_iterations: int = 50,
    shared: bool = False,
    per_stage_launch: bool = False,
) -> FitResult:
    """Fit per-category compute/bandwidth efficiencies and a launch cost (see module doc).

    max_efficiency caps every efficiency (1.0: never faster than the peaks the
    cells carry). shared: one compute and one bandwidth efficiency for every
    category (3 parameters; for few observations). per_stage_launch: one launch cost per
    stage (absorbs a kernel-count model that is off by a stage-specific factor).
    FitError when there is nothing to fit.
    """
    obs = [o for o in observations if any(o.covers(c) for c in cells)]
    if not obs:
        raise FitError("calibration: no measured time matches any analytic work (check stages and run ids)")
    for o in obs:
        if not (o.measured_s > 0 and math.isfinite(o.measured_s)):
            raise FitError(f"calibration: measured time of {o.label} must be > 0 s, got {o.measured_s}")
    all_cats = sorted({c.category for c in cells})
    cats = ["*"] if shared else all_cats
    ncat = len(cats)
    ix = {c: (0 if shared else i) for i, c in enumerate(all_cats)}
    ix["*"] = 0
    # unknowns: x (ncat), y (ncat), launch cost L (one, or one per stage), kernel floor F
    groups = sorted({c.stage for c in cells}) if per_stage_launch else ["*"]
    lidx = {g: 2 * ncat + j for j, g in enumerate(groups)}
    n = 2 * ncat + len(groups) + 1
    fi = n - 1
    launch_cols = list(lidx.values())
    li = launch_cols[0]
    lo = np.full(n, 1.0 / max_efficiency)
    lo[launch_cols] = 0.0
    lo[fi] = 0.0
    prior_vec = np.array([1 / prior.compute_efficiency(all_cats[0] if c == "*" else c) for c in cats]
                         + [1 / prior.bandwidth_efficiency(all_cats[0] if c == "*" else c) for c in cats]
                         + [prior.launch_overhead_s] * len(groups)
                         + [float(getattr(prior, "kernel_floor_s", 0.0))])
    prior_vec[:li] = np.maximum(prior_vec[:li], lo[:li])
    launch_of_cell = np.array([lidx[c.stage] if per_stage_launch else li for c in cells], dtype=np.int64)
    # Cells covered by each observation (index lists), computed once.
    covered = [[k for k, c in enumerate(cells) if o.covers(c)] for o in obs]
    f_term = np.array([c.compute_s for c in cells])
    b_term = np.array([c.memory_s for c in cells])
    kern = np.array([c.kernels for c in cells], dtype=np.float64)
    cat_idx = np.array([ix[c.category] for c in cells], dtype=np.int64)

    def params_of(v: np.ndarray) -> _Params:
        stage_launch = {g: float(v[j]) for g, j in lidx.items()} if per_stage_launch else None
        return _Params({c: float(v[ix[c]]) for c in all_cats}, {c: float(v[ncat + ix[c]]) for c in all_cats},
                       float(v[li]), float(v[fi]), stage_launch)

    def objective(v: np.ndarray) -> float:
        return rms_relative_error(cells, obs, params_of(v))

    current = prior_vec.copy()
    before = objective(current)
    best, best_obj = current.copy(), before
    seen: set[bytes] = set()
    iterations = 0
    compute_bound = np.zeros(len(cells), dtype=bool)
    for step in range(1, max_iterations + 1):
        iterations = step
        compute_bound = current[cat_idx] * f_term >= current[ncat + cat_idx] * b_term
        key = compute_bound.tobytes()
        if key in seen:
            break
        seen.add(key)
        rows, rhs = [], []
        for o, ks in zip(obs, covered, strict=True):
            row = np.zeros(n)
            for k in ks:
                if compute_bound[k]:
                    row[cat_idx[k]] += f_term[k]
                else:
                    row[ncat + cat_idx[k]] += b_term[k]
                if fit_launch:
                    row[launch_of_cell[k] if o.include_launch else fi] += kern[k]
            scale = o.weight / o.measured_s
            rows.append(row * scale)
            rhs.append(o.weight)
        for j in range(n):
            if (j in launch_cols or j == fi) and not fit_launch:
                continue
            ref = prior_vec[j] if prior_vec[j] > 0 else 1e-6
            row = np.zeros(n)
            row[j] = prior_weight / ref
            rows.append(row)
            rhs.append(prior_weight * prior_vec[j] / ref)
        a = np.array(rows)
        b = np.array(rhs)
        # Shift by the lower bounds: v = lo + u, u >= 0.
        u = nnls(a, b - a @ lo)
        candidate = lo + u
        if not fit_launch:
            candidate[launch_cols] = prior_vec[launch_cols]
            candidate[fi] = prior_vec[fi]
        cand_obj = objective(candidate)
        current = candidate
        if cand_obj < best_obj:
            best, best_obj = candidate.copy(), cand_obj
    # Which parameters did the data constrain? A parameter is identified when some
    # observed cell uses it (its bound term, or kernels for the launch cost).
    final_cb = best[cat_idx] * f_term >= best[ncat + cat_idx] * b_term
    used = np.zeros(n, dtype=bool)
    for o, ks in zip(obs, covered, strict=True):
        for k in ks:
            if final_cb[k] and f_term[k] > 0:
                used[cat_idx[k]] = True
            elif not final_cb[k] and b_term[k] > 0:
                used[ncat + cat_idx[k]] = True
            if kern[k] > 0:
                used[launch_of_cell[k] if o.include_launch else fi] = True
    unidentified = [f"compute_efficiency[{c}]" for c in cats if not used[ix[c]]]
    unidentified += [f"bandwidth_efficiency[{c}]" for c in cats if not used[ncat + ix[c]]]
    for g, j in lidx.items():
        if fit_launch and not used[j]:
            unidentified.append("launch_overhead_s" if g == "*" else f"launch_overhead_s[{g}]")
    if fit_launch and not used[fi]:
        unidentified.append("kernel_floor_s")
    return FitResult(
        compute_efficiencies={c: float(1 / best[ix[c]]) for c in all_cats},
        bandwidth_efficiencies={c: float(1 / best[ncat + ix[c]]) for c in all_cats},
        launch_overhead_s=_mean_launch(best, lidx, cells), kernel_floor_s=float(best[fi]),
        stage_launch_overhead_s={g: float(best[j]) for g, j in lidx.items()} if per_stage_launch else {},
        iterations=iterations, observations=len(obs),
        unidentified=tuple(unidentified), rms_relative_error_before=before, rms_relative_error_after=best_obj,
    )


def line_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through (xs, ys); UserError unless xs holds two distinct
    values (e.g. page counts or batch sizes)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        raise UserError("the fit needs at least two different values of x (page counts, batch sizes)")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - slope * mx, slope


def probe_call_fit(xs: Sequence[float], ms: Sequence[float], probe_us: float, unit: str) -> dict[str, float]:
    """ms = fixed + per ``unit`` * x (:func:`line_fit`), both terms in ms and in module-probe calls
    (ms * 1e3 / ``probe_us``): keys fixed_ms, per_<unit>_ms, fixed_probe_calls, per_<unit>_probe_calls."""
    a, b = line_fit(xs, ms)
    return {"fixed_ms": a, f"per_{unit}_ms": b, "fixed_probe_calls": a * 1e3 / probe_us,
            f"per_{unit}_probe_calls": b * 1e3 / probe_us}
