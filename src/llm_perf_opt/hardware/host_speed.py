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

With the decode step (``hw probe --decode-step``), each module sample is followed
by decode steps of the full model and a SAM pass, timed: their host us per
launch over the probe is what ``calibrate --prior --host-speed`` prices a run's
kernels with, at that run's own probe.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
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
    aten_calls: int | None = field(default=None, metadata={"help": "module: aten calls per tiny forward"})
    device_launches: int | None = field(
        default=None, metadata={"help": "module: device launches (kernels, copies) per tiny forward (CUDA)"})
    decode_step_calls: int | None = field(
        default=None, metadata={"help": "module, with the decode step: aten calls per decode step of the full model"})
    decode_step_launches: int | None = field(
        default=None, metadata={"help": "module, with the decode step: device launches per decode step"})
    decode_ratio_samples: list[float] | None = field(
        default=None, metadata={"help": "module, with the decode step: per sample, a decode step's host us per "
                                        "launch over the module probe's us per call taken just before it"})
    sam_mode: str | None = field(
        default=None, metadata={"help": "module, with the decode step: resolution mode of the timed SAM pass"})
    sam_launches: int | None = field(
        default=None, metadata={"help": "module, with the decode step: device launches per SAM pass (one page)"})
    sam_syncs: int | None = field(
        default=None, metadata={"help": "module, with the decode step: host syncs per SAM pass"})
    sam_ratio_samples: list[float] | None = field(
        default=None, metadata={"help": "module, with the decode step: per sample, a SAM pass's host us per launch "
                                        "(its syncs included) over the module probe's us per call"})

    @property
    def median_us(self) -> float:
        """Median sample, us/op."""
        return float(statistics.median(self.samples_us))

    @property
    def mean_us(self) -> float:
        """Mean sample, us/op."""
        return float(statistics.fmean(self.samples_us))

    @property
    def decode_ratio(self) -> float | None:
        """Median of :attr:`decode_ratio_samples` (None: no decode step timed)."""
        return float(statistics.median(self.decode_ratio_samples)) if self.decode_ratio_samples else None

    @property
    def sam_ratio(self) -> float | None:
        """Median of :attr:`sam_ratio_samples` (None: no SAM pass timed)."""
        return float(statistics.median(self.sam_ratio_samples)) if self.sam_ratio_samples else None

    @property
    def us_per_launch(self) -> float | None:
        """Host us per device launch of a decode step at this probe's median: median us/call times
        :attr:`decode_ratio`; None when no decode step was timed."""
        ratio = self.decode_ratio
        return None if ratio is None else self.median_us * ratio

    @property
    def view_call_weight(self) -> float | None:
        """Host cost of an aten call that launches nothing over that of a call that launches, at the median
        decode ratio: the tiny forward (``aten_calls`` calls, ``device_launches`` launches, 1 probe unit per
        call) and the decode step (``decode_ratio`` units per launch) solved for a cost per launching call and
        per other call, both in probe units (0.41 over the ten H200 files; the projector's own calls, timed in
        their range, cost far less: analytic.base.PROJECTOR_VIEW_CALL_WEIGHT). None without the counts,
        or when the two programs have the same mix of calls (no split)."""
        ratio = self.decode_ratio
        counts = (self.aten_calls, self.device_launches, self.decode_step_calls, self.decode_step_launches)
        if ratio is None or any(c is None for c in counts):
            return None
        a, n, big_a, big_n = (float(c) for c in counts)  # type: ignore[arg-type]
        det = n * (big_a - big_n) - (a - n) * big_n
        if det == 0:
            return None
        per_launch = (a * (big_a - big_n) - (a - n) * ratio * big_n) / det
        per_view = (n * ratio * big_n - big_n * a) / det
        return per_view / per_launch if per_launch > 0 else None

    def as_dict(self) -> dict[str, Any]:
        """JSON form with the summary figures."""
        s = self.samples_us
        out = {"kind": self.kind, "unit": self.unit, "samples_us": list(s), "median_us": self.median_us,
               "mean_us": self.mean_us, "min_us": min(s), "max_us": max(s),
               "std_us": statistics.pstdev(s) if len(s) > 1 else 0.0}
        if self.aten_calls is not None:
            out["aten_calls"] = self.aten_calls
        if self.device_launches is not None:
            out["device_launches"] = self.device_launches
        if self.decode_ratio_samples:
            out["decode_step_calls"] = self.decode_step_calls
            out["decode_step_launches"] = self.decode_step_launches
            out["decode_ratio_samples"] = list(self.decode_ratio_samples)
            out["decode_ratio"] = self.decode_ratio
            out["median_us_per_launch"] = self.us_per_launch
        if self.sam_ratio_samples:
            out.update(sam_mode=self.sam_mode, sam_launches=self.sam_launches, sam_syncs=self.sam_syncs,
                       sam_ratio_samples=list(self.sam_ratio_samples), sam_ratio=self.sam_ratio)
        return out


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
    gpu_uuid: str | None = field(default=None, metadata={"help": "UUID of the probed GPU ('GPU-...'; None: "
                                                                 "not exposed, or a file written before it was recorded)"})
    cpu_model: str | None = field(default=None, metadata={"help": "the host CPU's model name (None: unknown)"})

    def as_dict(self) -> dict[str, Any]:
        """JSON form (``kind`` = HOST_SPEED_KIND)."""
        out = {k: v for k, v in asdict(self, recurse=False).items() if k != "probes"}
        return {"kind": HOST_SPEED_KIND, **out, "probes": {k: v.as_dict() for k, v in self.probes.items()}}


def gpu_uuid(device: torch.device) -> str | None:
    """UUID ('GPU-...') of a CUDA ``device`` as torch reports it; None off CUDA or when torch does not say."""
    from llm_perf_opt.hardware.detect import uuid_of

    if device.type != "cuda":
        return None
    return uuid_of(torch.cuda.get_device_properties(device.index or 0))


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


#: decode steps run before a decode-step program's KV cache is rebuilt by a fresh prefill (bounds its memory)
DECODE_STEP_REFILL = 256


class DecodeStepProgram:
    """Decode steps of the full model, as the profiler's passes run them (``decode_step``: n-gram ban, argmax,
    appends, decoder forward, LM head), random weights, after a prefill of ``batch`` synthetic ``mode``
    pages. Each :meth:`time_step_ms` times one step with CUDA events from an idle device (host-bound: the
    host's issue time). :attr:`calls` and :attr:`launches` are one step's aten calls and device launches,
    counted once (untimed). :meth:`time_sam_ms` times the same model's SAM encoder on one ``sam_mode`` page
    (as the profiler's prefill runs it; at Tiny's 512 px its device work is small against its host work),
    with :attr:`sam_launches` and :attr:`sam_syncs` counted once. CUDA only."""

    def __init__(self, config: Any, device: torch.device, dtype: torch.dtype, *, mode: str = "base",
                 batch: int = 1, sam_mode: str = "tiny") -> None:
        from llm_perf_opt.inputs.synthetic import synthetic_pages
        from llm_perf_opt.models.deepseek_ocr import build_prompt, preprocess_image
        from llm_perf_opt.models.deepseek_ocr.modeling import build_model
        from llm_perf_opt.models.deepseek_ocr.prompt import DEFAULT_PROMPT
        from llm_perf_opt.profiling.timers import aten_calls, device_activity, device_launches

        if device.type != "cuda":
            raise UserError(f"the decode-step probe times CUDA launches; {device} is not a CUDA device")
        self.device = device
        self.model = build_model(config, device=device, dtype=dtype)
        pre = [preprocess_image(page.load(), mode) for page in synthetic_pages(batch)]
        self._prompt, self._pre = build_prompt([p.layout for p in pre], DEFAULT_PROMPT), pre
        self._refill()
        self.calls = aten_calls(self.step)
        self.launches = int(device_launches(self.step, device) or 0)
        if self.launches < 1:
            raise UserError("decode-step probe: the profiler recorded no device launch for a decode step")
        self.sam_mode = sam_mode
        self._pixels = preprocess_image(synthetic_pages(1)[0].load(), sam_mode).global_view.unsqueeze(0)
        self.sam_pass()  # warm-up
        self.sam_launches, self.sam_syncs = device_activity(self.sam_pass, device) or (0, 0)
        if self.sam_launches < 1:
            raise UserError("decode-step probe: the profiler recorded no device launch for a SAM pass")

    def _refill(self) -> None:
        from llm_perf_opt.models.deepseek_ocr import decode_step, prefill

        self._state = prefill(self.model, self._prompt, self._pre)
        self._steps = 0
        for _ in range(3):  # warm-up
            self._state = decode_step(self.model, self._state, fixed_length=True)

    def step(self) -> None:
        """One decode step (untimed)."""
        from llm_perf_opt.models.deepseek_ocr import decode_step

        if self._steps >= DECODE_STEP_REFILL:
            self._refill()
        self._state = decode_step(self.model, self._state, fixed_length=True)
        self._steps += 1

    def sam_pass(self) -> None:
        """One SAM encoder pass over the ``sam_mode`` page (untimed)."""
        with torch.inference_mode():
            self.model.encode_sam(self._pixels)

    def _timed_ms(self, fn: Callable[[], None]) -> float:
        torch.cuda.synchronize(self.device)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        return float(a.elapsed_time(b))

    def time_step_ms(self) -> float:
        """ms of one decode step, CUDA events from an idle device."""
        return self._timed_ms(self.step)

    def time_sam_ms(self) -> float:
        """ms of one SAM pass, CUDA events from an idle device."""
        return self._timed_ms(self.sam_pass)


def measure_host_speed(device: torch.device, *, kinds: Sequence[str] = ("add", "module"), samples: int = 10,
                       reps: int = 3, interval_s: float = 0.5, decode_step: bool = False,
                       progress: Callable[[int, int], None] | None = None) -> HostSpeed:
    """``samples`` samples of each probe in ``kinds`` on ``device`` (interleaved, ``interval_s`` apart).

    ``progress(done, total)`` is called after each sample. An interrupt after the first sample ends the
    sampling and returns what was taken (``interrupted`` set). The module probe builds a tiny decoder of the
    packaged config in bf16 (CUDA) or fp32 (CPU) with random weights, once, with eager attention and
    grouped_mm experts (the profiler's defaults; its passes probe the run's own settings).

    ``decode_step`` (CUDA, with the module probe): also build the full model (random weights) and, right
    after each module sample, time ``reps`` decode steps (:class:`DecodeStepProgram`); the sample's ratio
    is the median step's host us per launch over that module sample (``decode_ratio_samples``): what turns
    a run's module probe into host time per kernel of a real decode step.
    """
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
    from llm_perf_opt.models.deepseek_ocr.modeling import tiny_decoder_program
    from llm_perf_opt.profiling.env import cpu_model
    from llm_perf_opt.profiling.timers import ModuleHostProbe, host_probe_us

    unknown = [k for k in kinds if k not in PROBE_UNITS]
    if unknown or not kinds:
        raise UserError(f"host probes must be among {', '.join(PROBE_UNITS)}, got {', '.join(kinds) or 'none'}")
    if samples < 1 or reps < 1 or not interval_s >= 0:
        raise UserError(f"samples and reps must be >= 1 and the interval >= 0 s (got {samples}, {reps}, {interval_s})")
    if decode_step and ("module" not in kinds or device.type != "cuda"):
        raise UserError("the decode-step probe needs the module probe on a CUDA device")
    takers: dict[str, Callable[[], float]] = {}
    counts: dict[str, tuple[int | None, int | None]] = {}
    module: ModuleHostProbe | None = None
    for kind in kinds:
        if kind == "add":
            host_probe_us(device, reps=1)  # warm-up: allocator, first launch
            takers[kind] = lambda: host_probe_us(device, reps=reps)
        else:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
            try:
                module = ModuleHostProbe(tiny_decoder_program(device=device, dtype=dtype), device,
                                         count_launches=True)
            except (ValueError, RuntimeError) as exc:
                raise UserError(f"module host probe: the tiny decoder could not run on {device} ({exc})") from None
            counts[kind] = (module.ops, module.launches)
            takers[kind] = lambda m=module: m.probe(reps=reps)  # type: ignore[misc]
    step = DecodeStepProgram(DeepseekOCRConfig.default(), device, torch.bfloat16) if decode_step else None
    values: dict[str, list[float]] = {k: [] for k in takers}
    ratios: list[float] = []
    sam_ratios: list[float] = []
    interrupted = False
    try:
        for i in range(samples):
            if i and interval_s:
                time.sleep(interval_s)
            for kind, take in takers.items():
                values[kind].append(float(take()))
                if kind == "module" and step is not None:
                    ms = statistics.median(step.time_step_ms() for _ in range(reps))
                    ratios.append(ms * 1e3 / step.launches / values[kind][-1])
                    ms = statistics.median(step.time_sam_ms() for _ in range(reps))
                    sam_ratios.append(ms * 1e3 / step.sam_launches / values[kind][-1])
            if progress is not None:
                progress(i + 1, samples)
    except KeyboardInterrupt:  # keep the samples taken so far
        if not any(values.values()):
            raise
        interrupted = True
        values = {k: v for k, v in values.items() if v}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    def series(kind: str, v: list[float]) -> ProbeSeries:
        calls, launches = counts.get(kind, (None, None))
        timed = kind == "module" and step is not None and bool(ratios)
        return ProbeSeries(kind=kind, unit=PROBE_UNITS[kind], samples_us=v, aten_calls=calls, device_launches=launches,
                           decode_step_calls=step.calls if timed and step else None,
                           decode_step_launches=step.launches if timed and step else None,
                           decode_ratio_samples=ratios if timed else None,
                           sam_mode=step.sam_mode if timed and step else None,
                           sam_launches=step.sam_launches if timed and step else None,
                           sam_syncs=step.sam_syncs if timed and step else None,
                           sam_ratio_samples=sam_ratios[:len(ratios)] if timed and sam_ratios else None)

    return HostSpeed(device=str(device), device_name=name, torch_version=str(torch.__version__), reps=reps,
                     interval_s=interval_s, probes={k: series(k, v) for k, v in values.items()},
                     created_utc=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), interrupted=interrupted,
                     gpu_uuid=gpu_uuid(device), cpu_model=cpu_model())


def pool_host_speeds(files: Sequence[tuple[Path, HostSpeed]]) -> HostSpeed:
    """One host speed from several files ``(path, HostSpeed)`` of one GPU model and torch build: per probe
    kind, the samples of every file that took it, in file order, and likewise the decode-step and SAM
    ratio samples, so each median runs over all of them. A single file is returned as it is.

    UserError naming the first file that does not pool with the first one: another GPU model, torch
    version or reps per sample, or another tiny forward, decode step or SAM pass (calls, launches, mode),
    whose ratios would count other work."""
    if not files:
        raise UserError("no host-speed file to pool")
    first_path, first = files[0]
    if len(files) == 1:
        return first
    for path, speed in files[1:]:
        for name in ("device_name", "torch_version", "reps"):
            a, b = getattr(first, name), getattr(speed, name)
            if a != b:
                raise UserError(f"{path}: its {name} {b!r} is not {first_path}'s {a!r}; host-speed files pool only "
                                "when taken on one GPU model with one torch build and --reps")
    pooled: dict[str, ProbeSeries] = {}
    for kind in dict.fromkeys(k for _, s in files for k in s.probes):
        series = [(p, s.probes[kind]) for p, s in files if kind in s.probes]
        ref: dict[str, Any] = {}
        for path, ps in series:
            for name in ("aten_calls", "device_launches", "decode_step_calls", "decode_step_launches", "sam_mode",
                         "sam_launches", "sam_syncs"):
                value = getattr(ps, name)
                if value is None:
                    continue
                known = ref.setdefault(name, (path, value))
                if known[1] != value:
                    raise UserError(f"{path}: its {kind} probe's {name} is {value!r}, {known[0]}'s is "
                                    f"{known[1]!r}; host-speed files pool only when they time the same work")
        decode = [x for _, ps in series for x in ps.decode_ratio_samples or []]
        sam = [x for _, ps in series for x in ps.sam_ratio_samples or []]
        pooled[kind] = ProbeSeries(
            kind=kind, unit=series[0][1].unit, samples_us=[x for _, ps in series for x in ps.samples_us],
            decode_ratio_samples=decode or None, sam_ratio_samples=sam or None,
            **{name: value for name, (_, value) in ref.items()})
    uuids = {s.gpu_uuid for _, s in files}
    cpus = {s.cpu_model for _, s in files}
    return HostSpeed(device=first.device, device_name=first.device_name, torch_version=first.torch_version,
                     reps=first.reps, interval_s=first.interval_s, probes=pooled,
                     created_utc=max(s.created_utc for _, s in files),
                     interrupted=any(s.interrupted for _, s in files),
                     gpu_uuid=uuids.pop() if len(uuids) == 1 else None,
                     cpu_model=cpus.pop() if len(cpus) == 1 else None)


def load_host_speed(path: Path) -> HostSpeed:
    """Read a host-speed file written by ``llm-perf-opt hw probe --out``; UserError naming the file and the
    problem when it is missing, not JSON, of another kind or lacks a field."""
    from llm_perf_opt.models.deepseek_ocr.modes import MODES

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: host-speed file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON host-speed file ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != HOST_SPEED_KIND:
        raise UserError(f"{path}: not a host-speed file (kind {HOST_SPEED_KIND!r}; write one with llm-perf-opt hw probe "
                        "--out FILE)")
    try:
        probes = {}
        for key, raw in data["probes"].items():
            samples = [float(x) for x in raw["samples_us"]]
            if not samples or not all(math.isfinite(x) and x > 0 for x in samples):
                raise ValueError(f"probe {key!r} has no positive samples")
            ratios = raw.get("decode_ratio_samples")
            if ratios is not None:
                ratios = [float(x) for x in ratios]
                if not ratios or not all(math.isfinite(x) and x > 0 for x in ratios):
                    raise ValueError(f"probe {key!r}: decode_ratio_samples must be positive numbers")

            def opt_int(name: str, raw: dict[str, Any] = raw) -> int | None:
                return None if raw.get(name) is None else int(raw[name])

            sam = raw.get("sam_ratio_samples")
            if raw.get("sam_mode") is not None and raw["sam_mode"] not in MODES:
                raise ValueError(f"probe {key!r}: sam_mode {raw['sam_mode']!r} is not one of {', '.join(MODES)}")
            if sam is not None:
                sam = [float(x) for x in sam]
                if not sam or not all(math.isfinite(x) and x > 0 for x in sam) or not raw.get("sam_launches"):
                    raise ValueError(f"probe {key!r}: sam_ratio_samples must be positive numbers, with sam_launches")
            probes[key] = ProbeSeries(kind=str(raw["kind"]), unit=str(raw["unit"]), samples_us=samples,
                                      aten_calls=opt_int("aten_calls"), device_launches=opt_int("device_launches"),
                                      decode_step_calls=opt_int("decode_step_calls"),
                                      decode_step_launches=opt_int("decode_step_launches"),
                                      decode_ratio_samples=ratios, sam_ratio_samples=sam,
                                      sam_mode=None if raw.get("sam_mode") is None else str(raw["sam_mode"]),
                                      sam_launches=opt_int("sam_launches"), sam_syncs=opt_int("sam_syncs"))
        return HostSpeed(device=str(data["device"]), device_name=str(data["device_name"]),
                         torch_version=str(data["torch_version"]), reps=int(data["reps"]),
                         interval_s=float(data["interval_s"]), probes=probes, created_utc=str(data["created_utc"]),
                         interrupted=bool(data.get("interrupted", False)),
                         gpu_uuid=None if data.get("gpu_uuid") is None else str(data["gpu_uuid"]),
                         cpu_model=None if data.get("cpu_model") is None else str(data["cpu_model"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{path}: malformed host-speed file ({type(exc).__name__}: {exc})") from None
