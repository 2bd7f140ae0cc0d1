"""Markdown, JSON and plots of a predicted-vs-measured comparison (compare/compare.py).

Files written by :func:`write_compare_outputs` into ``RUN_DIR/compare/``:
``compare.json`` (the Comparison), ``compare.md``, ``stages.png`` (bars per
stage: measured, predicted, calibrated) and ``roofline.png`` (stages and
categories by arithmetic intensity vs achieved FLOP/s, under the GPU's
compute and bandwidth roofs). Columns and units: docs/compare.md.
"""

from __future__ import annotations

from pathlib import Path

from llm_perf_opt.compare.compare import Comparison
from llm_perf_opt.data.io import dump_json


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "—" if v is None else format(v, fmt)


def render_compare_markdown(cmp: Comparison) -> str:
    """The comparison as Markdown tables (ms per pass; ratio = predicted / measured)."""
    cal = any(s.calibrated_ms is not None for s in cmp.stages)
    lines = [f"# Predicted vs measured: run `{cmp.run_id}`", "",
             f"- GPU: `{cmp.gpu_key}`; model config: `{cmp.model_config}`; "
             f"software: {', '.join(f'{k} {v}' for k, v in cmp.software.items())}",
             f"- Prediction: {cmp.efficiency}; analytic report(s): {', '.join(cmp.analytic_report_ids)}",
             f"- Peaks: tensor core {cmp.peak_tensor_core_flops_per_s / 1e12:.1f} TFLOP/s, "
             f"memory {cmp.memory_bytes_per_s / 1e12:.2f} TB/s", ""]
    lines += ["| workload | mode | tiles | prefill tokens | max_new_tokens | batch | dtype | images |",
              "|---|---|---|---:|---:|---:|---|---:|"]
    for w in cmp.workloads:
        lines.append(f"| {w['profile_id']} | {w['mode']} | {w['tiles']} | {w['prefill_tokens']} | "
                     f"{w['max_new_tokens']} | {w['batch_size']} | {w['dtype']} | {w['images']} |")
    lines += ["", "## Stages (ms per pass)", ""]
    head = "| stage | measured ms | std ms | samples | predicted ms | ratio |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if cal:
        head += " calibrated ms | calibrated ratio |"
        sep += "---:|---:|"
    head += " GFLOP | AI flop/B | achieved TFLOP/s | kernels predicted | kernels measured | device ms | ratio to device |"
    sep += "---:|---:|---:|---:|---:|---:|---:|"
    lines += [head, sep]
    for s in cmp.stages:
        row = (f"| {s.stage} | {_f(s.measured_ms)} | {_f(s.measured_std_ms)} | {s.samples} | "
               f"{_f(s.predicted_ms)} | {_f(s.ratio)} |")
        if cal:
            row += f" {_f(s.calibrated_ms)} | {_f(s.calibrated_ratio)} |"
        ach = None if s.achieved_flops_per_s is None else s.achieved_flops_per_s / 1e12
        row += (f" {s.flops / 1e9:.2f} | {s.arithmetic_intensity_flops_per_byte:.1f} | {_f(ach, '.2f')} | "
                f"{s.predicted_kernels:.0f} | {_f(s.measured_kernels, '.0f')} | {_f(s.measured_device_ms)} | "
                f"{_f(s.device_ratio)} |")
        lines.append(row)
    lines += ["", "ratio = predicted / measured stage range (wall clock on the device timeline, host gaps "
              "included); ratio to device = predicted / the stage's kernel time in the profiler pass, the "
              "roofline's error on device work alone. Kernels: analytic launches vs kernels the profiler "
              "counted (decode: per forward)."]
    t = cmp.totals
    lines += ["", "## Totals", "",
              "| quantity | measured | predicted | ratio |" + (" calibrated | calibrated ratio |" if cal else ""),
              "|---|---:|---:|---:|" + ("---:|---:|" if cal else "")]
    row = f"| total ms per pass | {_f(t.measured_total_ms)} | {_f(t.predicted_total_ms)} | {_f(t.ratio)} |"
    if cal:
        row += f" {_f(t.calibrated_total_ms)} | {_f(t.calibrated_ratio)} |"
    lines.append(row)
    row = (f"| decode ms per forward | {_f(t.measured_decode_per_token_ms)} | {_f(t.predicted_decode_per_token_ms)} "
           f"| {_f(t.decode_per_token_ratio)} |")
    if cal:
        row += f" {_f(t.calibrated_decode_per_token_ms)} | {_f(None if t.calibrated_decode_per_token_ms is None or not t.measured_decode_per_token_ms else t.calibrated_decode_per_token_ms / t.measured_decode_per_token_ms)} |"
    lines.append(row)
    lines.append(f"| new tokens per sequence | {_f(t.measured_decode_tokens, 'g')} | {t.predicted_decode_tokens} | — |"
                 + (" — | — |" if cal else ""))
    lines += ["", f"## Operator categories (basis: {cmp.category_basis})", "",
              "| category | measured ms | measured share | predicted ms | predicted share | ratio | share ratio |"
              + (" calibrated ms |" if cal else ""),
              "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if cal else "")]
    for c in cmp.categories:
        row = (f"| {c.category} | {_f(c.measured_ms)} | {_f(c.measured_share)} | {_f(c.predicted_ms)} | "
               f"{_f(c.predicted_share)} | {_f(c.ratio)} | {_f(c.share_ratio)} |")
        if cal:
            row += f" {_f(c.calibrated_ms)} |"
        lines.append(row)
    if cmp.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in cmp.notes]
    return "\n".join(lines) + "\n"


def plot_stage_bars(cmp: Comparison, path: Path) -> Path:
    """Grouped bars per stage: measured, predicted and (if any) calibrated ms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s.stage for s in cmp.stages]
    series = [("measured", [s.measured_ms or 0.0 for s in cmp.stages]),
              ("predicted (roofline)", [s.predicted_ms for s in cmp.stages])]
    if any(s.calibrated_ms is not None for s in cmp.stages):
        series.append(("calibrated", [s.calibrated_ms or 0.0 for s in cmp.stages]))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(series)
    for i, (label, vals) in enumerate(series):
        ax.bar([x + i * width for x in range(len(stages))], vals, width, label=label)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(stages))])
    ax.set_xticklabels(stages)
    ax.set_ylabel("ms per pass")
    ax.set_yscale("log")
    ax.set_title(f"{cmp.run_id}: predicted vs measured per stage ({cmp.gpu_key})")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_roofline(cmp: Comparison, path: Path) -> Path:
    """Log-log roofline: achieved FLOP/s vs arithmetic intensity for stages and categories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peak, bw = cmp.peak_tensor_core_flops_per_s, cmp.memory_bytes_per_s
    pts: list[tuple[str, float, float, str]] = []
    for s in cmp.stages:
        if s.io_bytes > 0 and s.measured_ms:
            pts.append((s.stage, s.arithmetic_intensity_flops_per_byte, s.flops / (s.measured_ms / 1e3), "o"))
    for c in cmp.categories:
        if c.io_bytes > 0 and c.measured_ms and c.flops > 0:
            pts.append((c.category, c.flops / c.io_bytes, c.flops / (c.measured_ms / 1e3), "s"))
    xs = [p[1] for p in pts] or [1.0]
    lo, hi = min(min(xs) / 4, 0.1), max(max(xs) * 4, 4 * peak / bw)
    fig, ax = plt.subplots(figsize=(8, 5))
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(grid, [min(peak, x * bw) for x in grid], color="black", label="roof: min(peak, AI x bandwidth)")
    ax.axvline(peak / bw, color="grey", linestyle=":", linewidth=1)
    for name, x, y, marker in pts:
        ax.scatter([x], [y], marker=marker)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    # the roofline prediction of each stage (hollow), joined to its measured point
    for s in cmp.stages:
        if s.io_bytes > 0 and s.measured_ms and s.predicted_ms > 0:
            x = s.arithmetic_intensity_flops_per_byte
            y_pred, y_meas = s.flops / (s.predicted_ms / 1e3), s.flops / (s.measured_ms / 1e3)
            ax.scatter([x], [y_pred], marker="o", facecolors="none", edgecolors="grey")
            ax.plot([x, x], [y_meas, y_pred], color="grey", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte, analytic)")
    ax.set_ylabel("achieved FLOP/s (analytic FLOPs / measured time)")
    ax.set_title(f"{cmp.run_id} on {cmp.gpu_key}: stages (o), categories (s), predicted (hollow)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_compare_outputs(cmp: Comparison, out_dir: str | Path) -> list[Path]:
    """compare.json, compare.md, stages.png, roofline.png under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [dump_json(cmp, out / "compare.json")]
    md = out / "compare.md"
    md.write_text(render_compare_markdown(cmp), encoding="utf-8")
    paths.append(md)
    paths.append(plot_stage_bars(cmp, out / "stages.png"))
    paths.append(plot_roofline(cmp, out / "roofline.png"))
    return paths
