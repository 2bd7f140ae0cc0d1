"""Markdown artifacts of a profiling run: report.md, operators.md, assumptions.md.

Everything is rendered from the run's :class:`~llm_perf_opt.profiling.run.RunOutcome`
(the same numbers metrics.json holds); nothing here measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llm_perf_opt.data.common import Stats
from llm_perf_opt.data.io import atomic_write_text
from llm_perf_opt.profiling.aggregate import STAGE_ORDER
from llm_perf_opt.profiling.mfu import Utilization
from llm_perf_opt.profiling.operators import BASIS_CUDA, OperatorTable, stage_order
from llm_perf_opt.profiling.records import PassRecord
from llm_perf_opt.profiling.run import EVENTS_FILE, PASSES_FILE, TRACE_FILE, RunOutcome
from llm_perf_opt.vocab import VISION_STAGES, Stage


def fmt(value: float | None, digits: int = 2) -> str:
    """Number with ``digits`` decimals, or '-' for None."""
    return "-" if value is None else f"{value:,.{digits}f}"


def pct(value: float | None, digits: int = 2) -> str:
    """Fraction as a percentage with ``digits`` decimals (more for tiny values, so they never read 0), or '-'."""
    if value is None:
        return "-"
    p = 100 * value
    if p != 0 and abs(p) < 10 ** -digits:
        return f"{p:.2g}%"
    return f"{p:.{digits}f}%"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A Markdown table; ``align`` is one char per column ('l' or 'r')."""
    al = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in al]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def stats_row(label: str, s: Stats | None, extra: Sequence[str] = ()) -> list[str]:
    """label | mean | std | p50 | p90 | min | max | n | extra..."""
    if s is None:
        return [label, *(["-"] * 7), *extra]
    return [label, fmt(s.mean), fmt(s.std), fmt(s.p50), fmt(s.p90), fmt(s.min), fmt(s.max), str(s.count), *extra]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


#: Plot file names (profile_plots writes them; kept here so reports render without matplotlib).
STAGE_BREAKDOWN_PNG = "stage_breakdown.png"
PER_IMAGE_PNG = "per_image_timings.png"


def language_prefill_ms(record: PassRecord) -> float:
    """Prefill minus its vision sub-stages (the decoder's prompt pass, merge and LM head), ms."""
    pre = record.stage_ms.get(Stage.PREFILL.value, 0.0)
    return max(0.0, pre - sum(record.stage_ms.get(s.value, 0.0) for s in VISION_STAGES))


def language_prefill_stats(records: Sequence[PassRecord]) -> Stats | None:
    """Stats of prefill minus vision per pass."""
    vals = [language_prefill_ms(r) for r in records if Stage.PREFILL.value in r.stage_ms]
    return Stats.from_values(vals) if vals else None


def _util_cells(util: Utilization | None, stage: Stage) -> list[str]:
    if util is None:
        return ["-", "-"]
    return [pct(util.stage_mfu.get(stage)), pct(util.stage_mbu.get(stage))]


def load_text(load_ms: Stats | None, records: Sequence[PassRecord]) -> str:
    """The report's image load figure: the mean over the passes that loaded their pages, and how many ran
    the images loaded by the pass before them (a warm-up, a repeat of a one-batch set)."""
    n = sum(r.pages_reused for r in records)
    if load_ms is None:
        return ("not timed: every measured pass ran the images loaded by the pass before it (the warm-up)" if n
                else f"{fmt(None)} ms")
    return (f"{fmt(load_ms.mean)} ms (not in end to end)"
            + (f"; the mean of {len(records) - n} of {len(records)} measured passes, the others ran the images "
               "loaded by the pass before them" if n else ""))


def allocator_line(records: Sequence[PassRecord]) -> str | None:
    """One line on the CUDA caching allocator over the measured passes: cudaMalloc/cudaFree calls per pass
    and retries (each retry frees the allocator's cache, a device sync), and the largest reserved memory.
    None where no pass recorded the counters (CPU runs, older runs)."""
    rec = [r for r in records if r.device_allocs is not None]
    if not rec:
        return None
    def per(field: str) -> str:
        vals = [getattr(r, field) for r in rec if getattr(r, field) is not None]
        return fmt(sum(vals) / len(vals), 1) if vals else "-"

    reserved = max((r.peak_reserved_bytes or 0 for r in rec), default=0)
    return (f"- Caching allocator per pass: {per('device_allocs')} cudaMalloc ({per('decode_device_allocs')} "
            f"in the decode), {per('device_frees')} cudaFree, {per('alloc_retries')} retries after a failed "
            f"allocation (each empties the cache with a device sync); peak reserved {fmt(reserved / 2**30)} GiB.")


def host_probe_line(records: Sequence[PassRecord]) -> str:
    """One line on the host-speed probe of the passes (us per tiny eager op; a spread means the host's
    speed changed during the run, and host-bound stages with it)."""
    vals = [r.host_probe_us for r in records if r.host_probe_us]
    if not vals:
        return "- Host speed probe: not recorded."
    st = Stats.from_values(vals)
    line = (f"- Host speed probe (us per tiny eager op, before each pass): mean {fmt(st.mean)}, "
            f"min {fmt(min(vals))}, max {fmt(max(vals))}; host-bound stages slow down with it.")
    mods = [r.host_module_probe_us for r in records if r.host_module_probe_us]
    if mods:
        ms = Stats.from_values(mods)
        line += (f" On the model's own code path (us per aten call of a tiny decoder forward): mean "
                 f"{fmt(ms.mean)}, min {fmt(min(mods))}, max {fmt(max(mods))}.")
    after = [r.host_probe_after_us for r in records if r.host_probe_after_us]
    if after:
        line += f" The same probe after each pass: mean {fmt(Stats.from_values(after).mean)}"
        mods_after = [r.host_module_probe_after_us for r in records if r.host_module_probe_after_us]
        if mods_after:
            line += f", on the model's path {fmt(Stats.from_values(mods_after).mean)}"
        line += " (compare takes each pass's mean of the two)."
    return line


def stage_section(o: RunOutcome) -> str:
    """Stage timing table with tokens/s, MFU and MBU."""
    agg = o.aggregates
    rows = []
    for stage in STAGE_ORDER:
        label = f"{stage.value} (inside prefill)" if stage in VISION_STAGES else stage.value
        if stage is Stage.PREFILL:
            label = "prefill (incl. vision)"
        tps = agg.stage_tokens_per_s.get(stage)
        rows.append(stats_row(label, agg.stage_ms.get(stage), [fmt(tps.mean if tps else None, 1),
                                                               *_util_cells(o.utilization, stage)]))
    rows.append(stats_row("vision total (sam+clip+projector)", agg.vision_ms,
                          ["-", pct(o.utilization.vision_mfu) if o.utilization else "-", "-"]))
    rows.append(stats_row("prefill language part (prefill - vision)", language_prefill_stats(agg.ok_records),
                          ["-", "-", "-"]))
    rows.append(stats_row("decode per step (one token per page)", agg.decode_ms_per_token, ["-", "-", "-"]))
    rows.append(stats_row("decode.step.{i} ranges (every step of every pass)", agg.decode_step_ms, ["-", "-", "-"]))
    rows.append(stats_row("end to end (host clock, synced)", agg.e2e_ms, ["-", "-", "-"]))
    headers = ["stage (ms)", "mean", "std", "p50", "p90", "min", "max", "n", "tokens/s", "MFU", "MBU"]
    return table(headers, rows)


def utilization_lines(util: Utilization | None, label: str) -> list[str]:
    """Bullet lines on a Utilization (peaks used, model-level MFU/MBU)."""
    if util is None:
        return []
    p = util.peaks
    return [
        f"- {label}: GPU `{p.gpu_key}`, {p.flops_per_s / 1e12:,.1f} TFLOP/s dense, "
        f"{p.bytes_per_s / 1e12:,.2f} TB/s ({p.origin}).",
        f"  Model (prefill + decode) MFU {pct(util.model_mfu, 3)}, MBU {pct(util.model_mbu, 2)}; "
        f"vision MFU {pct(util.vision_mfu, 2)}.",
        "  Analytic work summed over measured passes: "
        + ", ".join(f"{s.value} {util.stage_flops[s] / 1e12:,.3f} TFLOP / {util.stage_bytes[s] / 1e9:,.2f} GB"
                    for s in STAGE_ORDER if s in util.stage_flops) + ".",
    ]


def per_image_section(o: RunOutcome) -> str:
    """One row per batch: page(s), category, size, tiles, tokens, mean prefill/decode/e2e over repeats."""
    by_batch: dict[int, list[PassRecord]] = {}
    for r in o.aggregates.ok_records:
        by_batch.setdefault(r.batch_index, []).append(r)
    rows = []
    for b in sorted(by_batch):
        recs = by_batch[b]
        first = recs[0]
        pages = [o.pages[i] for i in first.image_indices if i < len(o.pages)]
        rows.append([
            ", ".join(p.name for p in pages), ", ".join(sorted({p.category for p in pages})),
            ", ".join(f"{p.width}x{p.height}" for p in pages), ", ".join(str(t) for t in first.num_tiles),
            str(first.image_tokens), str(first.prompt_tokens), str(first.generated_tokens),
            fmt(_mean([r.stage_ms.get("vision.sam", 0.0) + r.stage_ms.get("vision.clip", 0.0)
                       + r.stage_ms.get("projector", 0.0) for r in recs])),
            fmt(_mean([r.stage_ms.get("prefill", 0.0) for r in recs])),
            fmt(_mean([r.stage_ms.get("decode", 0.0) for r in recs])),
            fmt(_mean([r.e2e_ms for r in recs])), fmt(_mean([r.preprocess_ms for r in recs])), str(len(recs)),
        ])
    headers = ["page(s)", "category", "size px", "tiles", "image tokens", "prompt tokens", "generated",
               "vision ms", "prefill ms", "decode ms", "e2e ms", "preprocess ms", "repeats"]
    return table(headers, rows, "l" * 4 + "r" * 9)


def gpu_busy(o: RunOutcome) -> dict[str, tuple[float, float]]:
    """stage -> (timed ms, kernel ms) per pass (decode: per step), for CUDA runs with an operator table.

    Kernel ms come from the profiler pass (innermost stage, so ``prefill`` here is its language part) and
    timed ms from the CUDA events of the timed passes; the profiled batches are a subset of the timed ones,
    so the ratio is an estimate of how busy the GPU is inside each range.
    """
    t, opts = o.table, o.options
    if t is None or opts is None or t.basis != BASIS_CUDA or not o.aggregates.ok_records or not t.profiled_steps:
        return {}
    agg = o.aggregates
    out: dict[str, tuple[float, float]] = {}
    for stage in VISION_STAGES:
        if stage in agg.stage_ms and stage.value in t.stage_ms:
            out[stage.value] = (agg.stage_ms[stage].mean, t.stage_ms[stage.value] / t.profiled_steps)
    lang = language_prefill_stats(agg.ok_records)
    if lang is not None and Stage.PREFILL.value in t.stage_ms:
        out["prefill (language part)"] = (lang.mean, t.stage_ms[Stage.PREFILL.value] / t.profiled_steps)
    steps = opts.profile_max_new_tokens or opts.settings.max_new_tokens
    if agg.decode_ms_per_token is not None and Stage.DECODE.value in t.stage_ms and steps:
        out["decode, per step"] = (agg.decode_ms_per_token.mean, t.stage_ms[Stage.DECODE.value] / t.profiled_steps / steps)
    return out


def gpu_busy_section(o: RunOutcome) -> str:
    """Table: timed ms vs kernel ms per stage and the busy fraction."""
    busy = gpu_busy(o)
    if not busy:
        return "Needs a CUDA run with a profiler pass."
    rows = [[name, fmt(timed), fmt(kernel, 3), pct(kernel / timed if timed > 0 else None, 1)]
            for name, (timed, kernel) in busy.items()]
    return ("Kernel time inside each range (profiler pass) over the range's CUDA-event time (timed passes): "
            "a low share means the GPU waits for the host (launch or Python overhead).\n\n"
            + table(["range", "timed ms", "kernel ms", "GPU busy"], rows))


def operator_summary_section(o: RunOutcome, top: int) -> str:
    """Short operator view for report.md (full table in operators.md)."""
    t = o.table
    if t is None:
        return "No torch.profiler pass was run (`--profile-images 0`) or it failed; see the notes."
    basis = "self CUDA time" if t.basis == BASIS_CUDA else "self CPU time (CPU run: no device time)"
    rows = [[f"`{r.op_name}`", r.category.value, str(r.calls),
             fmt(t.per_step(r.self_cuda_time_ms if t.basis == BASIS_CUDA else r.self_cpu_time_ms), 3),
             pct(r.share_of_total, 1)] for r in t.top(top)]
    return (f"Basis: {basis}, per profiled pass (mean over {t.profiled_steps}).\n\n"
            + table(["operator", "category", "calls", "ms / pass", "share"], rows))


def render_report(o: RunOutcome) -> str:
    """report.md."""
    r, opts = o.report, o.options
    assert opts is not None
    s = opts.settings
    meta = r.meta
    gpu = o.env.get("gpu") or {}
    agg = o.aggregates
    cats: dict[str, int] = {}
    for p in o.pages:
        cats[p.category] = cats.get(p.category, 0) + 1
    lines = [
        f"# Stage 1 profiling report: `{meta.run_id}`",
        "",
        f"- Command: `{opts.command}`" if opts.command else "- Command: (library call)",
        f"- Device: {meta.device_name}" + (f" (catalogue key `{gpu.get('catalog_key')}`, driver "
                                           f"{gpu.get('driver_version')}, CUDA {gpu.get('cuda_runtime_version')})"
                                           if gpu else ""),
        f"- Software: torch {meta.torch_version}, transformers {meta.transformers_version}, "
        f"project revision `{meta.git_revision or 'unknown'}`",
        f"- Model: DeepSeek-OCR, config `{r.model.config_origin}`, {r.model.weights.value} weights, "
        f"{r.model.parameter_count / 1e6:,.1f} M parameters, {r.model.dtype.value}, "
        f"attention `{r.model.attn_implementation.value}`, experts `{s.experts_implementation}`",
        f"- Workload: mode `{meta.mode}`, batch {meta.batch_size}, max_new_tokens {meta.max_new_tokens} "
        f"({'fixed length, EOS ignored' if meta.fixed_length else 'stops at EOS'}), "
        f"no-repeat n-gram {s.no_repeat_ngram_size}, prompt `{s.prompt!r}`",
        f"- Inputs: {len(o.pages)} page(s) from {opts.input_origin or 'inputs'} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(cats.items())) + ")",
        f"- Measurement: {meta.warmup} warm-up pass(es), {meta.repeats} repeat(s) -> {len(agg.ok_records)} "
        f"measured pass(es); {'CUDA events per stage' if s.device.startswith('cuda') else 'host clock per stage (CPU)'}",
        f"- Started {meta.started_at.isoformat()}, finished {meta.finished_at.isoformat()} "
        f"({meta.duration_s:.1f} s)",
        "",
        "## Stage timings",
        "",
        "Per pass (one batch of pages in one repeat). `prefill` includes the vision sub-stages; they are also "
        "shown on their own. Statistics over images x repeats.",
        "",
        stage_section(o),
        "",
        f"- Throughput: {fmt(agg.pages_per_s.mean if agg.pages_per_s else None, 3)} pages/s "
        f"(std {fmt(agg.pages_per_s.std if agg.pages_per_s else None, 3)}); decode "
        f"{fmt(agg.stage_tokens_per_s[Stage.DECODE].mean if Stage.DECODE in agg.stage_tokens_per_s else None, 1)}"
        " tokens/s.",
        f"- Host preprocessing (resize, tile, normalise) per pass: {fmt(agg.preprocessing_ms.mean if agg.preprocessing_ms else None)} ms "
        f"(std {fmt(agg.preprocessing_ms.std if agg.preprocessing_ms else None)}); image load/draw "
        f"{load_text(agg.load_ms, agg.ok_records)}.",
        f"- Peak device memory: {fmt(r.peak_memory_bytes / 2**30 if r.peak_memory_bytes else None)} GiB.",
        host_probe_line(agg.ok_records),
        *[x for x in (allocator_line(agg.ok_records),) if x],
        "",
        "## Utilisation (MFU / MBU)",
        "",
    ]
    if o.utilization is None and o.utilization_measured is None:
        lines.append("Not computed: " + (o.analytic_note or "no catalogued GPU peaks for this device "
                                         "(CPU run, or pass `--gpu KEY`)") + ".")
    lines += utilization_lines(o.utilization, "Datasheet peaks")
    lines += utilization_lines(o.utilization_measured, "Measured ceilings (hw bench)")
    if o.analytic_note:
        lines.append(f"- Analytic FLOPs/bytes: {o.analytic_note}")
    lines += [
        "",
        "## GPU busy time per stage",
        "",
        gpu_busy_section(o),
        "",
        "## Per image",
        "",
        per_image_section(o),
        "",
        "## Operators (top 10; full table in operators.md)",
        "",
        operator_summary_section(o, 10),
        "",
        "## Skipped",
        "",
    ]
    if r.skipped_images:
        lines += [f"- `{sk.ref}`: {sk.reason}" for sk in r.skipped_images]
    else:
        lines.append("Nothing was skipped.")
    lines += ["", "## Notes", ""]
    lines += [f"- {n}" for n in o.notes] or ["- none"]
    lines += [
        "",
        "## Files",
        "",
        f"- `metrics.json` (LLMProfileReport), `{PASSES_FILE}` (every pass as measured), `operators.md`, "
        f"`stakeholder_summary.md`, `assumptions.md`, `inputs.yaml`, `env.json`, `settings.json`",
        f"- `{TRACE_FILE}` (Chrome/Perfetto trace of the profiler pass), `{EVENTS_FILE}` (its operator event tree), `operator_table.json` (stage x category totals)",
        f"- ![stage breakdown]({STAGE_BREAKDOWN_PNG}) ![per-image timings]({PER_IMAGE_PNG})",
        "",
    ]
    return "\n".join(lines)


def render_operators(o: RunOutcome) -> str:
    """operators.md: top-K table, categories, stage x category, profiler stage split."""
    t: OperatorTable | None = o.table
    opts = o.options
    assert opts is not None
    if t is None:
        return "# Operators\n\nNo torch.profiler pass in this run (`--profile-images 0`) or it failed.\n"
    cuda = t.basis == BASIS_CUDA
    basis = "self CUDA time (kernels launched by the operator itself)" if cuda else \
        "self CPU time (CPU-only run: there is no device time)"
    names = ", ".join(o.pages[b * opts.settings.batch_size].name for b in o.profiled_batches
                      if b * opts.settings.batch_size < len(o.pages))
    dec = opts.profile_max_new_tokens or opts.settings.max_new_tokens
    lines = [
        f"# Operators of run `{o.report.meta.run_id}`",
        "",
        f"- torch.profiler over {t.profiled_steps} pass(es) (batches starting at: {names}), after 1 warm-up "
        f"step; decode length in this pass: {dec} tokens.",
        f"- Ranking basis: {basis}. Self times never include children, so the rows add up "
        "without double counting; 'CPU total' does include children and must not be summed.",
        f"- Sum of the operators' self time: {fmt(t.total_self_ms, 3)} ms"
        + (f"; all kernels the profiler saw: {fmt(t.device_kernel_ms, 3)} ms; kernel time launched "
           f"outside any operator: {fmt(t.unattributed_device_ms, 3)} ms." if cuda else "."),
        "- Categories come from the shared TargetOperatorList (aten op names); `uncategorized` is time "
        "whose operator the list does not name.",
        "",
        f"## Top {opts.top_k} operators",
        "",
    ]
    rows = []
    for i, r in enumerate(t.top(opts.top_k), 1):
        rows.append([str(i), f"`{r.op_name}`", r.category.value, str(r.calls), fmt(r.self_cuda_time_ms, 3),
                     fmt(r.self_cpu_time_ms, 3), fmt(r.total_cpu_time_ms, 3), pct(r.share_of_total, 2)])
    lines.append(table(["#", "operator", "category", "calls", "self CUDA ms", "self CPU ms", "CPU total ms",
                        "share"], rows, "rllrrrrr"))
    rest = t.rows[opts.top_k:]
    if rest:
        rest_ms = sum(r.self_cuda_time_ms if cuda else r.self_cpu_time_ms for r in rest)
        lines += ["", f"{len(rest)} more operator(s) with {fmt(rest_ms, 3)} ms self time "
                      f"({pct(rest_ms / t.total_self_ms if t.total_self_ms else None, 2)}) are in metrics.json."]
    lines += ["", "## By category", ""]
    total = t.total_self_ms or 1.0
    lines.append(table(["category", "self ms", "share"],
                       [[c, fmt(v, 3), pct(v / total, 2)] for c, v in t.category_ms.items()]))
    lines += ["", "## By stage (innermost range; from the profiler pass)", ""]
    stage_rows = []
    for st in stage_order(list(t.stage_ms)):
        v = t.stage_ms[st]
        label = "prefill (language part: outside the vision ranges)" if st == Stage.PREFILL.value else st
        kernels = t.stage_kernels.get(st)
        host = t.stage_host_ms.get(st)
        stage_rows.append([label, fmt(v, 3), fmt(t.per_step(v), 3), pct(v / total, 2),
                           fmt(t.per_step(kernels), 0) if kernels is not None else "n/a",
                           fmt(t.per_step(host), 3) if host is not None else "n/a"])
    lines.append(table(["stage", "self ms (all passes)", "ms / pass", "share", "kernels / pass",
                        "host self ms / pass"], stage_rows))
    lines += ["", "Kernels: device kernels launched by the stage's operators; host self ms: the operators' own "
              "CPU time (dispatch cost). A stage whose host ms exceeds its device ms is host bound."]
    lines += ["", "## Stage x category (self ms, all profiled passes)", ""]
    cats = list(t.category_ms)
    sc_rows = [[st, *[fmt(t.stage_category_ms.get(st, {}).get(c, 0.0), 3) for c in cats]]
               for st in stage_order(list(t.stage_category_ms))]
    lines.append(table(["stage", *cats], sc_rows))
    if o.timeline:
        from llm_perf_opt.profiling.timeline import render_timeline_markdown

        lines += ["", "## Host/device timeline (from trace.json.gz; ms per range, decode per step)", "",
                  render_timeline_markdown(o.timeline), "",
                  "Host ms: the range on the host (prefill: its language part). Device span / busy: the kernels "
                  "launched from the range, first start to last end / union. Backlog at start: how long after the "
                  "range began its first kernel ran (> 0: the device was still busy with earlier work); backlog "
                  "at end: how long after the host left the range its last kernel ended (> 0: the host ran "
                  "ahead, so the next stage's launches overlap this stage's device time). Also in timeline.json."]
    lines.append("")
    return "\n".join(lines)


def render_assumptions(o: RunOutcome) -> str:
    """assumptions.md: how every number was obtained and what it does not cover."""
    opts = o.options
    assert opts is not None
    s = opts.settings
    cuda = s.device.startswith("cuda")
    items = [
        ("Timing", "CUDA events recorded on the current stream around every range, read after one "
         "synchronisation at the end of each pass (no synchronisation inside a pass)." if cuda else
         "Host clock (time.perf_counter) around every range; on CPU the work is synchronous."),
        ("Ranges", "NVTX ranges (CUDA only) use the shared stage names vision.sam, vision.clip, projector, "
         "prefill, decode and decode.step.{i}, so an Nsight Systems capture lines up with these tables."),
        ("Stages", "prefill includes the vision sub-stages and the decoder's prompt pass with the LM head on the "
         "last position. decode is every decode step: each step bans repeated n-grams, picks the argmax "
         "token, and (except the last) runs one decoder pass. The first generated token's logits come "
         "from prefill."),
        ("Samples", f"A sample is one pass over a batch of {s.batch_size} page(s) in one repeat; statistics "
         "use every measured pass (images x repeats). Warm-up passes are not measured."),
        ("Tokens", "vision stages: nominal image tokens; prefill: real prompt tokens (BOS, text, every "
         "<image> slot incl. newlines and separator); decode: generated tokens (batch rows x steps)."),
        ("Throughput", "pages/s = pages in the batch / end-to-end seconds, where end to end is host "
         "preprocessing + prefill + decode with the device synchronised; image loading or drawing is "
         "excluded and reported separately."),
        ("Weights", "random weights (seeded): timings are representative of the architecture, but MoE "
         "routing is not that of the trained model, so expert load balance (and grouped-GEMM shapes) may "
         "differ." if not s.model_dir else f"checkpoint from {s.model_dir}."),
        ("Decode length", f"{'fixed at max_new_tokens, EOS ignored, so runs compare' if s.fixed_length else 'stops at EOS per batch'}."),
        ("Prompt", "token ids from the synthetic tokenizer stand-in (one token per word / mark / special "
         "token); a real tokenizer may give a few more text tokens." if not s.model_dir else
         "token ids from the model folder's tokenizer."),
        ("Operator table", f"torch.profiler over {opts.profile_images} batch(es) spread over the set, after "
         "one warm-up step, in a separate pass after the timed ones (the profiler's overhead does not touch "
         f"the timings); decode length in that pass: {opts.profile_max_new_tokens or s.max_new_tokens}."),
        ("MFU / MBU", "analytic FLOPs and bytes of each pass's exact workload divided by the measured stage "
         "time and the catalogue's DENSE peak for the dtype (never a sparsity figure) and its memory "
         "bandwidth; with --ceilings also by the measured ceilings. Model-level = prefill + decode."),
    ]
    if o.analytic_note:
        items.append(("Analytic model", o.analytic_note))
    lines = [f"# Assumptions of run `{o.report.meta.run_id}`", ""]
    lines += [f"- **{k}.** {v}" for k, v in items]
    lines.append("")
    return "\n".join(lines)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) whole or not at all (``data.io.atomic_write_text``: a rebuild or a run stopped
    while writing keeps the old file) and return the path."""
    atomic_write_text(path, text)
    return path
