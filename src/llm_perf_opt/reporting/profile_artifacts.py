"""Write every artifact of a profiling run from its outcome (metrics.json, Markdown, plots)."""

from __future__ import annotations

from pathlib import Path

from llm_perf_opt.profiling.run import RunOutcome, write_metrics
from llm_perf_opt.reporting.profile_report import (
    render_assumptions,
    render_operators,
    render_report,
    write_text,
)
from llm_perf_opt.reporting.profile_summary import render_summary

#: Files every run folder's artifact directory holds after a run (plots only when a pass was measured).
REQUIRED_ARTIFACTS: tuple[str, ...] = (
    "report.md", "operators.md", "metrics.json", "metrics.yaml", "stakeholder_summary.md", "inputs.yaml", "env.json",
    "assumptions.md", "settings.json", "passes.jsonl",
)


def write_artifacts(outcome: RunOutcome, *, plots: bool = True) -> list[Path]:
    """Write metrics.json, report.md, operators.md, stakeholder_summary.md, assumptions.md and, unless
    ``plots`` is False (a rebuild that keeps the run's own), the plots; each file whole or not at all. metrics.json
    comes first: a run stopped while writing keeps it, and ``llm-perf-opt rebuild`` makes the rest from it.
    A rebuild writes them inside ``data.io.all_or_nothing`` (one write over the old reports)."""
    d = outcome.artifact_dir
    title = f"{outcome.report.meta.run_id}: mode {outcome.report.meta.mode}, {outcome.report.meta.device_name}"
    written = [write_metrics(outcome)]
    if plots:
        written += _write_plots(outcome, title)
    written.append(write_text(d / "report.md", render_report(outcome)))
    written.append(write_text(d / "operators.md", render_operators(outcome)))
    written.append(write_text(d / "stakeholder_summary.md", render_summary(outcome)))
    written.append(write_text(d / "assumptions.md", render_assumptions(outcome)))
    return written


def _write_plots(outcome: RunOutcome, title: str) -> list[Path]:
    """The stage breakdown and per-image plots (none, with a note, when matplotlib is missing)."""
    d = outcome.artifact_dir
    written: list[Path] = []
    try:
        from llm_perf_opt.reporting.profile_plots import (
            PER_IMAGE_PNG,
            STAGE_BREAKDOWN_PNG,
            plot_per_image,
            plot_stage_breakdown,
        )
    except ImportError as exc:  # matplotlib missing on a bare GPU box: everything else is still written
        outcome.notes.append(f"plots not drawn: {exc}")
    else:
        batch = outcome.report.meta.batch_size
        names = [outcome.pages[b * batch].name for b in range((len(outcome.pages) + batch - 1) // batch)]
        for path in (plot_stage_breakdown(outcome.aggregates, d / STAGE_BREAKDOWN_PNG, title),
                     plot_per_image(outcome.aggregates.ok_records, names, d / PER_IMAGE_PNG, title)):
            if path is not None:
                written.append(path)
    return written
