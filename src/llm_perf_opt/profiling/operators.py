"""Operator table from torch.profiler events, without double counting.

torch.profiler reports every operator with its *total* time (itself plus
the operators it calls: ``aten::linear`` contains ``aten::addmm``) and with
its *self* time. Summing totals counts nested work twice; so does summing
the rows of ``key_averages()`` on CUDA, where each kernel appears both as
its own device row and inside the self CUDA time of the operator that
launched it. This module works on a flat, serialisable capture of the
profiler's CPU-side event tree (:class:`ProfileCapture`):

- an operator's device time is the sum of the kernels it launched itself
  (``FunctionEvent.kernels``), so the operator rows add up to the kernel
  time the profiler attributed (the rest is reported as unattributed);
- user ranges (``record_function``: the stage names, decode steps,
  ``ProfilerStep#N``) are never rows; they assign each operator to the
  innermost stage that encloses it (``decode.step.{i}`` counts as decode);
- each operator name maps to an OperatorCategory through the shared
  TargetOperatorList; names it does not know stay ``uncategorized``.

On a CPU-only run there is no device time: the basis of every share is
then self CPU time, and the table says so.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from attrs import asdict, define, field

from llm_perf_opt.data.profile import OperatorSummary
from llm_perf_opt.vocab import DECODE_STEP_RANGE, OperatorCategory, Stage

#: Basis names of a table: self device (CUDA) time or self CPU time.
BASIS_CUDA = "cuda"
BASIS_CPU = "cpu"
#: Stage label of operators outside every stage range.
OUTSIDE_STAGES = "(outside stages)"
_STAGE_NAMES = {s.value for s in Stage}
_STEP_PREFIX = DECODE_STEP_RANGE.split("{", 1)[0]


@define(kw_only=True, frozen=True)
class OpEvent:
    """One CPU-side profiler event (an operator call or a user range).

    Times in microseconds. ``self_device_us`` is the duration of the kernels
    this call launched directly (0 on CPU-only runs).
    """

    name: str = field(metadata={"help": "operator or range name"})
    parent: int | None = field(metadata={"help": "index of the enclosing event in the capture, or null"})
    self_cpu_us: float = field(metadata={"help": "CPU time minus that of child events, us"})
    cpu_total_us: float = field(metadata={"help": "CPU time including children, us"})
    self_device_us: float = field(metadata={"help": "kernel time launched directly by this call, us"})
    is_range: bool = field(metadata={"help": "true for user ranges (record_function), false for operators"})
    kernel_count: int = field(default=0, metadata={"help": "device kernels this call launched directly"})


@define(kw_only=True)
class ProfileCapture:
    """The profiler's CPU event tree plus the device kernel total, in a JSON-friendly form."""

    events: list[OpEvent] = field(factory=list, metadata={"help": "events; parent indices point into this list"})
    device_kernel_us: float = field(default=0.0, metadata={"help": "sum of all device kernel/memcpy time, us"})
    profiled_steps: int = field(default=0, metadata={"help": "profiler steps (passes) captured"})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON fixture)."""
        return {"events": [asdict(e) for e in self.events], "device_kernel_us": self.device_kernel_us,
                "profiled_steps": self.profiled_steps}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ProfileCapture:
        """Inverse of :meth:`to_dict`."""
        return cls(events=[OpEvent(**e) for e in raw["events"]], device_kernel_us=float(raw["device_kernel_us"]),
                   profiled_steps=int(raw.get("profiled_steps", 0)))

    def save(self, path: Path) -> None:
        """Write as JSON (gzip-compressed when the name ends in .gz)."""
        text = json.dumps(self.to_dict(), indent=None if path.suffix == ".gz" else 1)
        if path.suffix == ".gz":
            with gzip.open(path, "wt", encoding="utf-8") as fh:
                fh.write(text)
        else:
            path.write_text(text)

    @classmethod
    def load(cls, path: Path) -> ProfileCapture:
        """Read a file written by :meth:`save`."""
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return cls.from_dict(json.load(fh))
        return cls.from_dict(json.loads(path.read_text()))

    def merge(self, other: ProfileCapture) -> None:
        """Append another capture (events re-indexed)."""
        offset = len(self.events)
        for e in other.events:
            self.events.append(OpEvent(name=e.name, parent=None if e.parent is None else e.parent + offset,
                                       self_cpu_us=e.self_cpu_us, cpu_total_us=e.cpu_total_us,
                                       self_device_us=e.self_device_us, is_range=e.is_range,
                                       kernel_count=e.kernel_count))
        self.device_kernel_us += other.device_kernel_us
        self.profiled_steps += other.profiled_steps


def is_range_name(name: str) -> bool:
    """True for the project's range names and the profiler's step ranges."""
    return name in _STAGE_NAMES or name.startswith(_STEP_PREFIX) or name.startswith("ProfilerStep")


def capture_from_events(events: Iterable[Any], profiled_steps: int = 0) -> ProfileCapture:
    """Flatten ``torch.profiler.profile.events()`` (FunctionEvent objects) into a ProfileCapture.

    CPU events that are not async become OpEvents (user annotations and the
    project's range names as ranges); device events (kernels, memcpy,
    memset) only add to ``device_kernel_us``; device-side copies of user
    annotations are ignored.
    """
    from torch.autograd import DeviceType

    cpu_events: list[Any] = []
    device_us = 0.0
    for e in events:
        is_annotation = bool(getattr(e, "is_user_annotation", False)) or is_range_name(e.name)
        if e.device_type == DeviceType.CPU:
            if not getattr(e, "is_async", False):
                cpu_events.append(e)
        elif not is_annotation:
            device_us += float(e.time_range.end - e.time_range.start)
    # parents must precede children: order by start time, then by longer duration first
    cpu_events.sort(key=lambda e: (e.time_range.start, -(e.time_range.end - e.time_range.start)))
    index = {id(e): i for i, e in enumerate(cpu_events)}
    out: list[OpEvent] = []
    for e in cpu_events:
        parent = getattr(e, "cpu_parent", None)
        children = getattr(e, "cpu_children", [])
        cpu_total = float(e.time_range.end - e.time_range.start)
        self_cpu = cpu_total - sum(float(c.time_range.end - c.time_range.start) for c in children)
        kernels = getattr(e, "kernels", [])
        self_dev = float(sum(k.duration for k in kernels))
        out.append(OpEvent(
            name=str(e.name), parent=index.get(id(parent)) if parent is not None else None,
            self_cpu_us=max(0.0, self_cpu), cpu_total_us=cpu_total, self_device_us=self_dev,
            is_range=bool(getattr(e, "is_user_annotation", False)) or is_range_name(e.name),
            kernel_count=len(kernels),
        ))
    return ProfileCapture(events=out, device_kernel_us=device_us, profiled_steps=profiled_steps)


def stage_of(capture: ProfileCapture) -> list[str]:
    """Innermost enclosing stage name of every event (OUTSIDE_STAGES when none).

    A decode-step range counts as ``decode``; a stage range itself gets its
    own stage (or its parent's for a decode step).
    """
    labels: list[str | None] = [None] * len(capture.events)

    def own(e: OpEvent) -> str | None:
        if e.is_range and e.name in _STAGE_NAMES:
            return e.name
        if e.is_range and e.name.startswith(_STEP_PREFIX):
            return Stage.DECODE.value
        return None

    for start in range(len(capture.events)):
        chain: list[int] = []
        i: int | None = start
        label: str | None = None
        while i is not None and labels[i] is None and len(chain) <= len(capture.events):
            label = own(capture.events[i])
            chain.append(i)
            if label is not None:
                break
            i = capture.events[i].parent
        if label is None:
            label = labels[i] if i is not None and labels[i] is not None else OUTSIDE_STAGES
        for j in chain:
            labels[j] = own(capture.events[j]) or label
    return [lab or OUTSIDE_STAGES for lab in labels]


@define(kw_only=True)
class OperatorTable:
    """The operator table of one profiling pass."""

    basis: str = field(metadata={"help": "'cuda' (self device time) or 'cpu' (self CPU time)"})
    rows: list[OperatorSummary] = field(metadata={"help": "every operator, largest self time first"})
    total_self_ms: float = field(metadata={"help": "sum of the rows' self time on the basis, ms"})
    device_kernel_ms: float = field(metadata={"help": "all kernel time the profiler saw, ms (0 on CPU)"})
    unattributed_device_ms: float = field(metadata={"help": "kernel time launched outside any operator, ms"})
    stage_ms: dict[str, float] = field(metadata={"help": "self time per innermost stage (basis), ms"})
    category_ms: dict[str, float] = field(metadata={"help": "self time per operator category (basis), ms"})
    stage_category_ms: dict[str, dict[str, float]] = field(
        metadata={"help": "stage -> category -> self time (basis), ms"})
    profiled_steps: int = field(default=0, metadata={"help": "passes the profiler captured (active steps)"})
    stage_kernels: dict[str, int] = field(
        factory=dict, metadata={"help": "stage -> device kernels launched by its operators (all profiled passes)"})
    stage_host_ms: dict[str, float] = field(
        factory=dict, metadata={"help": "stage -> self CPU time of its operators, ms (host dispatch cost)"})

    def summary_dict(self) -> dict[str, Any]:
        """The table's totals without the rows (operator_table.json; rows are in metrics.json)."""
        return {"basis": self.basis, "profiled_steps": self.profiled_steps, "total_self_ms": self.total_self_ms,
                "device_kernel_ms": self.device_kernel_ms, "unattributed_device_ms": self.unattributed_device_ms,
                "stage_ms": self.stage_ms, "category_ms": self.category_ms,
                "stage_category_ms": self.stage_category_ms, "stage_kernels": self.stage_kernels,
                "stage_host_ms": self.stage_host_ms}

    def top(self, k: int) -> list[OperatorSummary]:
        """The ``k`` largest rows."""
        return self.rows[:k]

    def per_step(self, value_ms: float) -> float:
        """``value_ms`` divided by the number of profiled passes (1 when unknown)."""
        return value_ms / max(1, self.profiled_steps)


def build_operator_table(capture: ProfileCapture,
                         categorize: Callable[[str], OperatorCategory]) -> OperatorTable:
    """Aggregate operator calls by name; shares are of the summed SELF time.

    ``categorize`` maps an operator name to its category (the shared
    TargetOperatorList's ``categorize_op``).
    """
    basis = BASIS_CUDA if capture.device_kernel_us > 0 else BASIS_CPU
    stages = stage_of(capture)
    agg: dict[str, dict[str, float]] = {}
    stage_us: dict[str, float] = {}
    cat_us: dict[str, float] = {}
    stage_cat_us: dict[str, dict[str, float]] = {}
    stage_kernels: dict[str, int] = {}
    stage_host_us: dict[str, float] = {}
    categories: dict[str, OperatorCategory] = {}
    attributed_device_us = 0.0
    for e, stage in zip(capture.events, stages, strict=True):
        if e.is_range:
            # kernels launched directly inside a range (no operator) stay unattributed
            continue
        row = agg.setdefault(e.name, {"calls": 0.0, "dev": 0.0, "cpu": 0.0, "cpu_total": 0.0})
        row["calls"] += 1
        row["dev"] += e.self_device_us
        row["cpu"] += e.self_cpu_us
        row["cpu_total"] += e.cpu_total_us
        attributed_device_us += e.self_device_us
        if e.name not in categories:
            categories[e.name] = OperatorCategory(categorize(e.name))
        cat = categories[e.name].value
        t = e.self_device_us if basis == BASIS_CUDA else e.self_cpu_us
        stage_us[stage] = stage_us.get(stage, 0.0) + t
        stage_kernels[stage] = stage_kernels.get(stage, 0) + e.kernel_count
        stage_host_us[stage] = stage_host_us.get(stage, 0.0) + e.self_cpu_us
        cat_us[cat] = cat_us.get(cat, 0.0) + t
        stage_cat_us.setdefault(stage, {})
        stage_cat_us[stage][cat] = stage_cat_us[stage].get(cat, 0.0) + t
    key = "dev" if basis == BASIS_CUDA else "cpu"
    total_us = sum(r[key] for r in agg.values())
    rows = [
        OperatorSummary(
            op_name=name, category=categories[name], calls=int(r["calls"]),
            self_cuda_time_ms=r["dev"] / 1e3, self_cpu_time_ms=r["cpu"] / 1e3,
            total_cpu_time_ms=r["cpu_total"] / 1e3,
            share_of_total=min(1.0, r[key] / total_us) if total_us > 0 else 0.0,
        )
        for name, r in agg.items()
    ]
    rows.sort(key=lambda s: (-(s.self_cuda_time_ms if basis == BASIS_CUDA else s.self_cpu_time_ms), s.op_name))
    return OperatorTable(
        basis=basis, rows=rows, total_self_ms=total_us / 1e3,
        device_kernel_ms=capture.device_kernel_us / 1e3,
        unattributed_device_ms=max(0.0, capture.device_kernel_us - attributed_device_us) / 1e3,
        stage_ms={k: v / 1e3 for k, v in stage_us.items()},
        category_ms={k: v / 1e3 for k, v in sorted(cat_us.items(), key=lambda kv: -kv[1])},
        stage_category_ms={s: {c: v / 1e3 for c, v in cs.items()} for s, cs in stage_cat_us.items()},
        profiled_steps=capture.profiled_steps,
        # kernels are counted only where the capture recorded them (CUDA captures of this version):
        # an older capture or a CPU run gives no counts rather than zeros
        stage_kernels=stage_kernels if any(e.kernel_count for e in capture.events) else {},
        stage_host_ms={k: v / 1e3 for k, v in stage_host_us.items()},
    )


def stage_order(names: Sequence[str]) -> list[str]:
    """Stage names in execution order, then anything else (e.g. OUTSIDE_STAGES)."""
    order = [s.value for s in Stage]
    known = [s for s in order if s in names]
    return known + sorted(n for n in names if n not in order)
