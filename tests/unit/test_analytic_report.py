"""Report building: every named profile, IO round trip, totals that add up, weights vs the real model,
speed, and one-line errors for bad input."""

from __future__ import annotations

import pytest

from llm_perf_opt.analytic.model import AnalyticModel
from llm_perf_opt.analytic.workloads import DEFAULT_PROFILE_ID, get_profile, named_profiles, with_overrides
from llm_perf_opt.data.analytic import AnalyticModelReport
from llm_perf_opt.data.io import load_report
from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig
from llm_perf_opt.runners import dsocr_analyzer_main
from llm_perf_opt.runners.dsocr_analyzer import DeepseekOCRStaticAnalyzer, stage_flops_bytes, write_outputs
from llm_perf_opt.vocab import Stage

ANALYZER = DeepseekOCRStaticAnalyzer()
DEFAULT = DeepseekOCRConfig.default()


def official_parameter_count() -> int:
    from pathlib import Path

    rows = (Path(__file__).parents[1] / "data" / "official-tensors.tsv").read_text().splitlines()[1:]
    total = 0
    for row in rows:
        n = 1
        for d in row.split("\t")[1].split("x"):
            n *= int(d)
        total += n
    return total


@pytest.mark.parametrize("profile_id", list(named_profiles()))
def test_every_profile_builds_and_adds_up(profile_id):
    report = ANALYZER.analyze(DEFAULT, get_profile(profile_id), "h100-sxm")
    totals = report.stage_totals
    assert set(totals) == set(Stage)
    assert report.model_totals.total_flops == pytest.approx(sum(t.total_flops for t in totals.values()), rel=1e-12)
    assert report.model_totals.time_ms == pytest.approx(sum(t.time_ms for t in totals.values()), rel=1e-12)
    assert report.decode.total.total_flops == pytest.approx(
        report.decode.per_token.total_flops * (report.workload.max_new_tokens - 1), rel=1e-9)
    # every parent's work is the sum of its children's
    snaps = {s.module_id: s for s in report.snapshots}
    for node in report.modules:
        if node.children_ids:
            kids = sum(snaps[c].tensor_core_flops for c in node.children_ids)
            assert snaps[node.module_id].tensor_core_flops == pytest.approx(kids, rel=1e-9), node.module_id
            kids_io = sum(snaps[c].io_bytes for c in node.children_ids)
            assert snaps[node.module_id].io_bytes == pytest.approx(kids_io, rel=1e-9), node.module_id
    # weights: the official checkpoint's parameter count, in bf16
    assert report.memory.weights_bytes == 2 * official_parameter_count()
    assert report.model.parameter_count == official_parameter_count()
    assert report.memory.max_batch_size and report.memory.max_batch_size > 1


def test_report_round_trips_through_io_and_outputs(tmp_path):
    report = ANALYZER.analyze(DEFAULT, get_profile(DEFAULT_PROFILE_ID), "h100-sxm")
    path = write_outputs(report, tmp_path / "run")
    assert path == tmp_path / "run" / "static_analysis" / "analytic_model" / "report.json"
    for suffix in ("json", "yaml"):
        loaded = load_report(path.with_suffix(f".{suffix}"), AnalyticModelReport)
        assert loaded.model_totals == report.model_totals
        assert loaded.snapshot("decode/lm_head") == report.snapshot("decode/lm_head")
    layers = path.parent / "layers"
    assert (layers / "summary.md").exists() and (layers / "SamAttention.md").exists()
    assert "QK^T (2 * G * s^4 * d)" in (layers / "SamAttention.md").read_text()
    assert (path.parent / "summary.json").exists()
    with pytest.raises(Exception, match="already exists"):
        write_outputs(report, tmp_path / "run")
    # what-if: rebuild from the saved report's model spec with another workload and GPU
    loaded = load_report(path, AnalyticModelReport)
    other = ANALYZER.rebuild(loaded, workload=with_overrides(loaded.workload, batch_size=4), gpu="a100-sxm4-80gb")
    assert other.gpu_key == "a100-sxm4-80gb" and other.workload.batch_size == 4
    assert other.stage_totals[Stage.VISION_SAM].tensor_core_flops == pytest.approx(
        4 * report.stage_totals[Stage.VISION_SAM].tensor_core_flops)
    flops, io = stage_flops_bytes(report)[Stage.PREFILL]
    assert flops == report.stage_totals[Stage.PREFILL].total_flops and io > 0


def test_five_modes_grow_with_the_image_tokens():
    """Every mode analyses; vision work and prefill length grow Tiny < Small < Base < Large (speed: benchmarks/)."""
    sam = []
    for mode in ("tiny", "small", "base", "large", "gundam"):
        report = ANALYZER.analyze(DEFAULT, get_profile(f"dsocr-{mode}-v1"), "h100-sxm")
        sam.append((report.stage_totals[Stage.VISION_SAM].total_flops, report.workload.prefill_tokens))
    assert [f for f, _ in sam[:4]] == sorted(f for f, _ in sam[:4])
    assert [t for _, t in sam[:4]] == sorted(t for _, t in sam[:4])
    assert len({t for _, t in sam}) == 5


@pytest.mark.parametrize(("config", "device"), [("tiny", "cpu"), ("default", "meta")])
def test_weight_bytes_equal_real_parameter_bytes(config, device):
    cfg = DeepseekOCRConfig.named(config)
    report = ANALYZER.analyze(cfg, get_profile("dsocr-gundam-v1"), "h100-sxm")
    line = dsocr_analyzer_main.check_parameters(cfg, report, device)
    assert "equal per top module" in line


def test_kv_cache_formula():
    model = AnalyticModel(DEFAULT, get_profile("dsocr-base-v1"))
    lang = DEFAULT.language
    per_pos = 2 * lang.num_hidden_layers * lang.num_key_value_heads * lang.head_dim * 2
    assert model.kv_cache_bytes_after_prefill() == per_pos * model.shape.prefill_tokens
    assert model.kv_cache_bytes_final() == per_pos * (model.shape.prefill_tokens + 1023)


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--workload-profile-id", "nope"], "unknown workload profile 'nope'"),
    (["--image-size", "0x700"], "impossible image size 0x700"),
    (["--gpu", "h900"], "unknown GPU 'h900'"),
    (["--model", "NOTDS"], "is not DeepSeek-OCR"),
    (["--max-new-tokens", "9000"], "exceeds the model's 8192 positions"),
    (["--no-repeat-ngram-size", "-1"], "no_repeat_ngram_size must be >= 0, got -1"),
])
def test_bad_input_one_line(tmp_path, capsys, argv, fragment):
    if "NOTDS" in argv:
        folder = tmp_path / "llama"
        folder.mkdir()
        (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": 4096}')
        argv = [str(folder) if a == "NOTDS" else a for a in argv]
    rc = dsocr_analyzer_main.main([*argv, "--device", "none", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and fragment in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unwritable_output_dir_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc = dsocr_analyzer_main.main(["--device", "none", "--max-depth", "1", "--output-dir", str(blocker / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "cannot write the report" in err and str(blocker) in err
    assert "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("config", ["tiny", "default"])
def test_weight_bytes_of_every_matching_module_path(config):
    """Every analytic node whose path is a module of the executable model has exactly its parameters."""
    import torch

    from llm_perf_opt.models.deepseek_ocr import build_model

    cfg = DeepseekOCRConfig.named(config)
    real = {name: sum(p.numel() for p in mod.parameters())
            for name, mod in build_model(cfg, device="meta", dtype=torch.bfloat16).named_modules()}
    model = AnalyticModel(cfg, get_profile("dsocr-gundam-v1"))
    checked = 0
    for stage in (Stage.VISION_SAM, Stage.VISION_CLIP, Stage.PROJECTOR, Stage.PREFILL):
        for path, node in model.stages[stage].walk():
            if path in real:
                assert node.param_count() == real[path], path
                checked += 1
    assert checked > 50


def test_the_footprint_is_the_largest_stage_with_the_kv_cache_live_in_it():
    from llm_perf_opt.analytic.report import memory_footprint
    from llm_perf_opt.data.analytic import MemoryFootprint

    base = get_profile(DEFAULT_PROFILE_ID)
    for wl, peak in ((with_overrides(base, mode="small", batch_size=8, max_new_tokens=64, attention="eager"),
                      Stage.VISION_SAM),  # eager SAM's scores outweigh a short decode's KV cache
                     (with_overrides(base, mode="small", batch_size=8, max_new_tokens=8000, attention="sdpa"),
                      Stage.DECODE)):  # fused SAM, a long decode: the final KV cache sets the peak
        model = AnalyticModel(DEFAULT, wl)
        mem = memory_footprint(model, None)
        acts = {s: t.forward_memory_activation(model.memo) for s, t in model.stages.items()}
        live = {s: acts[s] + {Stage.PREFILL: model.kv_cache_bytes_after_prefill(),
                              Stage.DECODE: model.kv_cache_bytes_final()}.get(s, 0.0) for s in acts}
        assert mem.peak_stage == peak.value and max(live, key=lambda s: live[s]) == peak
        assert mem.total_bytes == mem.peak_bytes == pytest.approx(mem.weights_bytes + live[peak])
        assert mem.activation_peak_bytes == max(acts.values()) and mem.kv_cache_bytes == model.kv_cache_bytes_final()
        # the old sum (final KV cache + the largest activations) is an upper bound, strict when they differ
        assert mem.total_bytes < mem.weights_bytes + mem.kv_cache_bytes + mem.activation_peak_bytes
        # the largest batch: the peak's bytes per page under the capacity
        cap = mem.weights_bytes + 10.5 * live[peak] / wl.batch_size
        assert memory_footprint(model, cap).max_batch_size == 10
    # at batch 1 the bytes per page come from two pages: over one view SAM's global call copies no qkv
    one = AnalyticModel(DEFAULT, with_overrides(base, mode="base", batch_size=1, attention="eager"))
    two = AnalyticModel(DEFAULT, with_overrides(base, mode="base", batch_size=2, attention="eager"))
    per_page = [(memory_footprint(m, None).peak_bytes - memory_footprint(m, None).weights_bytes) / b
                for m, b in ((one, 1), (two, 2))]
    assert per_page[0] < per_page[1]
    cap = memory_footprint(one, None).weights_bytes + 40.9 * per_page[1]  # one page's bytes would give 41
    assert int(40.9 * per_page[1] // per_page[0]) == 41
    assert memory_footprint(one, cap).max_batch_size == memory_footprint(two, cap).max_batch_size == 40
    # a capacity that holds one page but not a page of a larger batch: 1 (from either model), not 0
    cap = memory_footprint(one, None).weights_bytes + (per_page[0] + per_page[1]) / 2
    assert memory_footprint(one, cap).max_batch_size == memory_footprint(two, cap).max_batch_size == 1
    assert memory_footprint(one, memory_footprint(one, None).peak_bytes - 1.0).max_batch_size == 0
    # a report written before the peak was recorded keeps the sum
    old = MemoryFootprint(weights_bytes=1.0, kv_cache_bytes=2.0, activation_peak_bytes=3.0)
    assert old.peak_bytes is None and old.total_bytes == 6.0


def test_a_vision_stage_keeps_its_earlier_calls_outputs():
    """Tiled pages run SAM over the tiles, then over the global views; the tiles' feature maps stay live (CLIP
    and the projector read them), so the stage's peak is the global call's plus those maps."""
    from llm_perf_opt.analytic.report import memory_footprint

    wl = with_overrides(get_profile(DEFAULT_PROFILE_ID), mode="gundam", image_size=(1240, 1754), batch_size=3,
                        max_new_tokens=64, attention="eager")
    model = AnalyticModel(DEFAULT, wl)
    tiles, glob = model.stages[Stage.VISION_SAM].children
    sam = DEFAULT.sam
    q = model.sam_out_side(model.shape.tile_side_px)
    assert tiles.kept_bytes == 2 * 3 * model.shape.layout.num_tiles * sam.downsample_channels[-1] * q * q
    assert glob.forward_memory_activation() + tiles.kept_bytes > tiles.forward_memory_activation()
    assert model.stages[Stage.VISION_SAM].forward_memory_activation() == pytest.approx(
        glob.forward_memory_activation() + tiles.kept_bytes)
    # Base (one call): nothing kept before its only call
    base = AnalyticModel(DEFAULT, with_overrides(wl, mode="base"))
    (only,) = base.stages[Stage.VISION_SAM].children
    assert base.stages[Stage.VISION_SAM].forward_memory_activation() == only.forward_memory_activation()
    assert memory_footprint(model, None).peak_bytes - memory_footprint(base, None).peak_bytes == pytest.approx(
        tiles.kept_bytes)
    # CLIP runs with every SAM map live, and the projector with every SAM and CLIP output
    clip = model.stages[Stage.VISION_CLIP]
    sam_maps = sum(c.kept_bytes for c in model.stages[Stage.VISION_SAM].children)
    assert clip.held_bytes == sam_maps
    assert model.stages[Stage.PROJECTOR].held_bytes == sam_maps + sum(c.kept_bytes for c in clip.children)
    # each projection runs with its input, the fusion's concatenation, live
    fusions = [c for c in model.stages[Stage.PROJECTOR].children if c.name == "model.fusion"]
    projections = [c for c in model.stages[Stage.PROJECTOR].children if c.kept_bytes]
    assert len(fusions) == len(projections) == 2  # tiles, global
    for fusion, proj in zip(fusions, projections, strict=True):
        assert proj.held_bytes == fusion.activation_bytes > 0
