"""stakeholder_summary.md: plain-language findings of a profiling run, every sentence from its numbers.

The suggestions are rules over the measured shares and utilisations (each
rule states the number that triggered it), not generic advice.
"""

from __future__ import annotations

from llm_perf_opt.profiling.operators import BASIS_CUDA
from llm_perf_opt.profiling.run import RunOutcome
from llm_perf_opt.reporting.profile_report import fmt, gpu_busy, pct
from llm_perf_opt.vocab import VISION_STAGES, OperatorCategory, Stage

#: Decode MBU below this fraction while decode dominates -> launch / host bound (rule threshold).
LOW_DECODE_MBU = 0.2
#: Kernel time below this share of a decode step's time -> the GPU mostly waits for the host (rule threshold).
LOW_GPU_BUSY = 0.5
#: A category above this share of operator time is called out.
CATEGORY_CALLOUT_SHARE = 0.15


def _stage_means(o: RunOutcome) -> dict[str, float]:
    recs = o.aggregates.ok_records
    n = len(recs) or 1
    vision = sum(sum(r.stage_ms.get(s.value, 0.0) for s in VISION_STAGES) for r in recs) / n
    prefill = sum(r.stage_ms.get(Stage.PREFILL.value, 0.0) for r in recs) / n
    decode = sum(r.stage_ms.get(Stage.DECODE.value, 0.0) for r in recs) / n
    return {"vision": vision, "prefill_language": max(0.0, prefill - vision), "decode": decode}


def render_summary(o: RunOutcome) -> str:
    """The stakeholder summary (Markdown)."""
    opts = o.options
    assert opts is not None
    s = opts.settings
    meta = o.report.meta
    agg = o.aggregates
    lines = [f"# What this run found ({meta.run_id})", ""]
    if not agg.ok_records:
        lines += ["Nothing was measured: " + ("; ".join(o.notes) or "no pass completed") + ".", ""]
        return "\n".join(lines)
    means = _stage_means(o)
    total = sum(means.values()) or 1.0
    dominant = max(means, key=lambda k: means[k])
    names = {"vision": "reading the image (vision encoders)",
             "prefill_language": "processing the prompt (language model prefill)",
             "decode": "writing the output text (decode)"}
    pages_s = agg.pages_per_s.mean if agg.pages_per_s else None
    tok_s = agg.stage_tokens_per_s.get(Stage.DECODE)
    ms_tok = agg.decode_ms_per_token.mean if agg.decode_ms_per_token else None
    device = meta.device_name
    lines += [
        "## Headline",
        "",
        f"- On {device}, DeepSeek-OCR ({'random' if not s.model_dir else 'checkpoint'} weights, {s.dtype.value}, "
        f"mode `{s.mode}`, batch {s.batch_size}) processed a page in {fmt(agg.e2e_ms.mean if agg.e2e_ms else None, 1)} ms "
        f"end to end with {s.max_new_tokens} output tokens: {fmt(pages_s, 3)} pages/s.",
        f"- Where the time goes (mean per pass): {names['vision']} {fmt(means['vision'], 1)} ms "
        f"({100 * means['vision'] / total:.0f}%), {names['prefill_language']} {fmt(means['prefill_language'], 1)} ms "
        f"({100 * means['prefill_language'] / total:.0f}%), {names['decode']} {fmt(means['decode'], 1)} ms "
        f"({100 * means['decode'] / total:.0f}%). The largest part is {names[dominant]}.",
        f"- Text generation runs at {fmt(tok_s.mean if tok_s else None, 1)} tokens/s "
        f"({fmt(ms_tok, 2)} ms per decode step, one token per page).",
    ]
    util = o.utilization_measured or o.utilization
    if util is not None:
        lines.append(
            f"- Hardware use against `{util.peaks.gpu_key}` {util.peaks.origin} peaks: the whole model reaches "
            f"{pct(util.model_mfu, 2)} of peak compute (MFU) and {pct(util.model_mbu, 1)} of peak memory "
            f"bandwidth (MBU); decode {pct(util.stage_mfu.get(Stage.DECODE), 3)} MFU / "
            f"{pct(util.stage_mbu.get(Stage.DECODE), 1)} MBU; vision {pct(util.vision_mfu, 1)} MFU.")
    else:
        lines.append("- MFU/MBU were not computed for this device (see report.md).")
    busy = gpu_busy(o).get("decode, per step")
    if busy is not None and busy[0] > 0:
        lines.append(f"- During decode the GPU computes for {fmt(busy[1], 2)} ms of each {fmt(busy[0], 2)} ms step "
                     f"({pct(busy[1] / busy[0], 0)} busy); the rest is waiting on the host.")
    t = o.table
    if t is not None and t.rows:
        top = t.rows[:3]
        basis = "GPU" if t.basis == BASIS_CUDA else "CPU"
        lines.append("- The three operators with the most " + basis + " time: "
                     + "; ".join(f"`{r.op_name}` ({r.category.value}, {pct(r.share_of_total, 1)})" for r in top)
                     + ".")
        unc = t.category_ms.get(OperatorCategory.UNCATEGORIZED.value, 0.0)
        if t.total_self_ms > 0:
            lines.append(f"- {pct(unc / t.total_self_ms, 1)} of operator time is in operators the category "
                         "list does not name (shown as `uncategorized`).")
    lines += ["", "## What to try next (each from a number above)", ""]
    tips: list[str] = []
    decode_mbu = util.stage_mbu.get(Stage.DECODE) if util else None
    busy_share = busy[1] / busy[0] if busy is not None and busy[0] > 0 else None
    if dominant == "decode":
        low_mbu = decode_mbu is not None and decode_mbu < LOW_DECODE_MBU
        idle = busy_share is not None and busy_share < LOW_GPU_BUSY
        if low_mbu or idle:
            evidence = "; ".join(x for x in (
                f"uses only {pct(decode_mbu, 1)} of memory bandwidth" if low_mbu else "",
                f"the GPU is busy {pct(busy_share, 0)} of each step" if idle else "") if x)
            tips.append(f"Decode dominates ({100 * means['decode'] / total:.0f}% of the time) and {evidence}: it is "
                        "bound by kernel launches and host overhead, not by the GPU. Capture the decode step in a "
                        "CUDA graph (or torch.compile with mode='reduce-overhead'), and batch several pages per "
                        "pass.")
        else:
            tips.append(f"Decode dominates ({100 * means['decode'] / total:.0f}% of the time): larger batches "
                        "raise tokens/s per GPU; a serving engine with continuous batching (vLLM) does this.")
    if dominant == "prefill_language":
        tips.append(f"The language-model prefill dominates ({100 * means['prefill_language'] / total:.0f}%): the "
                    "prompt holds every image slot, so a smaller mode (fewer slots) or fused attention "
                    "(`--attn-implementation sdpa`) shortens it.")
    if dominant == "vision":
        tips.append(f"The vision encoders dominate ({100 * means['vision'] / total:.0f}%): try "
                    "`--attn-implementation sdpa` (fused attention for SAM's global blocks) and a smaller mode "
                    "where accuracy allows.")
    if t is not None and t.total_self_ms > 0:
        for cat, ms in t.category_ms.items():
            share = ms / t.total_self_ms
            if share < CATEGORY_CALLOUT_SHARE:
                continue
            if cat == OperatorCategory.ATTENTION.value and s.attn_implementation == "eager":
                tips.append(f"Attention takes {pct(share, 1)} of operator time with eager attention: "
                            "compare `--attn-implementation sdpa`.")
            elif cat == OperatorCategory.MOE_EXPERTS.value:
                tips.append(f"MoE experts take {pct(share, 1)} of operator time: compare "
                            "`--experts-implementation` grouped_mm / batched_mm.")
            elif cat in (OperatorCategory.ELEMENTWISE.value, OperatorCategory.MEMORY.value):
                tips.append(f"`{cat}` operators take {pct(share, 1)} of operator time: many small kernels; "
                            "fusion (torch.compile) would remove most of them.")
    if not tips:
        tips.append("No single stage or operator category stands out; compare against the analytic model "
                    "(`llm-perf-opt compare`) to see which stage is furthest from its roofline.")
    lines += [f"- {tip}" for tip in tips]
    skipped = len(o.report.skipped_images)
    lines += ["", "## Caveats", "",
              f"- {len(agg.ok_records)} measured pass(es) over {len(o.pages)} page(s); {skipped} skipped "
              "(see report.md).",
              "- Random weights: timings reflect the architecture; expert routing differs from the trained model."
              if not s.model_dir else "- Real checkpoint weights.",
              "- Method and limits: assumptions.md.", ""]
    return "\n".join(lines)
