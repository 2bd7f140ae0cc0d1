"""Host/device timeline model of one pass: stage times when the host issues kernels one by one.

Eager PyTorch issues every kernel from the host (Python, dispatcher, launch) and
the device runs them in order. The roofline gives the device side; on the
measured runs the host side dominates small stages, and host-device syncs
(transformers' SAM looks up its relative positions with host-built indices) stop
the host from running ahead. Adding the two (the "additive" calibration) cannot
express either effect, so this model runs two clocks over the layer tree::

    block of work (one layer's own kernels: device seconds D, analytic kernels K of which K_c are
    launched inside another aten call (no Python-level op of their own), host-only ops O, host discount
    X of bare tensor calls) issued in stage s from host time h, blocks in execution order:
        host:   h' = h + (K - 0.7 K_c - X + O) * c_s        (c_s: host seconds per op of stage s; a launch
                                                             inside a call costs 0.3 of a dispatched one; a
                                                             bare call its measured weight, X = (1 - weight)
                                                             per launch: BaseLayer.light_op)
        device: d' = max(max(d, h + (O + 1) c_s) + D + K g, h')
                                                            (starts after the host-only ops and the
                                                             first launch, ends after the last; g: the
                                                             device's gap between queued kernels, or
                                                             between kernels replayed from a CUDA graph
                                                             in a graph-replayed stage)
    n host syncs before a node's kernels:  h = max(h, d) + n * sync_s
    (a stage replayed from a CUDA graph: c_s = 0 and sync_s = 0; g, c_s and sync_s are per stage)

Stage times are what the profiler's CUDA events measure: the start event runs
on the device at max(d, h) when the host enters the stage, the end event at
max(d, h) when it leaves, so a stage whose host ran ahead starts late and one
that inherits a device backlog ends late.

Device seconds of a block = g_s * (sum over its categories of
max(compute_s / ce, memory_s / be) + kernels * kernel_floor_s): the calibrated
device model (efficiencies as in analytic/calibration.py) times a per-stage
factor g_s fitted on the stage's measured device time. memory_s counts the
bytes a layer moves in a measured access pattern (broadcast outer add, permuted
copy, fp32 casts and softmax: llm_perf_opt.hardware.patterns) at the pattern's
bandwidth, the calibration's ratio r_p to the copy bandwidth: bytes / (bw * r_p). A GEMM of a
shape the calibration has timed (matrix products tagged by the layers: llm_perf_opt.hardware.gemms)
takes that measured time per call instead of its roofline and floor, less the stream gap after each of
its kernels that the bench's queued timing holds (the K g term adds the gap back, at the scenario's g). The stages run in
the order of :class:`llm_perf_opt.vocab.Stage`; decode repeats the mean step
``decode_forwards`` times, or, given decode segments (groups of consecutive forwards, each a step at its
own mean KV length: AnalyticModel.decode_segment_steps), each segment's step its forwards' times: a step
is the longer of its host and device time, so a decode whose device time overtakes the host's as the cache
grows is slower than its mean step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from attrs import define, evolve, field

from llm_perf_opt.analytic.base import CC, IO, LAUNCH, TC, BaseLayer
from llm_perf_opt.analytic.calibration import EfficiencyModel, efficiency_for_stage
from llm_perf_opt.vocab import Stage


class HostModel(EfficiencyModel, Protocol):
    """An EfficiencyModel with the timeline model's host terms (a timeline Calibration)."""

    @property
    def kernel_floor_s(self) -> float:
        """Device seconds per kernel on top of the roofline."""
        ...

    def stage_sync_s(self, stage: str) -> float:
        """Host seconds per host-device sync in ``stage``."""
        ...

    @property
    def kernel_gap_s(self) -> float:
        """Device seconds between two kernels queued back to back on a stream (not in kernel durations; a
        call timed whole by the bench holds one per kernel)."""
        ...

    def stage_gap_s(self, stage: str) -> float:
        """Device seconds the timeline adds per kernel of ``stage``: :attr:`kernel_gap_s`, or the CUDA-graph
        replay gap in a graph-replayed stage."""
        ...

    def host_s_per_kernel(self, stage: str) -> float:
        """Host seconds to issue one analytic kernel of ``stage``."""
        ...

    def device_scale(self, stage: str) -> float:
        """Factor on the modelled device seconds of ``stage``."""
        ...


class Rates(Protocol):
    """The peaks a block's device time is computed against (RooflinePeaks, or a report's PeaksUsed)."""

    @property
    def tensor_core_flops_per_s(self) -> float: ...
    @property
    def cuda_core_flops_per_s(self) -> float: ...
    @property
    def memory_bytes_per_s(self) -> float: ...


@define(frozen=True)
class WorkBlock:
    """One layer's own work: device seconds, kernels, host syncs made before it, host-only ops
    (no kernel: they cost host time before the block's first launch)."""

    device_s: float
    kernels: float
    syncs_before: int = 0
    host_ops: float = 0.0
    #: of ``kernels``, those launched inside another aten call (no Python-level op of their own)
    inner_kernels: float = 0.0
    #: op-equivalents of host time the block's kernels do not cost (bare tensor calls: BaseLayer.light_op)
    host_discount: float = 0.0

    def host_ops_issued(self) -> float:
        """Host op-equivalents to issue the block: its kernels, less (1 - CUDA_LAUNCH_HOST_WEIGHT) of those
        launched inside another call and its host discount, plus its host-only ops."""
        return self.kernels - (1.0 - CUDA_LAUNCH_HOST_WEIGHT) * self.inner_kernels - self.host_discount + self.host_ops


@define(frozen=True)
class PassBlocks:
    """The blocks of one pass per stage (decode: ONE mean forward, run ``decode_forwards`` times; where
    ``decode_segments`` is given the timeline runs those instead: (blocks of one forward, forwards), whose
    forwards sum to ``decode_forwards``)."""

    stages: dict[str, list[WorkBlock]]
    decode_forwards: int
    decode_segments: tuple[tuple[list[WorkBlock], int], ...] = ()

    def __attrs_post_init__(self) -> None:
        held = sum(n for _, n in self.decode_segments)
        if self.decode_segments and (held != self.decode_forwards or Stage.DECODE.value not in self.stages):
            raise ValueError(f"decode segments hold {held} forwards, the pass {self.decode_forwards} "
                             f"(and {'a' if Stage.DECODE.value in self.stages else 'no'} decode stage)")


@define(kw_only=True, frozen=True)
class PassTimeline:
    """Simulated times of one pass (seconds)."""

    stage_s: dict[str, float] = field(metadata={"help": "stage -> seconds as CUDA events at its bounds measure"})
    decode_forward_s: float = field(metadata={"help": "mean seconds per decode forward"})
    total_s: float = field(metadata={"help": "first stage start to last stage end"})
    stage_end_backlog_s: dict[str, float] = field(factory=dict, metadata={
        "help": "stage -> device seconds still queued when the host has issued its last kernel (device clock "
                "minus host clock at the stage's end; 0 or a few microseconds: the device was "
                "waiting for the host, and the next stage's host work is not hidden)"})


def pattern_ratio_of(eff: EfficiencyModel, key: str) -> float:
    """Measured bandwidth of access pattern ``key`` relative to the copy bandwidth under ``eff``
    (1.0 when ``eff`` has no access-pattern ratios)."""
    lookup = getattr(eff, "pattern_bandwidth_ratio", None)
    return float(lookup(key)) if callable(lookup) else 1.0


def gemm_time_of(eff: EfficiencyModel, key: str) -> float | None:
    """Measured device seconds per call of GEMM ``key`` under ``eff`` (None when it has no GEMM times)."""
    lookup = getattr(eff, "gemm_time_s", None)
    if not callable(lookup):
        return None
    t = lookup(key)
    return None if t is None else float(t)


def _roofline_s(cat: str, vec: Sequence[float], peaks: Rates, eff: EfficiencyModel, io: float, floor_s: float
                ) -> float:
    compute = vec[TC] / peaks.tensor_core_flops_per_s + vec[CC] / peaks.cuda_core_flops_per_s
    memory = io / peaks.memory_bytes_per_s
    c = compute / eff.compute_efficiency(cat) if compute else 0.0
    m = memory / eff.bandwidth_efficiency(cat) if memory else 0.0
    return max(c, m) + vec[LAUNCH] * floor_s


def _own_device_s(layer: BaseLayer, peaks: Rates, eff: EfficiencyModel, floor_s: float,
                  call_gap_s: float = 0.0) -> float:
    """Device seconds of the node's own ops (one call, count not applied); bytes moved in an access
    pattern (``layer.pattern_io``) run at the pattern's measured fraction of the bandwidth; GEMMs and calls
    of a measured shape (``layer.gemm_ops``) take their measured time per call (which includes the floor)
    less ``call_gap_s`` per kernel of the call: the bench times calls queued back to back, so its time holds
    the gap after each of their kernels, which the timeline adds to every kernel itself."""
    t = 0.0
    for cat, vec in layer.ops.items():
        rest = list(vec)
        for key, g in layer.gemm_ops.get(cat, {}).items():
            per_call = gemm_time_of(eff, key)
            if per_call is None:
                continue
            t += max(0.0, per_call * layer.gemm_calls[cat][key] - g[LAUNCH] * call_gap_s)
            rest = [a - b for a, b in zip(rest, g, strict=True)]
        io = rest[IO]
        for key, nbytes in layer.pattern_io.get(cat, {}).items():
            io += nbytes * (1.0 / pattern_ratio_of(eff, key) - 1.0)
        t += _roofline_s(cat, rest, peaks, eff, max(0.0, io), floor_s)
    return t


def _own_kernels(layer: BaseLayer) -> float:
    return sum(vec[LAUNCH] for vec in layer.ops.values())


#: host cost of a launch made inside another aten call (cuBLAS/cub workspace memsets, index copies, the
#: second kernel of a two-kernel op, the copy of a reshape) relative to a Python-level op's: the CUDA
#: runtime's launch call alone.
#: Kernel census (reports/profile/h200-census/census-h200.json): cudaLaunchKernel & co. took 8.6 / 6.1 us of
#: host time per launch in base b1 / b4 decode, against 30.0 / 19.6 us per kernel for the whole stage: 0.29-0.31
CUDA_LAUNCH_HOST_WEIGHT = 0.3


#: a subtree's blocks walked with no sync pending before it, and the syncs it leaves pending after its last block
_Walked = tuple[list[WorkBlock], int]


def stage_blocks(tree: BaseLayer, peaks: Rates, eff: EfficiencyModel, *, kernel_floor_s: float = 0.0,
                 call_gap_s: float = 0.0, memo: dict[int, tuple[BaseLayer, _Walked]] | None = None
                 ) -> list[WorkBlock]:
    """The work of ``tree`` in execution order, one block per node with own work (repetitions expanded:
    a FOR-repeated composite runs its children ``count`` times; a repeated leaf is one block of ``count``
    times its work), each carrying the host syncs made before it. Device seconds are kernel time (no gaps):
    ``call_gap_s`` is the gap per kernel that the bench's timed calls hold (see :func:`_own_device_s`).

    A node held at several places (layers of equal work, decode steps sharing their unchanging parts) is
    walked once: ``memo`` (id -> (node, its walk)) keeps each walk, and may be shared by calls with the same
    ``peaks``, ``eff``, ``kernel_floor_s`` and ``call_gap_s``."""
    memo = {} if memo is None else memo

    def own(layer: BaseLayer, n: int, syncs: int) -> WorkBlock | None:
        d = _own_device_s(layer, peaks, eff, kernel_floor_s, call_gap_s) * n
        k = _own_kernels(layer) * n
        if d or k or layer.host_ops:
            return WorkBlock(d, k, syncs, layer.host_ops * n, layer.inner_launches * n, layer.host_discount * n)
        return None

    def walk(layer: BaseLayer) -> _Walked:
        hit = memo.get(id(layer))
        if hit is not None and hit[0] is layer:
            return hit[1]
        blocks: list[WorkBlock] = []
        syncs = 0
        if not layer.children:
            block = own(layer, layer.count, layer.host_syncs)
            if block is not None:
                blocks.append(block)
            syncs = 0 if block is not None else layer.host_syncs
        else:
            for _ in range(layer.count):
                syncs += layer.host_syncs
                block = own(layer, 1, syncs)
                if block is not None:
                    blocks.append(block)
                    syncs = 0
                for child in layer.children:
                    sub, after = walk(child)
                    if sub:
                        first = sub[0]
                        blocks.append(evolve(first, syncs_before=first.syncs_before + syncs) if syncs else first)
                        blocks.extend(sub[1:])
                        syncs = after
                    else:
                        syncs += after
        memo[id(layer)] = (layer, (blocks, syncs))
        return blocks, syncs

    blocks, syncs = walk(tree)
    blocks = list(blocks)
    if syncs:
        blocks.append(WorkBlock(0.0, 0.0, syncs))
    return blocks


def _own_host_ops(layer: BaseLayer) -> float:
    """Host op-equivalents of one call of ``layer``'s own work (as :meth:`WorkBlock.host_ops_issued`)."""
    return WorkBlock(0.0, _own_kernels(layer), 0, layer.host_ops, layer.inner_launches,
                     layer.host_discount).host_ops_issued()


def stage_host_work(tree: BaseLayer) -> tuple[float, int]:
    """(host ops, host syncs) the timeline charges for one pass of ``tree``: the ops are its kernels less
    (1 - CUDA_LAUNCH_HOST_WEIGHT) of those launched inside another call and less its host discount
    (BaseLayer.light_op), plus its host-only ops (the
    stage's host seconds are this times its per-op cost, plus the syncs times the sync cost), counted as
    :func:`stage_blocks` repeats them."""
    ops = 0.0
    syncs = 0

    def walk(layer: BaseLayer) -> None:
        nonlocal ops, syncs
        if not layer.children:
            syncs += layer.host_syncs
            ops += _own_host_ops(layer) * layer.count
            return
        for _ in range(layer.count):
            syncs += layer.host_syncs
            ops += _own_host_ops(layer)
            for child in layer.children:
                walk(child)

    walk(tree)
    return ops, syncs


def pass_blocks(stages: Mapping[Stage, BaseLayer], decode_forwards: int, peaks: Rates,
                eff: EfficiencyModel, *, kernel_floor_s: float = 0.0,
                device_scale: Mapping[str, float] | None = None, call_gap_s: float = 0.0,
                decode_segments: Sequence[tuple[BaseLayer, int]] = ()) -> PassBlocks:
    """Blocks of every stage of an AnalyticModel's ``stages`` (decode tree = one mean forward);
    ``device_scale``: stage -> factor on its blocks' device seconds (1 where absent); ``call_gap_s``: the gap
    per kernel held by the bench's timed calls (:func:`stage_blocks`); ``decode_segments``: (decode step,
    forwards) groups the timeline runs instead of the mean forward (AnalyticModel.decode_segment_steps)."""
    scale = device_scale or {}

    walked: dict[str, dict[int, tuple[BaseLayer, _Walked]]] = {}  # per stage: its trees share nodes

    def blocks(tree: BaseLayer, st: Stage) -> list[WorkBlock]:
        f = scale.get(st.value, 1.0)
        out = stage_blocks(tree, peaks, efficiency_for_stage(eff, st.value), kernel_floor_s=kernel_floor_s,
                           call_gap_s=call_gap_s, memo=walked.setdefault(st.value, {}))
        return out if f == 1.0 else [evolve(b, device_s=b.device_s * f) for b in out]

    out = {st.value: blocks(stages[st], st) for st in Stage if st in stages}
    segs = tuple((blocks(tree, Stage.DECODE), n) for tree, n in decode_segments) if Stage.DECODE in stages else ()
    return PassBlocks(out, max(0, decode_forwards), segs)


def _issue_terms(seq: Sequence[WorkBlock], c: float, gap: float) -> list[tuple[int, float, float, float]]:
    """Per block (syncs before it, host seconds to issue it, host seconds until its first kernel reaches the
    device, device seconds incl. the gaps) at ``c`` host seconds per op and ``gap`` device seconds per kernel."""
    out = []
    for b in seq:
        issue = b.host_ops_issued() * c
        # the first kernel reaches the device after the host-only ops and one launch
        first = (b.host_ops + 1.0) * c if b.kernels else issue
        out.append((b.syncs_before, issue, first, b.device_s + b.kernels * gap))
    return out


#: A max-plus map of the clocks: ((hh, hd), (dh, dd)) sends (h, d) to (max(h + hh, d + hd), max(h + dh, d + dd))
ClockMap = tuple[tuple[float, float], tuple[float, float]]
_NONE = float("-inf")


def _clock_map(terms: Sequence[tuple[int, float, float, float]], sync: float) -> ClockMap:
    """The map of issuing ``terms`` (:func:`_issue_terms`) once. Every update of the module doc is a max
    of the two clocks plus constants, so a sequence of them is one such map; each clock is tracked as its
    offsets from the starting h and d."""
    h = (0.0, _NONE)
    d = (_NONE, 0.0)
    for syncs, issue, first, dev in terms:
        if syncs:
            wait = syncs * sync
            h = (max(h[0], d[0]) + wait, max(h[1], d[1]) + wait)
        d = (max(max(d[0], h[0] + first) + dev, h[0] + issue), max(max(d[1], h[1] + first) + dev, h[1] + issue))
        h = (h[0] + issue, h[1] + issue)
    return h, d


def _then(a: ClockMap, b: ClockMap) -> ClockMap:
    """The map of ``a`` followed by ``b`` (a max-plus matrix product)."""
    return ((max(b[0][0] + a[0][0], b[0][1] + a[1][0]), max(b[0][0] + a[0][1], b[0][1] + a[1][1])),
            (max(b[1][0] + a[0][0], b[1][1] + a[1][0]), max(b[1][0] + a[0][1], b[1][1] + a[1][1])))


def _run_repeats(terms: Sequence[tuple[int, float, float, float]], repeats: int, h: float, d: float,
                 sync: float) -> tuple[float, float]:
    """The clocks after ``repeats`` runs of ``terms`` from ``h``, ``d``: the map of one run raised to the
    ``repeats``-th power by squaring (a 1,023-forward decode costs 10 squarings, not 1,023 runs)."""
    if repeats <= 0:
        return h, d
    step = _clock_map(terms, sync)
    total: ClockMap = ((0.0, _NONE), (_NONE, 0.0))  # the identity
    n = repeats
    while n:
        if n & 1:
            total = _then(total, step)
        n >>= 1
        if n:
            step = _then(step, step)
    return max(h + total[0][0], d + total[0][1]), max(h + total[1][0], d + total[1][1])


def run_timeline(blocks: PassBlocks, host_s_per_kernel: Mapping[str, float], sync_s: float | Mapping[str, float],
                 gap_s: float | Mapping[str, float] = 0.0) -> PassTimeline:
    """Run the two clocks over ``blocks`` (see the module doc); host costs per stage in s/kernel, ``sync_s``
    host seconds per sync and ``gap_s`` device seconds between queued kernels on top of the blocks' device
    time (each one figure, or stage -> figure)."""
    h = d = 0.0
    stage_s: dict[str, float] = {}
    backlog: dict[str, float] = {}
    first_start: float | None = None
    end = 0.0
    for stage in Stage:
        seq: Sequence[WorkBlock] | None = blocks.stages.get(stage.value)
        if not seq:
            continue
        runs: Sequence[tuple[Sequence[WorkBlock], int]] = (
            blocks.decode_segments if stage is Stage.DECODE and blocks.decode_segments
            else ((seq, blocks.decode_forwards if stage is Stage.DECODE else 1),))
        if sum(n for _, n in runs) <= 0:
            continue
        c = host_s_per_kernel[stage.value]
        sync = sync_s if isinstance(sync_s, (int, float)) else sync_s[stage.value]
        gap = gap_s if isinstance(gap_s, (int, float)) else gap_s[stage.value]
        start = max(d, h)
        if first_start is None:
            first_start = start
        for run_seq, repeats in runs:
            h, d = _run_repeats(_issue_terms(run_seq, c, gap), repeats, h, d, sync)
        end = max(d, h)
        stage_s[stage.value] = end - start
        backlog[stage.value] = d - h
    dec = stage_s.get(Stage.DECODE.value, 0.0)
    return PassTimeline(stage_s=stage_s, decode_forward_s=dec / blocks.decode_forwards if blocks.decode_forwards else 0.0,
                        total_s=end - (first_start or 0.0), stage_end_backlog_s=backlog)


def simulate_pass(stages: Mapping[Stage, BaseLayer], decode_forwards: int, peaks: Rates,
                  model: HostModel, decode_segments: Sequence[tuple[BaseLayer, int]] = ()) -> PassTimeline:
    """Stage times of one pass of an AnalyticModel's ``stages`` under a timeline calibration
    (``decode_segments``: see :func:`pass_blocks`)."""
    blocks = pass_blocks(stages, decode_forwards, peaks, model, kernel_floor_s=model.kernel_floor_s,
                         device_scale={st.value: model.device_scale(st.value) for st in Stage},
                         call_gap_s=model.kernel_gap_s, decode_segments=decode_segments)
    host = {st.value: model.host_s_per_kernel(st.value) for st in Stage}
    return run_timeline(blocks, host, {st.value: model.stage_sync_s(st.value) for st in Stage},
                        {st.value: model.stage_gap_s(st.value) for st in Stage})
