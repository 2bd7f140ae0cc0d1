"""Efficiencies of the roofline: the pure datasheet roofline and fitted calibrations.

The analytic roofline (DESIGN.md, "Roofline with honest efficiencies") predicts
one layer's time as::

    t_s = max(compute_s / ce(category), memory_s / be(category)) + kernels * launch_overhead_s
    compute_s = tensor_core_flops / tensor_core_peak + cuda_core_flops / cuda_core_peak
    memory_s  = io_bytes / memory_bandwidth

where ``ce`` is the achievable fraction of the peak FLOP rate and ``be`` the
achievable fraction of the memory bandwidth of the layer's operator category
(:class:`llm_perf_opt.vocab.OperatorCategory` strings), and ``launch_overhead_s``
is a per-kernel cost (launch plus host overhead between kernels) in seconds.

Any object with the three members of :class:`EfficiencyModel` can be handed to
the roofline (:func:`roofline_time_s`, :func:`bound_time_s` hold the formula once,
for the analyzer and for the what-if/calibration code). :data:`PURE_ROOFLINE` (1.0, 1.0, 0 s) is the uncalibrated model;
:class:`Calibration` is a fitted one (``llm-perf-opt calibrate``), stored as a
JSON file keyed by GPU and software versions (format in docs/compare.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from attrs import asdict, define, evolve, field

from llm_perf_opt.errors import UserError
from llm_perf_opt.hardware.gemms import gemm_time, split_gemm_key
from llm_perf_opt.hardware.patterns import pattern_ratio, split_key
from llm_perf_opt.vocab import OperatorCategory, Stage, parse_dtype

#: Version of the calibration file format; a file with another version is refused.
CALIBRATION_SCHEMA_VERSION = 1
#: Value of the "kind" field of a calibration file (guards against loading another JSON file).
CALIBRATION_KIND = "llm_perf_opt.calibration"
#: How a calibration turns work into stage times: "additive" (roofline + kernels x launch cost, summed
#: per layer) or "timeline" (host and device clocks simulated over the pass, analytic/timeline_model.py).
TIME_MODELS = ("additive", "timeline")
#: Per-pass host-speed probes a timeline calibration can scale its host costs by: "add" (passes.jsonl
#: host_probe_us) or "module" (host_module_probe_us; llm_perf_opt.profiling.timers).
HOST_PROBES = ("add", "module")


class CalibrationError(UserError):
    """A calibration file that is missing, malformed, of another version or for another GPU."""


@runtime_checkable
class EfficiencyModel(Protocol):
    """What the roofline needs: per-category efficiencies and a per-kernel launch cost."""

    @property
    def launch_overhead_s(self) -> float:
        """Seconds added per kernel launched (0 for the pure roofline)."""
        ...

    def compute_efficiency(self, category: str) -> float:
        """Achievable fraction (0, 1.x] of the peak FLOP rate for ``category``."""
        ...

    def bandwidth_efficiency(self, category: str) -> float:
        """Achievable fraction (0, 1.x] of the memory bandwidth for ``category``."""
        ...


@define(frozen=True)
class PureRoofline:
    """The uncalibrated roofline: datasheet peaks, no launch cost."""

    launch_overhead_s: float = 0.0

    def compute_efficiency(self, category: str) -> float:
        """Always 1.0."""
        return 1.0

    def bandwidth_efficiency(self, category: str) -> float:
        """Always 1.0."""
        return 1.0


#: The pure (uncalibrated) roofline.
PURE_ROOFLINE = PureRoofline()


def efficiency_for_stage(efficiency: EfficiencyModel, stage: str) -> EfficiencyModel:
    """The model to use for the work of ``stage``: ``efficiency.for_stage(stage)`` when the model
    has stage-specific terms (a Calibration with per-stage launch costs), else the model itself."""
    for_stage = getattr(efficiency, "for_stage", None)
    return for_stage(str(stage)) if callable(for_stage) else efficiency


@define(frozen=True)
class _StageView:
    """A calibration seen from one stage: its efficiencies with that stage's launch cost."""

    base: Calibration
    launch_overhead_s: float
    kernel_floor_s: float

    def compute_efficiency(self, category: str) -> float:
        return self.base.compute_efficiency(category)

    def bandwidth_efficiency(self, category: str) -> float:
        return self.base.bandwidth_efficiency(category)

    def pattern_bandwidth_ratio(self, key: str) -> float:
        return self.base.pattern_bandwidth_ratio(key)

    def gemm_time_s(self, key: str) -> float | None:
        return self.base.gemm_time_s(key)


def bound_time_s(*, compute_s: float, memory_s: float, category: str, kernels: float = 0.0,
                 efficiency: EfficiencyModel | None = None) -> float:
    """Calibrated time (s) of work whose pure-roofline compute and memory times are given.

    compute_s: FLOPs / peak FLOP rate (s); memory_s: bytes / bandwidth (s);
    kernels: kernel launches; efficiency: None = pure roofline. Returns
    max(compute_s / ce, memory_s / be) + kernels * launch_overhead_s.
    """
    eff = efficiency if efficiency is not None else PURE_ROOFLINE
    c = compute_s / eff.compute_efficiency(category) if compute_s else 0.0
    m = memory_s / eff.bandwidth_efficiency(category) if memory_s else 0.0
    return max(c, m) + kernels * eff.launch_overhead_s


def roofline_time_s(
    *,
    tensor_core_flops: float,
    cuda_core_flops: float = 0.0,
    io_bytes: float,
    category: str,
    tensor_core_flops_per_s: float,
    cuda_core_flops_per_s: float | None = None,
    memory_bytes_per_s: float,
    kernels: float = 0.0,
    efficiency: EfficiencyModel | None = None,
) -> float:
    """Roofline time (s) of the work of one operator category.

    Tensor-core FLOPs run at ``tensor_core_flops_per_s``, CUDA-core FLOPs at
    ``cuda_core_flops_per_s`` (in sequence: their times add); io_bytes (read +
    written) move at ``memory_bytes_per_s``; efficiency None = pure roofline.
    """
    compute_s = tensor_core_flops / tensor_core_flops_per_s if tensor_core_flops else 0.0
    if cuda_core_flops:
        if not cuda_core_flops_per_s:
            raise ValueError("roofline_time_s: cuda_core_flops given without cuda_core_flops_per_s")
        compute_s += cuda_core_flops / cuda_core_flops_per_s
    memory_s = io_bytes / memory_bytes_per_s if io_bytes else 0.0
    return bound_time_s(compute_s=compute_s, memory_s=memory_s, category=category, kernels=kernels,
                        efficiency=efficiency)


@define(kw_only=True, frozen=True)
class SoftwareKey:
    """Software versions a calibration was measured with (part of its key)."""

    torch: str = field(default="", metadata={"help": "torch version, e.g. 2.11.0+cu130"})
    transformers: str = field(default="", metadata={"help": "transformers version"})
    cuda: str = field(default="", metadata={"help": "CUDA runtime version torch was built with"})

    def describe(self) -> str:
        """'torch X, transformers Y, cuda Z' (empty parts left out)."""
        parts = [f"{k} {v}" for k, v in (("torch", self.torch), ("transformers", self.transformers),
                                         ("cuda", self.cuda)) if v]
        return ", ".join(parts) or "unknown software"


@define(kw_only=True, frozen=True)
class StageError:
    """Relative error of predicted vs measured time for one stage of one run."""

    run_id: str = field(metadata={"help": "run folder name"})
    stage: str = field(metadata={"help": "Stage string"})
    measured_ms: float = field(metadata={"help": "measured time (ms)"})
    predicted_ms: float = field(metadata={"help": "predicted time (ms)"})
    held_out: bool = field(default=False, metadata={"help": "run not used for fitting"})

    @property
    def relative_error(self) -> float:
        """(predicted - measured) / measured; nan when nothing was measured."""
        return (self.predicted_ms - self.measured_ms) / self.measured_ms if self.measured_ms > 0 else math.nan


def _str_list(value: object, name: str) -> list[str]:
    """A JSON list of strings; CalibrationError (one line) for anything else."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CalibrationError(f"calibration: {name} must be a list of stage names, got {value!r}")
    return list(value)


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def _error_tuple(values: Iterable[StageError]) -> tuple[StageError, ...]:
    return tuple(values)


@define(kw_only=True, frozen=True)
class FitSummary:
    """How well a calibration fits: per-stage errors before and after, on fitted and held-out runs."""

    fitted_runs: tuple[str, ...] = field(default=(), converter=_str_tuple)
    held_out_runs: tuple[str, ...] = field(default=(), converter=_str_tuple)
    observations: int = field(default=0, metadata={"help": "equations used in the fit"})
    iterations: int = field(default=0, metadata={"help": "regime-assignment iterations"})
    before: tuple[StageError, ...] = field(default=(), converter=_error_tuple,
                                           metadata={"help": "uncalibrated (pure roofline) errors"})
    after: tuple[StageError, ...] = field(default=(), converter=_error_tuple,
                                          metadata={"help": "calibrated errors"})
    unidentified: tuple[str, ...] = field(default=(), converter=_str_tuple,
                                          metadata={"help": "parameters the data did not constrain (kept at prior), and fitted "
                                                            "ones it constrained only weakly ('NAME weakly: why')"})


#: per Calibration (by identity, the instance held so its id stays its own): GEMM key -> gemm_time's
#: answer. A calibration is frozen and its GEMM table is read as fixed: lookups then skip the per-lookup
#: check that hardware.gemms makes for a mapping that may change in place.
_GEMM_ANSWERS: dict[int, tuple[Calibration, dict[str, float | None]]] = {}


@define(kw_only=True, frozen=True)
class Calibration:
    """Fitted roofline efficiencies for one GPU and software stack (an :class:`EfficiencyModel`).

    compute_efficiencies / bandwidth_efficiencies map category strings to
    fractions of peak; categories not listed use the defaults.
    """

    gpu_key: str = field(metadata={"help": "GPU catalogue key the efficiencies were measured on"})
    dtype: str = field(default="bf16", metadata={"help": "compute dtype of the fitted runs"})
    software: SoftwareKey = field(factory=SoftwareKey)
    compute_efficiencies: dict[str, float] = field(factory=dict)
    bandwidth_efficiencies: dict[str, float] = field(factory=dict)
    default_compute_efficiency: float = field(default=1.0)
    default_bandwidth_efficiency: float = field(default=1.0)
    launch_overhead_s: float = field(default=0.0, metadata={"help": "seconds per kernel launch"})
    kernel_floor_s: float = field(
        default=0.0, metadata={"help": "device seconds per kernel on top of the roofline (operator-table times only)"})
    kernel_gap_s: float = field(
        default=0.0, metadata={"help": "timeline model: device seconds between two kernels queued back to back, "
                                       "which kernel durations leave out (hw gap; 0 = none)"})
    kernel_gap_graph_s: float | None = field(
        default=None, metadata={"help": "timeline model: device seconds between two kernels replayed from a CUDA "
                                        "graph (hw gap; None = not measured)"})
    graph_stages: list[str] = field(
        factory=list, metadata={"help": "timeline model: stages replayed from CUDA graphs (no host or sync cost; "
                                        "kernel_gap_graph_s between their kernels when measured)"})
    stage_launch_overhead_s: dict[str, float] = field(
        factory=dict, metadata={"help": "stage -> seconds per kernel, replacing launch_overhead_s in that stage"})
    stage_device_scale: dict[str, float] = field(
        factory=dict, metadata={"help": "timeline model: stage -> factor on its device time (measured / modelled "
                                        "device time of the fitted runs; 1 where not fitted)"})
    time_model: str = field(default="additive", metadata={"help": "additive | timeline (see TIME_MODELS)"})
    stage_host_s_per_kernel: dict[str, float] = field(
        factory=dict, metadata={"help": "timeline model: stage -> host seconds to issue one analytic kernel"})
    host_sync_s: float = field(default=0.0, metadata={"help": "timeline model: host seconds per host-device sync"})
    host_probe_us: float = field(
        default=0.0, metadata={"help": "timeline model: host-speed probe (us per tiny eager op) the host costs refer "
                                       "to; 0 = the fitted runs had no probe"})
    host_probe_exponent: float = field(
        default=1.0, metadata={"help": "timeline model: host costs scale as (probe / host_probe_us) ** exponent"})
    host_probe: str = field(
        default="add", metadata={"help": "timeline model: which per-pass host probe host_probe_us is: 'add' "
                                         "(host_probe_us, us per tiny in-place add) or 'module' "
                                         "(host_module_probe_us, us per aten call of a tiny decoder forward)"})
    pattern_bandwidth_ratios: dict[str, float] = field(
        factory=dict, metadata={"help": "timeline model: access pattern '<pattern>@<side>' -> its measured bandwidth / "
                                        "the copy bandwidth (hw bench; llm_perf_opt.hardware.patterns); "
                                        "patterns not listed move at the copy bandwidth"})
    gemm_times_s: dict[str, float] = field(
        factory=dict, metadata={"help": "timeline model: GEMM '<kind>@BxMxNxK' or call timed whole "
                                        "(experts, rope) -> measured device seconds per call (hw bench; "
                                        "llm_perf_opt.hardware.gemms); other shapes take the nearest "
                                        "measured shape's rate, GEMMs of no measured kind the roofline"})
    fit: FitSummary = field(factory=FitSummary)
    created_utc: str = field(default="")
    schema_version: int = field(default=CALIBRATION_SCHEMA_VERSION)

    def __attrs_post_init__(self) -> None:
        known = {c.value for c in OperatorCategory}
        for label, table in (("compute", self.compute_efficiencies), ("bandwidth", self.bandwidth_efficiencies)):
            for cat, value in table.items():
                if cat not in known:
                    raise CalibrationError(f"calibration: unknown operator category {cat!r} in {label} efficiencies")
                if not (value > 0 and math.isfinite(value)):
                    raise CalibrationError(f"calibration: {label} efficiency of {cat!r} must be > 0, got {value}")
        try:
            parse_dtype(self.dtype)
        except ValueError as exc:
            raise CalibrationError(f"calibration: dtype: {exc}") from None
        if self.time_model not in TIME_MODELS:
            raise CalibrationError(f"calibration: time_model must be one of {', '.join(TIME_MODELS)}, "
                                   f"got {self.time_model!r}")
        if self.host_probe not in HOST_PROBES:
            raise CalibrationError(f"calibration: host_probe must be one of {', '.join(HOST_PROBES)}, "
                                   f"got {self.host_probe!r}")
        for name in ("launch_overhead_s", "kernel_floor_s", "kernel_gap_s", "host_sync_s", "host_probe_us",
                     "host_probe_exponent"):
            value = getattr(self, name)
            if value < 0 or not math.isfinite(value):
                raise CalibrationError(f"calibration: {name} must be >= 0, got {value}")
        if self.kernel_gap_graph_s is not None and not (self.kernel_gap_graph_s >= 0
                                                        and math.isfinite(self.kernel_gap_graph_s)):
            raise CalibrationError(f"calibration: kernel_gap_graph_s must be >= 0, got {self.kernel_gap_graph_s}")
        stages = {s.value for s in Stage}
        for stage, value in self.stage_launch_overhead_s.items():
            if stage not in stages:
                raise CalibrationError(f"calibration: unknown stage {stage!r} in stage_launch_overhead_s")
            if value < 0 or not math.isfinite(value):
                raise CalibrationError(f"calibration: stage_launch_overhead_s[{stage}] must be >= 0, got {value}")
        for stage, value in self.stage_device_scale.items():
            if stage not in stages:
                raise CalibrationError(f"calibration: unknown stage {stage!r} in stage_device_scale")
            if not (value > 0 and math.isfinite(value)):
                raise CalibrationError(f"calibration: stage_device_scale[{stage}] must be > 0, got {value}")
        if bad := [st for st in self.graph_stages if st not in stages]:
            raise CalibrationError(f"calibration: unknown stage {', '.join(map(repr, bad))} in graph_stages")
        for stage, value in self.stage_host_s_per_kernel.items():
            if stage not in stages:
                raise CalibrationError(f"calibration: unknown stage {stage!r} in stage_host_s_per_kernel")
            if value < 0 or not math.isfinite(value):
                raise CalibrationError(f"calibration: stage_host_s_per_kernel[{stage}] must be >= 0, got {value}")
        keyed: tuple[tuple[str, dict[str, float], Callable[[str], object]], ...] = (
            ("pattern_bandwidth_ratios", self.pattern_bandwidth_ratios, split_key),
            ("gemm_times_s", self.gemm_times_s, split_gemm_key))
        for name, table, parse in keyed:
            for key, value in table.items():
                try:
                    parse(key)
                except UserError as exc:
                    raise CalibrationError(f"calibration: {name}: {exc}") from None
                if not (value > 0 and math.isfinite(value)):
                    raise CalibrationError(f"calibration: {name}[{key}] must be > 0, got {value}")
        if self.time_model == "timeline" and not self.stage_host_s_per_kernel:
            raise CalibrationError("calibration: a timeline calibration needs stage_host_s_per_kernel")

    def compute_efficiency(self, category: str) -> float:
        """Fraction of peak FLOP rate achieved by ``category``."""
        return self.compute_efficiencies.get(str(category), self.default_compute_efficiency)

    def bandwidth_efficiency(self, category: str) -> float:
        """Fraction of memory bandwidth achieved by ``category``."""
        return self.bandwidth_efficiencies.get(str(category), self.default_bandwidth_efficiency)

    def pattern_bandwidth_ratio(self, key: str) -> float:
        """Bandwidth of access pattern ``key`` relative to the copy bandwidth (nearest measured side;
        1.0 when the pattern was not measured)."""
        return pattern_ratio(self.pattern_bandwidth_ratios, key)

    def gemm_time_s(self, key: str) -> float | None:
        """Measured device seconds per call of GEMM ``key`` (nearest measured shape's rate when not measured;
        None when no GEMM of its kind and alignment was). Answers are kept per calibration: like the
        calibration itself, its ``gemm_times_s`` is read as fixed (build another one to change it)."""
        if not self.gemm_times_s:
            return None
        held = _GEMM_ANSWERS.get(id(self))
        if held is None or held[0] is not self:
            if len(_GEMM_ANSWERS) >= 32:
                _GEMM_ANSWERS.clear()
            held = _GEMM_ANSWERS[id(self)] = (self, {})
        answers = held[1]
        if key not in answers:
            answers[key] = gemm_time(self.gemm_times_s, key)
        return answers[key]

    @property
    def timeline(self) -> bool:
        """True when stage times come from the host/device timeline model."""
        return self.time_model == "timeline"

    def device_scale(self, stage: str) -> float:
        """Factor on the modelled device time of ``stage`` (timeline model; 1.0 where none was fitted)."""
        return self.stage_device_scale.get(str(stage), 1.0)

    def stage_gap_s(self, stage: str) -> float:
        """Device seconds the timeline model adds per kernel of ``stage``: the CUDA-graph replay gap for a
        stage in :attr:`graph_stages` when it was measured, else the stream gap."""
        if str(stage) in self.graph_stages and self.kernel_gap_graph_s is not None:
            return self.kernel_gap_graph_s
        return self.kernel_gap_s

    def stage_sync_s(self, stage: str) -> float:
        """Host seconds per host-device sync in ``stage`` (0 in a graph-replayed stage)."""
        return 0.0 if str(stage) in self.graph_stages else self.host_sync_s

    def host_s_per_kernel(self, stage: str) -> float:
        """Host seconds per analytic kernel (or host-only op) in ``stage`` (timeline model): 0 in a
        graph-replayed stage; a stage without a fitted value gets the mean of the fitted ones."""
        if str(stage) in self.graph_stages:
            return 0.0
        value = self.stage_host_s_per_kernel.get(str(stage))
        if value is not None:
            return value
        vals = list(self.stage_host_s_per_kernel.values())
        return sum(vals) / len(vals) if vals else self.launch_overhead_s

    def at_host_speed(self, probe_us: float | None) -> Calibration:
        """This calibration for a host whose probe reads ``probe_us`` (us per tiny eager op): host costs
        scaled by (probe_us / host_probe_us) ** host_probe_exponent. Unchanged when either probe is unknown
        or the model is additive."""
        if not self.timeline or not probe_us or probe_us <= 0 or self.host_probe_us <= 0:
            return self
        f = (probe_us / self.host_probe_us) ** self.host_probe_exponent
        return evolve(self, stage_host_s_per_kernel={k: v * f for k, v in self.stage_host_s_per_kernel.items()},
                      host_sync_s=self.host_sync_s * f, host_probe_us=probe_us)

    def for_host_probe(self, probe_us: float) -> Calibration:
        """This calibration on a host whose probe (of kind :attr:`host_probe`) reads ``probe_us`` us/op,
        for planning: like :meth:`at_host_speed`, but 0 stands for every stage replayed from a CUDA graph
        (:meth:`with_graph_stages` of all stages: no host or sync cost, the graph's gap between kernels).

        CalibrationError (one line) when the calibration is additive or, for a probe other than 0 (which needs
        no reference), its fitted runs had no probe.
        """
        if not self.timeline:
            raise CalibrationError("a host probe applies to a timeline calibration (llm-perf-opt calibrate "
                                   "--time-model timeline); this one is additive")
        if not (probe_us >= 0 and math.isfinite(probe_us)):
            raise CalibrationError(f"host probe must be >= 0 us/op, got {probe_us}")
        if probe_us == 0:
            return evolve(self.with_graph_stages([st.value for st in Stage]), host_probe_us=0.0,
                          launch_overhead_s=0.0)
        if self.host_probe_us <= 0:
            raise CalibrationError("this calibration has no host probe (its fitted runs had none): it cannot be "
                                   "moved to another host speed (only to 0, no host cost)")
        try:
            moved = self.at_host_speed(probe_us)
        except OverflowError:
            raise CalibrationError(f"host probe {probe_us:g} us/op is out of range for this calibration") from None
        if not all(math.isfinite(v) for v in (*moved.stage_host_s_per_kernel.values(), moved.host_sync_s)):
            raise CalibrationError(f"host probe {probe_us:g} us/op is out of range for this calibration")
        return moved

    def with_graph_stages(self, stages: Iterable[str]) -> Calibration:
        """This calibration with ``stages`` (and those it already had) replayed from CUDA graphs: their host
        and sync costs 0 and, when measured, the graph's gap between their kernels. CalibrationError (one
        line) for an additive calibration or an unknown stage."""
        if not self.timeline:
            raise CalibrationError("CUDA-graph stages apply to a timeline calibration (llm-perf-opt calibrate "
                                   "--time-model timeline); this one is additive")
        known = [st.value for st in Stage]
        wanted = set(self.graph_stages) | {str(s) for s in stages}
        if bad := sorted(wanted - set(known)):
            raise CalibrationError(f"unknown stage {', '.join(bad)} for CUDA graphs (stages: {', '.join(known)})")
        return evolve(self, graph_stages=[s for s in known if s in wanted])

    def for_stage(self, stage: str) -> EfficiencyModel:
        """This calibration within ``stage`` (its own launch cost when one was fitted)."""
        launch = self.stage_launch_overhead_s.get(str(stage))
        if launch is None:
            return self
        return _StageView(self, launch, self.kernel_floor_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the file format)."""
        data = asdict(self, recurse=True)
        data = {"kind": CALIBRATION_KIND, **data}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> Calibration:
        """Inverse of :meth:`to_dict`; CalibrationError names the file and the bad field."""
        if not isinstance(data, dict) or data.get("kind") != CALIBRATION_KIND:
            raise CalibrationError(f"{source}: not a calibration file (field 'kind' is not {CALIBRATION_KIND!r})")
        version = data.get("schema_version")
        if version != CALIBRATION_SCHEMA_VERSION:
            raise CalibrationError(
                f"{source}: calibration schema_version {version!r} is not supported (expected {CALIBRATION_SCHEMA_VERSION})"
            )
        try:
            fit = data.get("fit") or {}
            summary = FitSummary(
                fitted_runs=fit.get("fitted_runs", ()), held_out_runs=fit.get("held_out_runs", ()),
                observations=int(fit.get("observations", 0)), iterations=int(fit.get("iterations", 0)),
                before=[StageError(**e) for e in fit.get("before", ())],
                after=[StageError(**e) for e in fit.get("after", ())],
                unidentified=fit.get("unidentified", ()),
            )
            return cls(
                gpu_key=str(data["gpu_key"]), dtype=str(data.get("dtype", "bf16")),
                software=SoftwareKey(**(data.get("software") or {})),
                compute_efficiencies={str(k): float(v) for k, v in data.get("compute_efficiencies", {}).items()},
                bandwidth_efficiencies={str(k): float(v) for k, v in data.get("bandwidth_efficiencies", {}).items()},
                default_compute_efficiency=float(data.get("default_compute_efficiency", 1.0)),
                default_bandwidth_efficiency=float(data.get("default_bandwidth_efficiency", 1.0)),
                launch_overhead_s=float(data.get("launch_overhead_s", 0.0)),
                kernel_floor_s=float(data.get("kernel_floor_s", 0.0)),
                kernel_gap_s=float(data.get("kernel_gap_s", 0.0)),
                kernel_gap_graph_s=(None if data.get("kernel_gap_graph_s") is None
                                    else float(data["kernel_gap_graph_s"])),
                graph_stages=_str_list(data.get("graph_stages") or [], "graph_stages"),
                stage_launch_overhead_s={str(k): float(v)
                                         for k, v in (data.get("stage_launch_overhead_s") or {}).items()},
                stage_device_scale={str(k): float(v) for k, v in (data.get("stage_device_scale") or {}).items()},
                time_model=str(data.get("time_model", "additive")),
                stage_host_s_per_kernel={str(k): float(v)
                                         for k, v in (data.get("stage_host_s_per_kernel") or {}).items()},
                host_sync_s=float(data.get("host_sync_s", 0.0)),
                host_probe_us=float(data.get("host_probe_us", 0.0)),
                host_probe_exponent=float(data.get("host_probe_exponent", 1.0)),
                host_probe=str(data.get("host_probe", "add")),
                pattern_bandwidth_ratios={str(k): float(v)
                                          for k, v in (data.get("pattern_bandwidth_ratios") or {}).items()},
                gemm_times_s={str(k): float(v) for k, v in (data.get("gemm_times_s") or {}).items()},
                fit=summary, created_utc=str(data.get("created_utc", "")), schema_version=int(version),
            )
        except CalibrationError:
            raise
        except KeyError as exc:
            raise CalibrationError(f"{source}: calibration field {exc.args[0]!r} is missing") from None
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"{source}: malformed calibration ({exc})") from None

    def describe(self) -> str:
        """One line: which GPU, software and launch cost."""
        per_stage = "".join(f", {k} {v * 1e6:.2f}" for k, v in self.stage_launch_overhead_s.items())
        if self.timeline:
            host = ", ".join(f"{k} {v * 1e6:.2f}" for k, v in self.stage_host_s_per_kernel.items())
            return (f"timeline calibration for {self.gpu_key} ({self.dtype}; {self.software.describe()}), "
                    f"host us/kernel: {host}; sync {self.host_sync_s * 1e6:.2f} us; "
                    f"host probe ({self.host_probe}) {self.host_probe_us:.2f} us/op, exponent {self.host_probe_exponent:.2f}; "
                    f"device floor {self.kernel_floor_s * 1e6:.2f} us/kernel"
                    + (f", gap {self.kernel_gap_s * 1e6:.2f} us/kernel"
                       + (f" ({self.kernel_gap_graph_s * 1e6:.2f} in a CUDA graph)"
                          if self.kernel_gap_graph_s is not None else "") if self.kernel_gap_s else "")
                    + (f"; replayed from CUDA graphs: {', '.join(self.graph_stages)}" if self.graph_stages else "")
                    + (f"; {len(self.pattern_bandwidth_ratios)} access-pattern bandwidths"
                       if self.pattern_bandwidth_ratios else "")
                    + (f"; {len(self.gemm_times_s)} GEMM shapes timed" if self.gemm_times_s else ""))
        return (f"calibration for {self.gpu_key} ({self.dtype}; {self.software.describe()}), "
                f"launch {self.launch_overhead_s * 1e6:.2f} us/kernel{per_stage}, "
                f"device floor {self.kernel_floor_s * 1e6:.2f} us/kernel")


def save_calibration(calibration: Calibration, path: str | Path) -> Path:
    """Write ``calibration`` as indented JSON; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(calibration.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return out


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; CalibrationError (one line) when missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise CalibrationError(f"calibration file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"{p}: not readable JSON ({exc.__class__.__name__}: {exc})") from None
    return Calibration.from_dict(data, source=str(p))


def check_applies(calibration: Calibration, gpu_key: str, software: SoftwareKey | None = None,
                  dtype: str | None = None) -> list[str]:
    """Refuse a calibration for another GPU or (``dtype`` given) another compute dtype; return warnings for
    differing software versions.

    Raises CalibrationError when ``gpu_key`` or ``dtype`` differs from the calibration's.
    """
    if calibration.gpu_key != gpu_key:
        raise CalibrationError(
            f"calibration is for GPU {calibration.gpu_key!r}, not {gpu_key!r}; fit one on {gpu_key} runs"
        )
    if dtype is not None and str(parse_dtype(calibration.dtype)) != str(parse_dtype(dtype)):
        raise CalibrationError(
            f"calibration is for dtype {calibration.dtype!r}, not {str(dtype)!r}: its efficiencies and timed GEMMs "
            f"are the {calibration.dtype} kernels'; fit one on {dtype} runs"
        )
    warnings: list[str] = []
    if software is not None:
        for name in ("torch", "transformers", "cuda"):
            mine, theirs = getattr(calibration.software, name), getattr(software, name)
            if mine and theirs and mine != theirs:
                warnings.append(f"calibration measured with {name} {mine}, this run uses {theirs}")
    return warnings
