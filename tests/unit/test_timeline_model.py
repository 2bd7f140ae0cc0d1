"""The host/device timeline model: the two clocks on hand-computed cases, blocks from a layer tree,
calibration files with the timeline terms, and stage times of a report built under one."""

from __future__ import annotations

import pytest

from llm_perf_opt.analytic.base import BaseLayer, CompositeLayer, OpGroup
from llm_perf_opt.analytic.calibration import Calibration, CalibrationError
from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.analytic.report import build_report
from llm_perf_opt.analytic.roofline import RooflinePeaks
from llm_perf_opt.analytic.timeline_model import (
    PassBlocks,
    WorkBlock,
    run_timeline,
    simulate_pass,
    stage_blocks,
)
from llm_perf_opt.analytic.workloads import get_profile
from llm_perf_opt.hardware.bench import effective_peaks
from llm_perf_opt.hardware.catalog import load_catalog
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.vocab import DType, OperatorCategory, Stage

SAM, CLIP, DEC = Stage.VISION_SAM.value, Stage.VISION_CLIP.value, Stage.DECODE.value


def _host(**per_stage: float) -> dict[str, float]:
    out = {s.value: 1.0 for s in Stage}
    out.update({k.replace("_", "."): v for k, v in per_stage.items()})
    return out


def test_host_bound_block_takes_its_issue_time() -> None:
    # 10 kernels at 1 s each, 5 s of device work: the device waits for the host
    t = run_timeline(PassBlocks({SAM: [WorkBlock(5.0, 10.0)]}, 0), _host(), 0.0)
    assert t.stage_s[SAM] == pytest.approx(10.0)


def test_device_bound_block_starts_after_the_first_launch() -> None:
    t = run_timeline(PassBlocks({SAM: [WorkBlock(10.0, 2.0)]}, 0), _host(), 0.0)
    assert t.stage_s[SAM] == pytest.approx(11.0)  # 1 s to issue the first kernel, then 10 s of device work


def test_a_sync_stops_the_host_from_running_ahead() -> None:
    free = PassBlocks({SAM: [WorkBlock(10.0, 1.0), WorkBlock(0.0, 5.0)]}, 0)
    synced = PassBlocks({SAM: [WorkBlock(10.0, 1.0), WorkBlock(0.0, 5.0, syncs_before=1)]}, 0)
    # without the sync the second block's 5 s of issue hide under the first block's device time
    assert run_timeline(free, _host(), 0.0).stage_s[SAM] == pytest.approx(11.0)
    # with it the host waits until 11 s, pays 0.5 s for the sync, then issues for 5 s
    assert run_timeline(synced, _host(), 0.5).stage_s[SAM] == pytest.approx(16.5)


def test_a_device_backlog_hides_the_next_stage_launches() -> None:
    blocks = PassBlocks({SAM: [WorkBlock(10.0, 1.0)], CLIP: [WorkBlock(1.0, 5.0)]}, 0)
    t = run_timeline(blocks, _host(), 0.0)
    # SAM leaves the device busy until 11 s while the host is at 1 s; CLIP's issue (1..6 s) is hidden and
    # its range (start event at 11 s) measures only its own device second
    assert t.stage_s[SAM] == pytest.approx(11.0)
    assert t.stage_s[CLIP] == pytest.approx(1.0)
    assert t.total_s == pytest.approx(12.0)
    # the backlog at each stage's end: SAM's 10 s (device at 11, host at 1); CLIP's 6 s (device at 12, host at 6)
    assert t.stage_end_backlog_s == pytest.approx({SAM: 10.0, CLIP: 6.0})
    # a host-bound CLIP (five launches of 1 s host time each for 0.5 s of kernels): its kernels run as they are
    # issued, so nothing is left queued when the host is done
    slow = run_timeline(PassBlocks({SAM: [WorkBlock(1.0, 1.0)], CLIP: [WorkBlock(0.5, 5.0)]}, 0), _host(), 0.0)
    assert slow.stage_end_backlog_s[CLIP] == pytest.approx(0.0)


def test_decode_repeats_the_mean_forward() -> None:
    blocks = PassBlocks({DEC: [WorkBlock(0.5, 3.0)]}, 4)
    t = run_timeline(blocks, _host(decode=0.25), 0.0)
    assert t.stage_s[DEC] == pytest.approx(4 * 0.75)
    assert t.decode_forward_s == pytest.approx(0.75)


def _leaf(name: str, launches: float, io: float, syncs: int = 0) -> BaseLayer:
    leaf = OpGroup(name, Stage.VISION_SAM, weight_dtype_bytes=2)
    leaf.op(OperatorCategory.MEMORY, io_bytes=io, launches=launches)
    leaf.host_syncs = syncs
    return leaf


def test_blocks_follow_execution_order_repetitions_and_syncs() -> None:
    root = CompositeLayer("root", Stage.VISION_SAM, weight_dtype_bytes=2)
    root.add(_leaf("a", 2, 100.0))
    rep = CompositeLayer("rep", Stage.VISION_SAM, weight_dtype_bytes=2, count=3)
    rep.add(_leaf("b", 1, 10.0, syncs=2))
    rep.add(_leaf("c", 4, 0.0))
    root.add(rep)
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get("h100-sxm")), DType.BF16)
    bw = peaks.memory_bytes_per_s
    blocks = stage_blocks(root, peaks, Calibration(gpu_key="x"))
    assert [(round(b.device_s * bw, 9), b.kernels, b.syncs_before) for b in blocks] == (
        [(100.0, 2.0, 0)] + [(10.0, 1.0, 2), (0.0, 4.0, 0)] * 3)


def _synced_part(name: str) -> BaseLayer:
    """A FOR-repeated composite whose blocks carry syncs in and out: a sync-only leaf first (its syncs move to
    the next block), work, and a sync-only leaf last (its syncs pass to whatever follows the part)."""
    part = CompositeLayer(name, Stage.VISION_SAM, weight_dtype_bytes=2, count=2)
    part.host_syncs = 1
    part.add(_leaf("pre", 0, 0.0, syncs=3))
    part.add(_leaf("work", 2, 50.0))
    part.add(_leaf("post", 0, 0.0, syncs=5))
    return part


def test_a_node_held_at_several_places_gives_the_blocks_of_distinct_copies() -> None:
    """stage_blocks walks a node held twice once (its memo) and must give what two equal copies give, syncs
    pending before and after it included; node_times likewise."""
    from llm_perf_opt.analytic.roofline import node_times

    def tree(shared: bool) -> BaseLayer:
        root = CompositeLayer("root", Stage.VISION_SAM, weight_dtype_bytes=2)
        one = _synced_part("p")
        root.add(_leaf("a", 1, 10.0, syncs=7))
        root.add(one)
        root.add(_leaf("gap", 0, 0.0, syncs=11))
        root.add(one if shared else _synced_part("p"))
        root.add(_leaf("b", 1, 20.0))
        root.add(_leaf("end", 0, 0.0, syncs=13))
        return root

    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get("h100-sxm")), DType.BF16)
    cal = Calibration(gpu_key="x")
    shared, copies = tree(True), tree(False)
    assert shared.children[1] is shared.children[3] and copies.children[1] is not copies.children[3]
    got = stage_blocks(shared, peaks, cal)
    assert got == stage_blocks(copies, peaks, cal)
    # a, then per repeat of each part: work (its syncs: the part's 1 + pre's 3, plus post's 5 of the repeat
    # before, or the 11 between the parts), then b, then the trailing 13
    assert [(b.kernels, b.syncs_before) for b in got] == [
        (1.0, 7), (2.0, 4), (2.0, 9), (2.0, 20), (2.0, 9), (1.0, 5), (0.0, 13)]
    memo: dict = {}
    assert stage_blocks(shared, peaks, cal, memo=memo) == got and stage_blocks(shared, peaks, cal, memo=memo) == got
    t_shared, t_copies = node_times(shared, peaks), node_times(copies, peaks)
    io = 10.0 + 2 * 2 * 50.0 + 20.0  # a, both parts' two repeats, b (bytes)
    assert t_shared[id(shared)].time_s == t_copies[id(copies)].time_s == pytest.approx(io / peaks.memory_bytes_per_s)


def test_decoder_layers_of_equal_work_hold_the_same_nodes() -> None:
    """The dense layer and the MoE layers each build their parts once per forward, every layer holds the
    forward's one attention node; layers with routing counts keep their own MoE."""
    model = AnalyticModel(DeepseekOCRConfig.default(), get_profile("dsocr-base-v1"))
    layers = [c for c in model.stages[Stage.PREFILL].children if c.name.startswith("model.language.layers.")]
    assert len(layers) == model.config.language.num_hidden_layers
    assert len({id(layer.children[1]) for layer in layers}) == 1  # self_attn
    mlps = {id(layer.children[-2]) for layer in layers}
    assert len(mlps) == 2  # the dense MLP of layer 0, the MoE of the others
    experts = model.config.language.n_routed_experts
    counted = AnalyticModel(DeepseekOCRConfig.default(), get_profile("dsocr-base-v1"),
                            routing_prefill={i: [1] * experts for i in range(1, len(layers))})
    layers = [c for c in counted.stages[Stage.PREFILL].children if c.name.startswith("model.language.layers.")]
    assert len({id(layer.children[-2]) for layer in layers}) == len(layers)
    # SAM's blocks: one built per window kind, the others renamed twins holding its children
    (sam,) = model.stages[Stage.VISION_SAM].children
    blocks = [c for c in sam.children if c.name.startswith("layers.")]
    assert [b.name for b in blocks] == [f"layers.{i}" for i in range(model.config.sam.depth)]
    assert len({id(b) for b in blocks}) == len(blocks)
    assert len({tuple(id(c) for c in b.children) for b in blocks}) == 2  # windowed, global
    paths = [path for path, _ in sam.walk()]
    assert len(paths) == len(set(paths))


@pytest.mark.parametrize("mode,batch,routed", [("gundam", 2, False), ("small", 3, True)])
def test_a_model_with_shared_nodes_reports_what_one_without_them_reports(
        monkeypatch: pytest.MonkeyPatch, mode: str, batch: int, routed: bool) -> None:
    """The whole report, roofline and timeline, of the model as built (layers of equal work holding the same
    nodes, SAM's blocks as renamed twins) equals that of the same model with every node built on its own."""
    import copy

    import llm_perf_opt.analytic.model as model_mod
    from llm_perf_opt.analytic.workloads import with_overrides
    from llm_perf_opt.data.io import to_dict

    cfg = DeepseekOCRConfig.default()
    wl = with_overrides(get_profile("dsocr-base-v1"), mode=mode, batch_size=batch, max_new_tokens=40)
    experts = cfg.language.n_routed_experts
    routing = {i: [(i + j) % 3 for j in range(experts)] for i in (1, 2)} if routed else None
    from datetime import UTC, datetime
    from pathlib import Path

    from llm_perf_opt.analytic.calibration import load_calibration

    root = Path(__file__).resolve().parents[2]
    cal = load_calibration(root / "reports" / "compare" / "cross-session-h200-20261204T210208Z"
                           / "calibration-h200-prior.json")
    when = datetime(2026, 12, 5, tzinfo=UTC)
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get(cal.gpu_key)), DType.BF16)

    def reports() -> list[dict]:
        model = AnalyticModel(cfg, wl, routing_prefill=routing, routing_decode=routing)
        return [to_dict(build_report(model, peaks, efficiency=eff, report_id="r", generated_at=when))
                for eff in (None, cal)]

    shared = reports()

    class OwnNodes(model_mod.DecoderLayer):
        module_type = "DecoderLayer"  # the report names the module type

        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **{**kwargs, "shared": None, "attention": None})

    def own_copy(self: BaseLayer, name: str) -> BaseLayer:
        twin = copy.deepcopy(self)
        twin.name = name
        return twin

    monkeypatch.setattr(model_mod, "DecoderLayer", OwnNodes)
    monkeypatch.setattr(BaseLayer, "renamed", own_copy)
    alone = reports()
    model = AnalyticModel(cfg, wl)
    layers = [c for c in model.stages[Stage.PREFILL].children if isinstance(c, OwnNodes)]
    assert len({id(layer.children[1]) for layer in layers}) == len(layers)  # nothing shared now
    assert shared == alone


def test_launches_inside_a_call_cost_a_fraction_of_the_host_time() -> None:
    from llm_perf_opt.analytic.timeline_model import CUDA_LAUNCH_HOST_WEIGHT

    # 10 launches of which 4 happen inside other calls (memsets, a second kernel), 2 host-only ops
    blocks = PassBlocks({SAM: [WorkBlock(0.0, 10.0, host_ops=2.0, inner_kernels=4.0)]}, 0)
    t = run_timeline(blocks, _host(), 0.0)
    assert t.stage_s[SAM] == pytest.approx(6.0 + 4.0 * CUDA_LAUNCH_HOST_WEIGHT + 2.0)


def test_pass_blocks_keep_host_ops_and_inner_launches() -> None:
    from llm_perf_opt.analytic.timeline_model import pass_blocks

    leaf = _leaf("a", 3, 100.0)
    leaf.host_ops = 5.0
    leaf.cuda_op(OperatorCategory.MEMORY, 2)
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get("h100-sxm")), DType.BF16)
    (block,) = pass_blocks({Stage.VISION_SAM: leaf}, 0, peaks, Calibration(gpu_key="x"),
                           device_scale={SAM: 2.0}).stages[SAM]
    (plain,) = stage_blocks(leaf, peaks, Calibration(gpu_key="x"))
    assert (block.kernels, block.host_ops, block.inner_kernels) == (5.0, 5.0, 2.0)
    assert block.device_s == pytest.approx(2.0 * plain.device_s)


def test_bare_calls_cost_their_host_weight() -> None:
    from llm_perf_opt.analytic.timeline_model import pass_blocks, stage_host_work

    leaf = _leaf("a", 3, 100.0)
    leaf.light_op(OperatorCategory.MEMORY, 10.0, host_weight=0.25)
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get("h100-sxm")), DType.BF16)
    (block,) = pass_blocks({Stage.VISION_SAM: leaf}, 0, peaks, Calibration(gpu_key="x")).stages[SAM]
    assert (block.kernels, block.host_discount) == (13.0, 7.5)  # the kernels all run; 7.5 ops of host time saved
    assert block.host_ops_issued() == pytest.approx(3.0 + 2.5)
    assert stage_host_work(leaf) == (pytest.approx(5.5), 0)
    t = run_timeline(PassBlocks({SAM: [block]}, 0), _host(), 0.0)
    assert t.stage_s[SAM] == pytest.approx(5.5)  # host-bound: 5.5 ops at 1 s each
    with pytest.raises(ValueError, match="host_weight must be in"):
        leaf.light_op(OperatorCategory.MEMORY, 1.0, host_weight=1.5)


@pytest.mark.parametrize("new_tokens", [4, 1024])
def test_the_ngram_ban_costs_its_measured_host_weight(new_tokens: int) -> None:
    """The n-gram ban's launches keep their counted number (7 per row and token pick, new_tokens picks over
    new_tokens - 1 forwards) and cost the host DECODE_ROW_HOST_WEIGHT of a decoder op each
    (scripts/gpu/decode_rows.py); with the ban off the decode step has no per-row launch at all."""
    from llm_perf_opt.analytic.model import DECODE_ROW_HOST_WEIGHT, NGRAM_BAN_ROW_LAUNCHES
    from llm_perf_opt.analytic.timeline_model import stage_host_work
    from llm_perf_opt.analytic.workloads import named_profiles, with_overrides

    base = next(iter(named_profiles().values()))

    def decode(batch: int, ngram: int = 20) -> BaseLayer:
        wl = with_overrides(base, batch_size=batch, max_new_tokens=new_tokens, no_repeat_ngram_size=ngram)
        return AnalyticModel(DeepseekOCRConfig.named("default"), wl).stages[Stage.DECODE]

    per_row = NGRAM_BAN_ROW_LAUNCHES * new_tokens / (new_tokens - 1)
    d1, d4 = decode(1), decode(4)
    assert d4.forward_kernel_launches() - d1.forward_kernel_launches() == pytest.approx(3 * per_row)
    assert stage_host_work(d4)[0] - stage_host_work(d1)[0] == pytest.approx(3 * per_row * DECODE_ROW_HOST_WEIGHT)
    off1, off4 = decode(1, 0), decode(4, 0)
    assert off4.forward_kernel_launches() == pytest.approx(off1.forward_kernel_launches())
    assert stage_host_work(off4)[0] == pytest.approx(stage_host_work(off1)[0])
    assert d1.forward_kernel_launches() - off1.forward_kernel_launches() == pytest.approx(per_row)
    # the ban's own traffic: 18 bytes per vocabulary entry, row and pick
    vocab = DeepseekOCRConfig.named("default").language.vocab_size
    assert d4.forward_cal_io() - off4.forward_cal_io() == pytest.approx(4 * 18 * vocab * new_tokens / (new_tokens - 1))


def _timeline_cal(**kw: object) -> Calibration:
    base: dict[str, object] = dict(gpu_key="h100-sxm", time_model="timeline",
                                   stage_host_s_per_kernel={s.value: 20e-6 for s in Stage}, host_sync_s=50e-6,
                                   stage_device_scale={SAM: 2.0})
    base.update(kw)
    return Calibration(**base)  # type: ignore[arg-type]


def test_calibration_file_keeps_the_timeline_terms() -> None:
    cal = _timeline_cal(host_probe_us=5.0)
    back = Calibration.from_dict(cal.to_dict())
    assert back == cal
    assert back.timeline and back.device_scale(SAM) == 2.0 and back.device_scale(CLIP) == 1.0
    assert "timeline calibration" in back.describe()


@pytest.mark.parametrize("bad, message", [
    ({"time_model": "linear"}, "time_model"),
    ({"stage_host_s_per_kernel": {}}, "needs stage_host_s_per_kernel"),
    ({"stage_device_scale": {SAM: 0.0}}, "stage_device_scale"),
    ({"stage_host_s_per_kernel": {"vision.sam": -1.0}}, "stage_host_s_per_kernel"),
    ({"host_sync_s": -1.0}, "host_sync_s"),
])
def test_malformed_timeline_terms_are_refused(bad: dict[str, object], message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        _timeline_cal(**bad)


def test_host_speed_scales_the_host_terms_only() -> None:
    cal = _timeline_cal(host_probe_us=4.0)
    slow = cal.at_host_speed(6.0)
    assert slow.host_s_per_kernel(SAM) == pytest.approx(30e-6)
    assert slow.host_sync_s == pytest.approx(75e-6)
    assert slow.stage_device_scale == cal.stage_device_scale
    assert cal.at_host_speed(None) is cal
    assert _timeline_cal().at_host_speed(6.0).host_s_per_kernel(SAM) == pytest.approx(20e-6)  # no reference


def test_report_stage_times_come_from_the_simulated_pass() -> None:
    cfg = DeepseekOCRConfig.named("default")
    wl = get_profile("dsocr-base-v1")
    model = AnalyticModel(cfg, wl)
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get("h100-sxm")), wl.dtype)
    cal = _timeline_cal()
    sim = simulate_pass(model.stages, model.shape.decode_forwards, peaks, cal)
    rep = build_report(model, peaks, efficiency=cal)
    for stage, sec in sim.stage_s.items():
        assert rep.stage_totals[Stage(stage)].time_ms == pytest.approx(sec * 1e3)
    assert rep.model_totals.time_ms == pytest.approx(sum(sim.stage_s.values()) * 1e3)
    assert rep.decode.per_token.time_ms == pytest.approx(sim.decode_forward_s * 1e3)
    # slower host, longer stages; the SAM syncs cost time
    slower = simulate_pass(model.stages, model.shape.decode_forwards, peaks,
                           _timeline_cal(stage_host_s_per_kernel={s.value: 40e-6 for s in Stage}))
    assert all(slower.stage_s[s] > sim.stage_s[s] for s in sim.stage_s)
    no_sync = simulate_pass(model.stages, model.shape.decode_forwards, peaks, _timeline_cal(host_sync_s=0.0))
    assert no_sync.stage_s[SAM] < sim.stage_s[SAM]


def test_the_kernel_gap_adds_to_a_device_bound_queue_only() -> None:
    # device bound: 2 kernels of 5 s device work, issued at 1 s each; a 0.5 s gap per kernel lengthens the queue
    bound = PassBlocks({SAM: [WorkBlock(10.0, 2.0)]}, 0)
    assert run_timeline(bound, _host(), 0.0, 0.5).stage_s[SAM] == pytest.approx(12.0)  # 1 + 10 + 2 x 0.5
    # host bound: 10 kernels at 1 s each hide 5 s of device work and 10 x 0.1 s of gaps
    host = PassBlocks({SAM: [WorkBlock(5.0, 10.0)]}, 0)
    assert run_timeline(host, _host(), 0.0, 0.1).stage_s[SAM] == pytest.approx(10.0)


def test_the_calibration_carries_the_gap_into_the_report() -> None:
    import attrs

    from llm_perf_opt.analytic.workloads import with_overrides

    wl = with_overrides(get_profile("dsocr-base-v1"), mode="base", batch_size=4)
    model = AnalyticModel(DeepseekOCRConfig.default(), wl)
    peaks = RooflinePeaks.from_effective(effective_peaks(load_catalog().get("h200")), DType.BF16)
    cal = Calibration(gpu_key="h200", time_model="timeline", kernel_floor_s=2e-6,
                      stage_host_s_per_kernel={s.value: 1e-6 for s in Stage})
    gapped = Calibration.from_dict(attrs.evolve(cal, kernel_gap_s=1e-6).to_dict())
    assert gapped.kernel_gap_s == 1e-6 and "gap 1.00 us/kernel" in gapped.describe()
    plain = simulate_pass(model.stages, 1, peaks, cal)
    more = simulate_pass(model.stages, 1, peaks, gapped)
    # every kernel takes >= 2 us on the device and 1 us to issue: the queue stays device bound, so each
    # stage grows by its kernels x the gap
    for st in (Stage.VISION_SAM, Stage.VISION_CLIP, Stage.PREFILL):
        k = sum(b.kernels for b in stage_blocks(model.stages[st], peaks, cal, kernel_floor_s=2e-6))
        assert more.stage_s[st.value] - plain.stage_s[st.value] == pytest.approx(k * 1e-6, rel=0.01)
    with pytest.raises(CalibrationError, match="kernel_gap_s must be >= 0"):
        Calibration(gpu_key="h200", time_model="timeline", kernel_gap_s=-1e-6)
    # the CUDA-graph gap and the graph-replayed stages survive the file; bad values are one line each
    graphs = attrs.evolve(gapped, kernel_gap_graph_s=0.3e-6).with_graph_stages(["decode"])
    back = Calibration.from_dict(graphs.to_dict())
    assert back == graphs and back.graph_stages == ["decode"]
    assert back.stage_gap_s("decode") == 0.3e-6 and back.stage_gap_s("prefill") == 1e-6
    assert back.stage_sync_s("decode") == 0.0 and back.host_s_per_kernel("decode") == 0.0
    assert back.host_s_per_kernel("prefill") == 1e-6
    assert "(0.30 in a CUDA graph)" in back.describe() and "replayed from CUDA graphs: decode" in back.describe()
    old = Calibration.from_dict(gapped.to_dict())  # older files: no graph gap, no graph stages
    assert old.kernel_gap_graph_s is None and old.graph_stages == []
    with pytest.raises(CalibrationError, match="kernel_gap_graph_s must be >= 0"):
        Calibration(gpu_key="h200", time_model="timeline", kernel_gap_graph_s=-1e-6)
    with pytest.raises(CalibrationError, match="graph_stages must be a list of stage names"):
        Calibration.from_dict({**graphs.to_dict(), "graph_stages": "decode"})
    with pytest.raises(CalibrationError, match="unknown stage 'vision' in graph_stages"):
        Calibration.from_dict({**graphs.to_dict(), "graph_stages": ["vision"]})
    with pytest.raises(CalibrationError, match="unknown stage vision for CUDA graphs"):
        graphs.with_graph_stages(["vision"])
    with pytest.raises(CalibrationError, match="additive"):
        Calibration(gpu_key="h200").with_graph_stages(["decode"])


def test_a_host_cost_the_device_hides_is_reported_as_weakly_fitted() -> None:
    """fit_host_terms: a stage whose device hides its host cost in every fitted run is fitted but flagged;
    a host-bound stage is not (host_sensitivity: its time moves ~50% when its host cost moves 1.5x)."""
    from llm_perf_opt.compare.calibrate import WEAK_HOST_SENSITIVITY, WEAKLY, fit_host_terms, host_sensitivity

    # SAM: 10 ms of device work behind 10 kernels (host 20 us/kernel: hidden); decode: host-bound, 1 forward
    blocks = PassBlocks({SAM: [WorkBlock(10e-3, 10.0)], DEC: [WorkBlock(10e-6, 20.0, syncs_before=1)]}, 1)
    truth = {st.value: 20e-6 for st in Stage}
    measured = {st: s * 1e3 for st, s in run_timeline(blocks, truth, 0.0).stage_s.items() if st in (SAM, DEC)}
    host, unidentified = fit_host_terms([(measured, [(blocks, 1.0)], 1.0)])
    assert host[DEC] == pytest.approx(20e-6, rel=1e-3)  # host-bound: pinned
    weak = [u for u in unidentified if WEAKLY in u]
    assert len(weak) == 1 and weak[0].startswith(f"host_s_per_kernel[{SAM}] weakly: ")
    runs = [(measured, [(blocks, 1.0)], 1.0)]
    assert host_sensitivity(runs, host, SAM, sync_s=0.0) < WEAK_HOST_SENSITIVITY
    assert host_sensitivity(runs, host, DEC, sync_s=0.0) == pytest.approx(0.5, rel=1e-3)
    # the same SAM host-bound (10 us of device work): pinned, not flagged
    bound = PassBlocks({SAM: [WorkBlock(10e-6, 10.0)], DEC: [WorkBlock(10e-6, 20.0, syncs_before=1)]}, 1)
    measured = {st: s * 1e3 for st, s in run_timeline(bound, truth, 0.0).stage_s.items() if st in (SAM, DEC)}
    host, unidentified = fit_host_terms([(measured, [(bound, 1.0)], 1.0)])
    assert host[SAM] == pytest.approx(20e-6, rel=1e-3)
    assert not [u for u in unidentified if WEAKLY in u]


def _stepwise(blocks: PassBlocks, host: dict[str, float], sync: float, gap: float) -> dict[str, float]:
    """The module doc's clocks run forward by forward (no steady-state shortcut): stage -> seconds."""
    h = d = 0.0
    out = {}
    for stage in Stage:
        seq = blocks.stages.get(stage.value)
        if not seq:
            continue
        runs = (blocks.decode_segments if stage is Stage.DECODE and blocks.decode_segments
                else ((seq, blocks.decode_forwards if stage is Stage.DECODE else 1),))
        c = host[stage.value]
        start = max(d, h)
        for run_seq, repeats in runs:
            for _ in range(repeats):
                for b in run_seq:
                    if b.syncs_before:
                        h = max(h, d) + b.syncs_before * sync
                    issue = (b.kernels - 0.7 * b.inner_kernels - b.host_discount + b.host_ops) * c
                    first = (b.host_ops + 1.0) * c if b.kernels else issue
                    d = max(max(d, h + first) + b.device_s + b.kernels * gap, h + issue)
                    h += issue
        out[stage.value] = max(d, h) - start
    return out


def test_repeated_forwards_as_one_clock_map_give_the_stepwise_result() -> None:
    import random

    rng = random.Random(7)

    def forward(scale: float) -> list[WorkBlock]:
        # host-bound and device-bound blocks, some after a sync, some in forwards with none (a device backlog
        # that grows without bound), host-only ops, launches inside calls and bare calls
        return [WorkBlock(rng.uniform(0, 2) * scale, rng.choice([0.0, 1.0, 3.0, 8.0]),
                          syncs_before=rng.choice([0, 0, 0, 1, 2]), host_ops=rng.choice([0.0, 0.5]),
                          inner_kernels=rng.choice([0.0, 1.0]), host_discount=rng.choice([0.0, 0.2]))
                for _ in range(rng.randint(1, 6))]

    for _ in range(60):
        # decode groups whose device time grows past the host's (a decode that turns device-bound part way)
        segs = tuple((forward(1.0 + 0.5 * i), rng.randint(1, 700)) for i in range(4))
        n = sum(k for _, k in segs)
        blocks = PassBlocks({SAM: forward(1.0), DEC: segs[0][0]}, n, segs)
        host, sync, gap = _host(decode=rng.uniform(0.1, 1.0)), rng.uniform(0, 2), rng.uniform(0, 0.1)
        got = run_timeline(blocks, host, sync, gap).stage_s
        want = _stepwise(blocks, host, sync, gap)
        assert got.keys() == want.keys()
        for st, s in want.items():
            assert got[st] == pytest.approx(s, rel=1e-9), st
