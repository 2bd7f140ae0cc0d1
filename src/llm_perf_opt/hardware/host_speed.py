"""Host speed of this machine: the profiler's host-speed probes, taken on their own.

A timeline calibration (``llm-perf-opt calibrate --time-model timeline``) keeps
the mean probe of the runs it was fitted on, and its host costs scale with the
probe of the host they are applied to. ``llm-perf-opt hw probe`` measures that
probe here, so a planner can ask ``llm-perf-opt what-if --host-probe-us US``
what this host would do with a calibration fitted elsewhere.

Two probes, as in the profiler's passes (llm_perf_opt.profiling.timers):

- ``add``: host us per tiny in-place add (one kernel launch each);
- ``module``: host us per aten call of a tiny two-layer decoder forward on
  the model's own code path.

Each sample is one probe call (the median of its ``reps`` loops); samples are
spread ``interval_s`` apart, since a shared host's speed drifts.
"""

from __future__ import annotations

import datetime as _dt
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from attrs import asdict, define, field

from llm_perf_opt.errors import UserError

#: Value of the "kind" field of a host-speed file.
HOST_SPEED_KIND = "llm_perf_opt.host_speed"
#: Probe kinds (the calibration's ``host_probe`` values) and what one unit is.
PROBE_UNITS = {"add": "host us per tiny in-place add (one launch)",
               "module": "host us per aten call of a tiny decoder forward (model code path)"}


@define(kw_only=True, frozen=True)
class ProbeSeries:
    """Samples of one probe kind, us/op."""

    kind: str = field(metadata={"help": "add | module (see PROBE_UNITS)"})
    unit: str = field(metadata={"help": "what one us/op counts"})
    samples_us: list[float] = field(metadata={"help": "one value per sample, us/op"})

    @property
    def median_us(self) -> float:
        """Median sample, us/op."""
        return float(statistics.median(self.samples_us))

    @property
    def mean_us(self) -> float:
        """Mean sample, us/op."""
        return float(statistics.fmean(self.samples_us))

    def as_dict(self) -> dict[str, Any]:
        """JSON form with the summary figures."""
        s = self.samples_us
        return {"kind": self.kind, "unit": self.unit, "samples_us": list(s), "median_us": self.median_us,
                "mean_us": self.mean_us, "min_us": min(s), "max_us": max(s),
                "std_us": statistics.pstdev(s) if len(s) > 1 else 0.0}


@define(kw_only=True, frozen=True)
class HostSpeed:
    """The probes of one measurement on one device."""

    device: str = field(metadata={"help": "torch device the probes launched on"})
    device_name: str = field(metadata={"help": "GPU name (or 'cpu')"})
    torch_version: str
    reps: int = field(metadata={"help": "loops (add) or forwards (module) per sample; the median is the sample"})
    interval_s: float = field(metadata={"help": "seconds between samples"})
    probes: dict[str, ProbeSeries]
    created_utc: str
    interrupted: bool = field(default=False, metadata={"help": "stopped by an interrupt before every sample"})

    def as_dict(self) -> dict[str, Any]:
        """JSON form (``kind`` = HOST_SPEED_KIND)."""
        out = {k: v for k, v in asdict(self, recurse=False).items() if k != "probes"}
        return {"kind": HOST_SPEED_KIND, **out, "probes": {k: v.as_dict() for k, v in self.probes.items()}}


def resolve_device(name: str | None) -> torch.device:
    """The probe device: ``name``, else the first CUDA device. UserError when CUDA is asked for but absent."""
    if name is None:
        if not torch.cuda.is_available():
            raise UserError("no CUDA device: the host probes time kernel launches on a GPU "
                            "(--device cpu times CPU dispatch instead, which no GPU calibration uses)")
        return torch.device("cuda", 0)
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA device here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UserError(f"--device {name}: only cpu and cuda devices are probed")
    return dev


def measure_host_speed(device: torch.device, *, kinds: Sequence[str] = ("add", "module"), samples: int = 10,
                       reps: int = 3, interval_s: float = 0.5,
                       progress: Callable[[int, int], None] | None = None) -> HostSpeed:
    """``samples`` samples of each probe in ``kinds`` on ``device`` (interleaved, ``interval_s`` apart).

    ``progress(done, total)`` is called after each sample. An interrupt after the first sample ends the
    sampling and returns what was taken (``interrupted`` set). The module probe builds a tiny decoder of the
    packaged config in bf16 (CUDA) or fp32 (CPU) with random weights, once, with eager attention and
    grouped_mm experts (the profiler's defaults; its passes probe the run's own settings).
    """
    from llm_perf_opt.models.deepseek_ocr.modeling import tiny_decoder_program
    from llm_perf_opt.profiling.timers import ModuleHostProbe, host_probe_us

    unknown = [k for k in kinds if k not in PROBE_UNITS]
    if unknown or not kinds:
        raise UserError(f"host probes must be among {', '.join(PROBE_UNITS)}, got {', '.join(kinds) or 'none'}")
    if samples < 1 or reps < 1 or not interval_s >= 0:
        raise UserError(f"samples and reps must be >= 1 and the interval >= 0 s (got {samples}, {reps}, {interval_s})")
    takers: dict[str, Callable[[], float]] = {}
    for kind in kinds:
        if kind == "add":
            host_probe_us(device, reps=1)  # warm-up: allocator, first launch
            takers[kind] = lambda: host_probe_us(device, reps=reps)
        else:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
            try:
                module = ModuleHostProbe(tiny_decoder_program(device=device, dtype=dtype), device)
            except (ValueError, RuntimeError) as exc:
                raise UserError(f"module host probe: the tiny decoder could not run on {device} ({exc})") from None
            takers[kind] = lambda m=module: m.probe(reps=reps)  # type: ignore[misc]
    values: dict[str, list[float]] = {k: [] for k in takers}
    interrupted = False
    try:
        for i in range(samples):
            if i and interval_s:
                time.sleep(interval_s)
            for kind, take in takers.items():
                values[kind].append(float(take()))
            if progress is not None:
                progress(i + 1, samples)
    except KeyboardInterrupt:  # keep the samples taken so far
        if not any(values.values()):
            raise
        interrupted = True
        values = {k: v for k, v in values.items() if v}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return HostSpeed(device=str(device), device_name=name, torch_version=str(torch.__version__), reps=reps,
                     interval_s=interval_s,
                     probes={k: ProbeSeries(kind=k, unit=PROBE_UNITS[k], samples_us=v) for k, v in values.items()},
                     created_utc=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), interrupted=interrupted)
