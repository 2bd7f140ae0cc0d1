"""Build the AnalyticModelReport (data model of :mod:`llm_perf_opt.data.analytic`) from the layer trees.

Module ids: ``request`` (root) -> one node per stage (id = the stage string) ->
``<stage>/<module path>`` (e.g. ``prefill/model.language.layers.3.mlp.experts``).
A module called twice in one stage (SAM on the tiles, then on the global
view) is one node whose work and time are the sum of both calls. The CLIP
layers are one node ``model.vision_model.transformer.layers.*`` with
repetition FOR x L. Decode nodes hold ALL decode forwards (repetition FOR x
N-1): FLOPs/bytes = steps x the mean-length step (exact, linear in L), time =
the closed-form sum over steps.
"""

from __future__ import annotations

from datetime import UTC, datetime

from attrs import evolve

from llm_perf_opt.analytic.base import CC, IO, LAUNCH, TC, BaseLayer, CategoryCosts, TreeMemo
from llm_perf_opt.analytic.calibration import (
    PURE_ROOFLINE,
    Calibration,
    EfficiencyModel,
    efficiency_for_stage,
)
from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.analytic.roofline import RooflinePeaks, TimeParts, node_times, summed_node_times
from llm_perf_opt.analytic.timeline_model import simulate_pass
from llm_perf_opt.data.analytic import (
    AnalyticModelReport,
    AnalyticModuleNode,
    DecodeTotals,
    DeepSeekOCRModelSpec,
    MemoryFootprint,
    ModuleMetricsSnapshot,
    OperatorMetrics,
    PeaksUsed,
    WorkTotals,
)
from llm_perf_opt.data.common import Repetition
from llm_perf_opt.vocab import OperatorCategory, Stage

ROOT_ID = "request"


class _Acc:
    """Accumulator of one report node (a module path in one stage)."""

    __slots__ = ("module_id", "name", "class_name", "stage", "parent_id", "children", "repetition", "count",
                 "cats", "weight_bytes", "activation_bytes", "kv_bytes", "time")

    def __init__(self, module_id: str, name: str, class_name: str, stage: Stage | None, parent_id: str | None,
                 repetition: Repetition = Repetition.NONE, count: int = 1) -> None:
        self.module_id, self.name, self.class_name, self.stage = module_id, name, class_name, stage
        self.parent_id = parent_id
        self.children: list[str] = []
        self.repetition, self.count = repetition, count
        self.cats: CategoryCosts = {}
        self.weight_bytes = 0.0
        self.activation_bytes = 0.0
        self.kv_bytes = 0.0
        self.time = TimeParts()

    def add_work(self, cats: CategoryCosts, scale: float) -> None:
        for cat, vec in cats.items():
            cur = self.cats.setdefault(cat, [0.0, 0.0, 0.0, 0.0])
            for i in range(4):
                cur[i] += vec[i] * scale

    def totals(self) -> tuple[float, float, float]:
        tc = sum(v[TC] for v in self.cats.values())
        cc = sum(v[CC] for v in self.cats.values())
        io = sum(v[IO] for v in self.cats.values())
        return tc, cc, io

    def snapshot(self) -> ModuleMetricsSnapshot:
        tc, cc, io = self.totals()
        total = tc + cc
        breakdown = [
            OperatorMetrics(category=cat, tensor_core_flops=v[TC], cuda_core_flops=v[CC], io_bytes=v[IO],
                            share_of_module_flops=min(1.0, (v[TC] + v[CC]) / total) if total else 0.0,
                            kernel_launches=v[LAUNCH])
            for cat, v in sorted(self.cats.items(), key=lambda kv: -(kv[1][TC] + kv[1][CC] + kv[1][IO] * 1e-9))
        ]
        return ModuleMetricsSnapshot(
            module_id=self.module_id, tensor_core_flops=tc, cuda_core_flops=cc, io_bytes=io,
            arithmetic_intensity_flops_per_byte=total / io if io else 0.0, weight_bytes=self.weight_bytes,
            activation_bytes=self.activation_bytes, kv_cache_bytes=self.kv_bytes,
            roofline_time_ms=self.time.time_s * 1e3, bound=self.time.bound, operator_breakdown=breakdown)

    def node(self) -> AnalyticModuleNode:
        rep = self.repetition if self.count > 1 else Repetition.NONE
        return AnalyticModuleNode(module_id=self.module_id, name=self.name, class_name=self.class_name,
                                  stage=self.stage, parent_id=self.parent_id, children_ids=list(self.children),
                                  repetition=rep, repetition_count=self.count if rep != Repetition.NONE else 1)


def _module_name(path: str, layer: BaseLayer) -> str:
    if layer.count > 1 and layer.repetition == Repetition.FOR:
        return f"{path}.*" if not path.endswith("*") else path
    return path


def _collect(stage: Stage, layer: BaseLayer, prefix: str, parent: _Acc, accs: dict[str, _Acc],
             times: dict[int, TimeParts], scale: float, depth: int, max_depth: int | None, memo: TreeMemo,
             mult: int = 1) -> None:
    """Merge ``layer`` into the accumulator of its module id.

    ``scale``: decode steps (work of one mean step x steps; times are already summed over steps);
    ``mult``: product of the repetition counts of the ancestors (a FOR node's children hold all repeats).
    """
    path = layer.path_in(prefix)
    name = _module_name(path, layer)
    module_id = f"{stage.value}/{name}"
    acc = accs.get(module_id)
    if acc is None:
        rep = layer.repetition if layer.count > 1 else Repetition.NONE
        acc = _Acc(module_id, name, layer.module_type, stage, parent.module_id, rep, layer.count)
        accs[module_id] = acc
        parent.children.append(module_id)
    acc.add_work(layer.category_costs(memo), scale * mult)
    acc.time.add(times[id(layer)], float(mult))
    acc.weight_bytes = max(acc.weight_bytes, layer.forward_memory_weight(memo)
                           * (mult if layer.repetition != Repetition.PARFOR else 1))
    acc.activation_bytes = max(acc.activation_bytes, layer.forward_memory_activation(memo))
    acc.kv_bytes += layer.forward_memory_kvcache(memo) * mult
    if max_depth is not None and depth >= max_depth:
        return
    child_prefix = name if name.endswith("*") else path
    child_mult = mult * layer.count
    for child in layer.children:
        _collect(stage, child, child_prefix, acc, accs, times, scale, depth + 1, max_depth, memo, child_mult)


def _totals(acc: _Acc) -> WorkTotals:
    tc, cc, io = acc.totals()
    return WorkTotals(tensor_core_flops=tc, cuda_core_flops=cc, io_bytes=io, time_ms=acc.time.time_s * 1e3)


def peaks_used(peaks: RooflinePeaks, eff: EfficiencyModel) -> PeaksUsed:
    """PeaksUsed record of the report."""
    efficiencies: dict[OperatorCategory, float] = {}
    if isinstance(eff, Calibration):
        efficiencies = {OperatorCategory(k): min(v, 1.0) for k, v in eff.compute_efficiencies.items()}
    return PeaksUsed(source=peaks.source, source_ref=peaks.source_ref,
                     tensor_core_flops_per_s=peaks.tensor_core_flops_per_s,
                     cuda_core_flops_per_s=peaks.cuda_core_flops_per_s, memory_bytes_per_s=peaks.memory_bytes_per_s,
                     memory_capacity_bytes=peaks.memory_capacity_bytes,
                     launch_overhead_ms=eff.launch_overhead_s * 1e3, efficiencies=efficiencies)


#: Largest batch that ran with PyTorch's default caching allocator over ``max_batch_size`` under the catalogue's
#: capacity (what what-if and the unified report print), rounded down: 0.724-0.856 over Small, Base, Large and
#: Gundam (eager) and Base (sdpa) on the H200. With PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True the eager
#: passes ran to 96-98% of it and Base sdpa to 99% (the rest: the CUDA context and the footprint's 0-1%), so the
#: gap is the allocator's fragmentation, not the footprint (reports/hardware/h200/memory-batches*.json,
#: scripts/gpu/memory_batches.py; docs/results-h200.md sections 20 and 21, with the figures of section 27).
DEFAULT_ALLOCATOR_BATCH_FRACTION = 0.72


def memory_footprint(model: AnalyticModel, capacity_bytes: float | None) -> MemoryFootprint:
    """Weights, final KV cache, activation peak and the device peak of ``model``'s workload (bytes), and the
    largest batch whose peak fits ``capacity_bytes`` (None when no capacity is given).

    The device peak is the weights plus the largest, over the stages, of the stage's activation peak and the
    KV cache live while it runs: none in the vision stages, the prompt's after prefill, the final one at the
    end of decode. The activations and the KV cache scale with the batch, the weights do not.
    """
    weights = model.weight_bytes_total()
    kv_final = model.kv_cache_bytes_final()
    live = _stage_live_bytes(model)
    acts = {stage: t.forward_memory_activation(model.memo) for stage, t in model.stages.items()}
    peak_stage = max(live, key=lambda st: live[st])
    max_batch = None
    if capacity_bytes:
        # bytes per page from 2 pages or more: over one view SAM's global call copies no qkv, so one page
        # would understate every larger batch
        per_seq = max(_live_per_page(model, live, max(model.shape.batch, 2)).values())
        max_batch = max(int((capacity_bytes - weights) // per_seq), 0) if per_seq > 0 else None
        if max_batch == 0 and weights + max(_live_per_page(model, live, 1).values()) <= capacity_bytes:
            max_batch = 1  # one page needs less than a page of a larger batch
    return MemoryFootprint(weights_bytes=weights, kv_cache_bytes=kv_final, activation_peak_bytes=max(acts.values()),
                           peak_stage=peak_stage.value, peak_bytes=weights + live[peak_stage], max_batch_size=max_batch)


def _stage_live_bytes(model: AnalyticModel) -> dict[Stage, float]:
    """Per stage: its activation peak plus the KV cache live while it runs (bytes)."""
    kv_live = {Stage.PREFILL: model.kv_cache_bytes_after_prefill(), Stage.DECODE: model.kv_cache_bytes_final()}
    return {stage: t.forward_memory_activation(model.memo) + kv_live.get(stage, 0.0)
            for stage, t in model.stages.items()}


def _live_per_page(model: AnalyticModel, live: dict[Stage, float], pages: int) -> dict[Stage, float]:
    """Per stage: live bytes per page in a batch of ``pages`` pages. The decoder's bytes are linear in the
    batch (``live``, the model's, over its batch); the vision stages are built again for ``pages`` pages
    when the model has another batch (AnalyticModel.vision_stages_at)."""
    b = model.shape.batch
    per_page = {stage: v / b for stage, v in live.items()}
    if pages != b:
        per_page.update({stage: t.forward_memory_activation() / pages
                         for stage, t in model.vision_stages_at(pages).items()})
    return per_page


#: the note of a report computed without a calibration (any other ``efficiencies:`` note names the one used)
PURE_ROOFLINE_NOTE = "efficiencies: pure roofline (1.0), no launch cost"


def build_report(model: AnalyticModel, peaks: RooflinePeaks, *, efficiency: EfficiencyModel | None = None,
                 report_id: str | None = None, max_depth: int | None = None,
                 generated_at: datetime | None = None, extra_notes: list[str] | None = None) -> AnalyticModelReport:
    """AnalyticModelReport of ``model`` on ``peaks``.

    ``max_depth``: module-tree depth below each stage kept in ``modules`` /
    ``snapshots`` (None = every node; 1 = the top modules only, for sweeps).
    """
    eff = efficiency or PURE_ROOFLINE
    memo = model.memo
    shape = model.shape
    workload = model.workload
    root = _Acc(ROOT_ID, ROOT_ID, "DeepseekOCRForCausalLM", None, None)
    decode_note = ""
    accs: dict[str, _Acc] = {ROOT_ID: root}
    stage_accs: dict[Stage, _Acc] = {}
    for stage, tree in model.stages.items():
        seff = efficiency_for_stage(eff, stage.value)  # a calibration may carry a per-stage launch cost
        if stage == Stage.DECODE:
            steps = shape.decode_forwards
            if steps <= 0:
                continue
            first = model.decode_step(shape.decode_kv_len(0))
            last = model.decode_step(shape.decode_kv_len(steps - 1))
            summed = summed_node_times(first, last, steps, peaks, seff)
            # map the summed times (keyed by nodes of `first`) onto the mean tree's nodes
            times: dict[int, TimeParts] = {}
            for (_, a), (_, m) in zip(first.walk(), tree.walk(), strict=True):
                times[id(m)] = summed[id(a)]
            scale = float(steps)
            rep, count = Repetition.FOR, steps
            step_ms = (node_times(first, peaks, seff)[id(first)].time_s * 1e3,
                       node_times(last, peaks, seff)[id(last)].time_s * 1e3)
            decode_note = (f"decode step time: {step_ms[0]:.4f} ms at KV length {shape.decode_kv_len(0)} (first), "
                           f"{step_ms[1]:.4f} ms at {shape.decode_kv_len(steps - 1)} (last)")
        else:
            times = node_times(tree, peaks, seff)
            scale = 1.0
            rep, count = Repetition.NONE, 1
        sacc = _Acc(stage.value, stage.value, type(tree).__name__, stage, ROOT_ID, rep, count)
        kv_tree = tree
        accs[stage.value] = sacc
        root.children.append(stage.value)
        sacc.add_work(tree.category_costs(memo), scale)
        sacc.time.add(times[id(tree)])
        sacc.weight_bytes = tree.forward_memory_weight(memo)
        sacc.activation_bytes = tree.forward_memory_activation(memo)
        stage_accs[stage] = sacc
        for child in tree.children:
            _collect(stage, child, "", sacc, accs, times, scale, 1, max_depth, memo)
        if stage == Stage.DECODE:
            kv_tree = last  # decode nodes report the KV cache held after the LAST step
            for path, node in last.walk():
                mid = f"{stage.value}/{path}"
                if mid in accs and node.kvcache_bytes + sum(c.forward_memory_kvcache(memo) for c in node.children):
                    accs[mid].kv_bytes = node.forward_memory_kvcache(memo)
        sacc.kv_bytes = kv_tree.forward_memory_kvcache(memo)
        root.add_work(sacc.cats, 1.0)
        root.time.add(sacc.time)

    memory = memory_footprint(model, peaks.memory_capacity_bytes)
    root.weight_bytes = memory.weights_bytes
    root.activation_bytes = memory.activation_peak_bytes
    root.kv_bytes = memory.kv_cache_bytes

    stage_totals = {stage: _totals(acc) for stage, acc in stage_accs.items()}
    if Stage.DECODE in stage_accs:
        dec = stage_accs[Stage.DECODE]
        tot = _totals(dec)
        mean_tree = model.stages[Stage.DECODE]
        mean_times = node_times(mean_tree, peaks, efficiency_for_stage(eff, Stage.DECODE.value))[id(mean_tree)]
        per_token = WorkTotals(tensor_core_flops=mean_tree.forward_tensor_core_flops(),
                               cuda_core_flops=mean_tree.forward_cuda_core_flops(),
                               io_bytes=mean_tree.forward_cal_io(), time_ms=mean_times.time_s * 1e3)
        decode = DecodeTotals(tokens=shape.new_tokens, per_token=per_token, total=tot)
    else:
        zero = WorkTotals(tensor_core_flops=0.0, cuda_core_flops=0.0, io_bytes=0.0, time_ms=0.0)
        decode = DecodeTotals(tokens=shape.new_tokens, per_token=zero, total=zero)

    model_totals = _totals(root)
    timeline_note = ""
    if isinstance(eff, Calibration) and eff.timeline:
        sim = simulate_pass(model.stages, shape.decode_forwards, peaks, eff,
                            decode_segments=model.decode_segment_steps())
        stage_totals = {st: evolve(tot, time_ms=sim.stage_s.get(st.value, 0.0) * 1e3)
                        for st, tot in stage_totals.items()}
        decode = DecodeTotals(tokens=decode.tokens, per_token=evolve(decode.per_token,
                                                                     time_ms=sim.decode_forward_s * 1e3),
                              total=evolve(decode.total, time_ms=sim.stage_s.get(Stage.DECODE.value, 0.0) * 1e3))
        model_totals = evolve(model_totals, time_ms=sim.total_s * 1e3)
        timeline_note = ("stage and model times: host/device timeline model of the calibration (host issue cost "
                         "per kernel, syncs, device backlog); module rows: device time of the calibrated roofline")
    notes = [
        f"peaks: {peaks.source.value} ({peaks.source_ref})",
        (PURE_ROOFLINE_NOTE if eff is PURE_ROOFLINE
         else f"efficiencies: {eff.describe() if isinstance(eff, Calibration) else type(eff).__name__}"),
        "FLOPs = 2 x MACs; tensor-core FLOPs are what torch.utils.flop_counter counts (matmuls, convs, attention)",
        f"attention modelled as {workload.attention.value}: "
        + ("scores materialised in memory" if workload.attention.value == "eager" else "fused kernel, scores on chip")
        + ("; causal upper triangle skipped" if workload.attention.value == "flash" else
           "; full S_q x S_k score rectangle computed"),
        "prefill stage = the decoder pass only (the measured 'prefill' range also holds the three vision stages);"
        " logits for the last position only",
        f"decode: {shape.new_tokens} new tokens = {shape.decode_forwards} decoder forwards (the first token comes"
        f" from prefill); KV length {shape.decode_kv_len(0)} .. {shape.final_kv_len}",
        "routed-expert weight traffic: " + ("routing counts given" if model.routing_prefill or model.routing_decode
                                            else "expected distinct experts E*(1-(1-k/E)^T) (uniform routing)"),
        "activation memory is the peak of live tensors (largest stage), not a sum; KV cache at the end of decode",
    ]
    if decode_note:
        notes.append(decode_note)
    if timeline_note:
        notes.append(timeline_note)
    notes.extend(extra_notes or [])
    rid = report_id or f"analytic-{workload.profile_id}-{peaks.gpu_key}"
    return AnalyticModelReport(
        report_id=rid,
        model=DeepSeekOCRModelSpec.from_config(model.config, parameter_count=int(memory.weights_bytes // model.weight_bytes)),
        workload=workload, gpu_key=peaks.gpu_key, peaks=peaks_used(peaks, eff),
        modules=[a.node() for a in accs.values()], snapshots=[a.snapshot() for a in accs.values()],
        stage_totals=stage_totals, decode=decode, model_totals=model_totals, memory=memory,
        generated_at=generated_at or datetime.now(UTC), notes=notes)
