"""Plots of a profiling run (matplotlib, Agg backend): stage breakdown and per-pass timings."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from llm_perf_opt.data.io import atomic_write_bytes  # noqa: E402
from llm_perf_opt.profiling.aggregate import Aggregates  # noqa: E402
from llm_perf_opt.profiling.records import PassRecord  # noqa: E402
from llm_perf_opt.reporting.profile_report import (  # noqa: E402
    PER_IMAGE_PNG,
    STAGE_BREAKDOWN_PNG,
    language_prefill_ms,
)
from llm_perf_opt.vocab import VISION_STAGES, Stage  # noqa: E402

__all__ = ["PER_IMAGE_PNG", "STAGE_BREAKDOWN_PNG", "plot_per_image", "plot_stage_breakdown"]


def _save(fig: plt.Figure, path: Path) -> None:
    """The figure as PNG (120 dpi), written whole or not at all (``data.io.atomic_write_bytes``), then closed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=120)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_stage_breakdown(agg: Aggregates, path: Path, title: str) -> Path | None:
    """One horizontal stacked bar: mean ms of sam, clip, projector, language prefill, decode."""
    recs = agg.ok_records
    if not recs:
        return None
    n = len(recs)
    parts = [(s.value, sum(r.stage_ms.get(s.value, 0.0) for r in recs) / n) for s in VISION_STAGES]
    parts.append(("prefill (language)", sum(language_prefill_ms(r) for r in recs) / n))
    parts.append((Stage.DECODE.value, sum(r.stage_ms.get(Stage.DECODE.value, 0.0) for r in recs) / n))
    total = sum(v for _, v in parts) or 1.0
    fig, ax = plt.subplots(figsize=(9, 2.8))
    left = 0.0
    colors = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974"]
    for (name, value), color in zip(parts, colors, strict=False):
        ax.barh([0], [value], left=left, color=color, label=f"{name}: {value:.1f} ms ({100 * value / total:.0f}%)")
        left += value
    ax.set_yticks([])
    ax.set_xlabel("mean device time per pass (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_per_image(records: Sequence[PassRecord], names: Sequence[str], path: Path, title: str) -> Path | None:
    """Per pass: prefill and decode ms (points per repeat), by batch in input order."""
    recs = [r for r in records if r.status == "ok"]
    if not recs:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(names) + 3), 3.6))
    for stage, marker, color in ((Stage.PREFILL.value, "o", "#4c72b0"), (Stage.DECODE.value, "s", "#ccb974")):
        xs = [r.batch_index for r in recs if stage in r.stage_ms]
        ys = [r.stage_ms[stage] for r in recs if stage in r.stage_ms]
        ax.scatter(xs, ys, marker=marker, color=color, label=stage, alpha=0.8)
    ax.set_xlabel("batch (input order)")
    ax.set_ylabel("device time (ms)")
    ticks = sorted({r.batch_index for r in recs})
    ax.set_xticks(ticks)
    ax.set_xticklabels([names[t] if t < len(names) else str(t) for t in ticks], rotation=60, ha="right", fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return path
