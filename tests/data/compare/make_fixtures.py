"""Synthetic Stage 1 run folders for the compare / calibrate / unified-report tests.

A run folder is built with the project's own data classes (LLMProfileReport,
ProfileCapture) and IO, exactly as the profiling runner lays it out:
``<run_dir>/torch_profiler/metrics.json`` and ``operator_events.json``.

Measured times are *generated*: either the analytic prediction divided by a
chosen ratio per stage (compare tests: the expected ratio is then known), or
the analytic model rerun under a known Calibration (calibration tests: the
fit must recover it). Conventions follow the runner (profiling/session.py):
the measured prefill range encloses the vision stages; decode timings count
N new tokens per sequence x batch, made by N - 1 decoder forwards.

Run as a script to regenerate the committed fixture in this folder:
    PYTHONPATH=src python tests/data/compare/make_fixtures.py
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from llm_perf_opt.analytic.calibration import EfficiencyModel
from llm_perf_opt.compare.analytic import report_cells
from llm_perf_opt.compare.analyzer_bridge import analyze_like
from llm_perf_opt.data.analytic import AnalyticModelReport, OCRWorkloadProfile
from llm_perf_opt.data.common import AttentionKind, ImageCategory, ImageSource, Stats, WeightsSource
from llm_perf_opt.data.io import dump_json
from llm_perf_opt.data.profile import (
    InputImage,
    InputSet,
    LLMProfileReport,
    ModelUnderTest,
    OperatorSummary,
    RunMeta,
    StageTiming,
)
from llm_perf_opt.hardware.catalog import load_catalog
from llm_perf_opt.profiling.operators import OpEvent, ProfileCapture
from llm_perf_opt.vocab import VISION_STAGES, Stage

HERE = Path(__file__).parent
GPU = "h100-sxm"
#: predicted / measured per stage in the committed fixture run
FIXTURE_RATIOS: dict[str, float] = {"vision.sam": 0.5, "vision.clip": 0.8, "projector": 1.25, "prefill": 2.0,
                                    "decode": 1.1}
#: spread of the repeats around the mean (symmetric, so the mean is the generated value)
SPREAD = (0.98, 1.0, 1.02)
#: an op name per category, as the profiler names them (categorised by the shared TargetOperatorList)
OP_OF_CATEGORY = {"gemm": "aten::mm", "attention": "aten::_scaled_dot_product_efficient_attention",
                  "conv": "aten::convolution", "norm": "aten::native_layer_norm", "moe_experts": "aten::_grouped_mm",
                  "activation/elementwise": "aten::gelu", "embedding": "aten::embedding",
                  "memory/other": "aten::copy_", "moe_router": "aten::topk", "lm_head": "aten::linear"}


def workload(mode: str = "base", size: tuple[int, int] = (1024, 1024), *, batch: int = 1, new_tokens: int = 8,
             text_tokens: int = 9) -> OCRWorkloadProfile:
    """A small workload (tiny config is used with it)."""
    return OCRWorkloadProfile.create(profile_id=f"fixture-{mode}-b{batch}", mode=mode, image_width_px=size[0],
                                     image_height_px=size[1], prompt_text_tokens=text_tokens,
                                     max_new_tokens=new_tokens, batch_size=batch, attention=AttentionKind.SDPA)


def base_report(wl: OCRWorkloadProfile, config: str = "tiny") -> AnalyticModelReport:
    """Analytic report of ``wl`` on the H100 (datasheet peaks), full module tree."""
    from llm_perf_opt.analytic.model import AnalyticModel
    from llm_perf_opt.analytic.report import build_report
    from llm_perf_opt.analytic.roofline import RooflinePeaks
    from llm_perf_opt.hardware.bench import effective_peaks
    from llm_perf_opt.models.deepseek_ocr.config import DeepseekOCRConfig

    spec = load_catalog().get(GPU)
    peaks = RooflinePeaks.from_effective(effective_peaks(spec), wl.dtype)
    return build_report(AnalyticModel(DeepseekOCRConfig.named(config), wl), peaks,
                        report_id=f"analytic-{wl.profile_id}",
                        generated_at=datetime(2026, 11, 22, 5, 0, tzinfo=UTC))


def _stats(v: float) -> Stats:
    return Stats.from_values([v * f for f in SPREAD])


def write_run(run_dir: Path, wl: OCRWorkloadProfile, stage_ms: Mapping[str, float],
              device_ms: Mapping[str, Mapping[str, float]] | None = None, *, run_id: str | None = None,
              config: str = "tiny", torch_version: str = "2.11.0+cu130", host_probe_us: float | None = None,
              module_probe_us: float | None = None) -> Path:
    """Write a run folder whose measured stage means are ``stage_ms`` (LM prefill, per pass).

    ``device_ms``: stage -> category -> device ms per pass for operator_events.json;
    ``host_probe_us``: the host-speed probe of every pass (passes.jsonl; None: no passes file);
    ``module_probe_us``: its module probe (host_module_probe_us; None: not recorded).
    """
    rid = run_id or run_dir.name
    t0 = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)
    n_images = wl.batch_size
    layout = wl.layout
    prefill_range = stage_ms["prefill"] + sum(stage_ms[s.value] for s in VISION_STAGES)
    timings, per_stage = [], {}
    for stage in Stage:
        value = prefill_range if stage is Stage.PREFILL else stage_ms[stage.value]
        if stage is Stage.DECODE:
            tokens = wl.max_new_tokens * wl.batch_size
        elif stage is Stage.PREFILL:
            tokens = wl.prefill_tokens * wl.batch_size
        else:
            tokens = layout.nominal_tokens * wl.batch_size
        vals = [value * f for f in SPREAD]
        for r, v in enumerate(vals):
            timings.append(StageTiming(stage=stage, image_index=0, repeat_index=r, elapsed_ms=v, tokens=tokens,
                                       tokens_per_s=tokens / (v / 1e3)))
        per_stage[stage] = _stats(value)
    operators = []
    capture = None
    if device_ms:
        events: list[OpEvent] = []
        totals: dict[str, float] = {}
        for stage, cats in device_ms.items():
            events.append(OpEvent(name=stage, parent=None, self_cpu_us=1.0, cpu_total_us=1.0, self_device_us=0.0,
                                  is_range=True))
            parent = len(events) - 1
            for cat, ms in cats.items():
                op = OP_OF_CATEGORY[cat]
                events.append(OpEvent(name=op, parent=parent, self_cpu_us=1.0, cpu_total_us=1.0,
                                      self_device_us=ms * 1e3, is_range=False))
                totals[op] = totals.get(op, 0.0) + ms
        capture = ProfileCapture(events=events, device_kernel_us=sum(totals.values()) * 1e3, profiled_steps=1)
        grand = sum(totals.values())
        from llm_perf_opt.analytic.target_operators import categorize_op

        for op, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
            operators.append(OperatorSummary(op_name=op, category=categorize_op(op), calls=1, self_cuda_time_ms=ms,
                                             self_cpu_time_ms=0.001, total_cpu_time_ms=0.001,
                                             share_of_total=ms / grand))
    total_ms = prefill_range + stage_ms["decode"]
    report = LLMProfileReport(
        meta=RunMeta(run_id=rid, started_at=t0, finished_at=t0 + timedelta(seconds=10),
                     device_name="NVIDIA H100 80GB HBM3", gpu_key=GPU, torch_version=torch_version,
                     transformers_version="5.17.0", git_revision=None, mode=wl.mode, batch_size=wl.batch_size,
                     max_new_tokens=wl.max_new_tokens, fixed_length=True, repeats=len(SPREAD), warmup=1),
        model=ModelUnderTest(name="deepseek-ocr", config_origin=config, weights=WeightsSource.RANDOM,
                             dtype=wl.dtype, device="cuda:0", attn_implementation=wl.attention,
                             parameter_count=1000),
        inputs=InputSet(origin="synthetic", images=[
            InputImage(synthetic_id=f"synthetic:text_heavy:{i}", width_px=wl.image_width_px,
                       height_px=wl.image_height_px, category=ImageCategory.TEXT_HEAVY, source=ImageSource.SYNTHETIC)
            for i in range(n_images)]),
        stage_timings=timings, stage_ms=per_stage,
        pages_per_s=_stats(wl.batch_size / (total_ms / 1e3)), operators=operators,
    )
    folder = run_dir / "torch_profiler"
    dump_json(report, folder / "metrics.json")
    if capture is not None:
        capture.save(folder / "operator_events.json")
    if host_probe_us is not None:
        import json

        lines = [json.dumps({"pass_index": r, "status": "ok", "host_probe_us": host_probe_us * f,
                             **({} if module_probe_us is None else {"host_module_probe_us": module_probe_us * f})})
                 for r, f in enumerate(SPREAD)]
        (folder / "passes.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run_dir


def write_ratio_run(run_dir: Path, report: AnalyticModelReport, ratios: Mapping[str, float] = FIXTURE_RATIOS) -> Path:
    """A run whose stage means are the report's predictions divided by ``ratios``."""
    stage_ms = {s.value: report.stage_totals[s].time_ms / ratios[s.value] for s in Stage}
    cells = report_cells(report)
    device: dict[str, dict[str, float]] = {}
    from llm_perf_opt.analytic.calibration import PURE_ROOFLINE

    for c in cells:
        t = c.time_s(PURE_ROOFLINE, include_launch=False) * 1e3 / ratios[c.stage]
        device.setdefault(c.stage, {})[c.category] = device.get(c.stage, {}).get(c.category, 0.0) + t
    return write_run(run_dir, report.workload, stage_ms, device)


def write_calibrated_run(run_dir: Path, wl: OCRWorkloadProfile, truth: EfficiencyModel, *,
                         with_operators: bool = True, config: str = "tiny", host_probe_us: float | None = None,
                         module_probe_us: float | None = None) -> Path:
    """A run whose stage means are the analytic model rerun under ``truth`` (a known calibration).

    A timeline truth runs at the host speed its probe gives (``host_probe_us``, or ``module_probe_us``
    when the truth's host_probe is 'module': its host terms scaled from its reference probe) and its
    per-stage device factors scale the operator device times.
    """
    from llm_perf_opt.analytic.calibration import Calibration

    if isinstance(truth, Calibration):
        truth = truth.at_host_speed(module_probe_us if truth.host_probe == "module" else host_probe_us)
    base = base_report(wl, config=config)
    cal_rep = analyze_like(base, wl, load_catalog().get(GPU), efficiency=truth, max_depth=1)
    stage_ms = {s.value: cal_rep.stage_totals[s].time_ms for s in Stage}
    device: dict[str, dict[str, float]] = {}
    if with_operators:
        for c in report_cells(base):
            scale = truth.device_scale(c.stage) if isinstance(truth, Calibration) and truth.timeline else 1.0
            t = c.time_s(truth, include_launch=False) * 1e3 * scale
            device.setdefault(c.stage, {})[c.category] = device.get(c.stage, {}).get(c.category, 0.0) + t
    return write_run(run_dir, wl, stage_ms, device or None, config=config, host_probe_us=host_probe_us,
                     module_probe_us=module_probe_us)


if __name__ == "__main__":
    rep = base_report(workload())
    dump_json(rep, HERE / "analytic-base-b1.json")
    write_ratio_run(HERE / "run-base-b1", rep)
    print(f"wrote {HERE / 'analytic-base-b1.json'} and {HERE / 'run-base-b1'}")
