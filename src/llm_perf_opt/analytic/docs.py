"""Markdown pages of an analytic report: one per module type (what it computes, its formulas, its numbers
for the workload) and ``summary.md`` (stages, memory, largest modules, assumptions).

Rendered from the AnalyticModelReport itself, so the pages and report.json never disagree.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from llm_perf_opt.analytic import base
from llm_perf_opt.analytic.layers import common, decoder, llama, vision
from llm_perf_opt.data.analytic import AnalyticModelReport, ModuleMetricsSnapshot

_GIGA = 1e9
_MEGA = 1e6


def layer_classes() -> dict[str, type[base.BaseLayer]]:
    """Analytic layer classes by name (the ``class_name`` of report nodes)."""
    out: dict[str, type[base.BaseLayer]] = {}
    for mod in (base, common, vision, llama, decoder):
        for name in dir(mod):
            obj = getattr(mod, name)
            if isinstance(obj, type) and issubclass(obj, base.BaseLayer):
                out[obj.__name__] = obj
    return out


def _row(snap: ModuleMetricsSnapshot, name: str) -> str:
    return (f"| `{name}` | {snap.tensor_core_flops / _GIGA:,.3f} | {snap.cuda_core_flops / _GIGA:,.3f} | "
            f"{snap.io_bytes / _MEGA:,.2f} | {snap.arithmetic_intensity_flops_per_byte:,.1f} | "
            f"{snap.weight_bytes / _MEGA:,.2f} | {snap.activation_bytes / _MEGA:,.2f} | "
            f"{snap.roofline_time_ms:,.4f} | {snap.bound.value} |")


_HEADER = ("| module (stage/path) | tensor-core GFLOP | CUDA-core GFLOP | io MB | FLOP/byte | weights MB | "
           "activation peak MB | time ms | bound |\n|---|---:|---:|---:|---:|---:|---:|---:|---|")


def _safe_file(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


def write_layer_docs(report: AnalyticModelReport, folder: Path) -> list[Path]:
    """Write ``<folder>/<ModuleType>.md`` for every module type in the report and ``summary.md``."""
    folder.mkdir(parents=True, exist_ok=True)
    classes = layer_classes()
    snaps = {s.module_id: s for s in report.snapshots}
    by_type: dict[str, list[str]] = {}
    for node in report.modules:
        if node.stage is None or node.module_id == node.stage.value:
            continue
        by_type.setdefault(node.class_name, []).append(node.module_id)
    written = []
    w = report.workload
    workload_line = (f"Workload `{w.profile_id}`: mode {w.mode}, page {w.image_width_px}x{w.image_height_px} px "
                     f"(tiles {w.tile_rows}x{w.tile_cols}), prompt {w.prefill_tokens} tokens, "
                     f"{w.max_new_tokens} new tokens, batch {w.batch_size}, {w.dtype.value}, "
                     f"attention {w.attention.value}, experts {w.experts}, n-gram ban "
                     f"{w.no_repeat_ngram_size or 'off'}; GPU `{report.gpu_key}` ({report.peaks.source.value} peaks).")
    for cls_name, ids in sorted(by_type.items()):
        cls = classes.get(cls_name)
        lines = [f"# {cls_name}", ""]
        if cls is not None:
            lines += [cls.summary or (cls.__doc__ or "").strip().splitlines()[0], ""]
            doc = inspect.cleandoc(cls.__doc__ or "")
            if doc:
                lines += [doc, ""]
            if cls.formulas:
                lines += ["## Formulas", "", "FLOPs = 2 x MACs (see llm_perf_opt.analytic.base).", ""]
                lines += [f"- `{f}`" for f in cls.formulas]
                lines.append("")
        lines += ["## Numbers for this workload", "", workload_line, "",
                  "Decode rows hold all decode steps; CLIP `layers.*` rows hold all layers.", "", _HEADER]
        lines += [_row(snaps[i], i) for i in ids]
        path = folder / f"{_safe_file(cls_name)}.md"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(path)
    written.append(_summary(report, folder / "summary.md", workload_line))
    return written


def _summary(report: AnalyticModelReport, path: Path, workload_line: str) -> Path:
    m = report.memory
    lines = [f"# Analytic model: {report.report_id}", "", workload_line, "",
             "## Stages", "", "| stage | tensor-core GFLOP | CUDA-core GFLOP | io GB | time ms |",
             "|---|---:|---:|---:|---:|"]
    for stage, t in report.stage_totals.items():
        lines.append(f"| {stage.value} | {t.tensor_core_flops / _GIGA:,.2f} | {t.cuda_core_flops / _GIGA:,.2f} | "
                     f"{t.io_bytes / _GIGA:,.3f} | {t.time_ms:,.3f} |")
    t = report.model_totals
    lines.append(f"| **total** | {t.tensor_core_flops / _GIGA:,.2f} | {t.cuda_core_flops / _GIGA:,.2f} | "
                 f"{t.io_bytes / _GIGA:,.3f} | {t.time_ms:,.3f} |")
    d = report.decode
    lines += ["", f"Decode: {d.tokens} tokens; one step at the mean context length: "
                  f"{d.per_token.total_flops / _GIGA:,.3f} GFLOP, {d.per_token.io_bytes / _GIGA:,.3f} GB, "
                  f"{d.per_token.time_ms:,.4f} ms.", "",
              "## Memory", "",
              f"- weights: {m.weights_bytes / _GIGA:,.3f} GB",
              f"- KV cache (end of decode): {m.kv_cache_bytes / _GIGA:,.4f} GB",
              f"- activation peak: {m.activation_peak_bytes / _GIGA:,.4f} GB",
              f"- device peak: {m.total_bytes / _GIGA:,.4f} GB"
              + (f" (in {m.peak_stage}: weights, its activations and the KV cache live in it)" if m.peak_stage
                 else " (weights + KV cache + activation peak)"),
              f"- largest batch that fits {report.gpu_key}: {m.max_batch_size}", "",
              "## Peaks", "",
              f"- tensor core: {report.peaks.tensor_core_flops_per_s / 1e12:,.1f} TFLOP/s; CUDA core: "
              f"{report.peaks.cuda_core_flops_per_s / 1e12:,.1f} TFLOP/s; memory "
              f"{report.peaks.memory_bytes_per_s / 1e12:,.2f} TB/s ({report.peaks.source.value})",
              f"- source: {report.peaks.source_ref}", ""]
    nodes = {n.module_id: n for n in report.modules}
    leaves = [s for s in report.snapshots if not nodes[s.module_id].children_ids]
    leaves.sort(key=lambda s: -s.roofline_time_ms)
    lines += ["## Largest leaf modules by predicted time", "", _HEADER]
    lines += [_row(s, s.module_id) for s in leaves[:15]]
    lines += ["", "## Module types", ""]
    types = sorted({n.class_name for n in report.modules if n.stage is not None and n.module_id != n.stage.value})
    lines += [f"- [{t}]({_safe_file(t)}.md)" for t in types]
    lines += ["", "## Assumptions", ""] + [f"- {n}" for n in report.notes]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
