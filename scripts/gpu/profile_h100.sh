#!/usr/bin/env bash
# Stage 1 profiling on one H100 (issue 6): full-size DeepSeek-OCR, random bf16 weights, 10 synthetic
# pages (text_heavy / mixed_layout / image_rich, A4 and Letter at 150 dpi), Base and Gundam modes,
# 2 measured repeats, 256 fixed new tokens, eager attention; torch.profiler over 2 pages per mode with a
# 16-token decode (a 256-token profile of ~1,000 kernels per token would make a trace of hundreds of MB).
#
# Run from the repository root on the GPU machine:   bash scripts/gpu/profile_h100.sh
#
# Runtime estimate (H100, decode ~20 ms/token at batch 1 eager, gpu-measurements.md): per mode
# (1 warm-up + 10 pages x 2 repeats) x 256 tokens x ~20 ms = ~110 s of decode, + prefill/vision
# (~0.1 s Base, ~0.3 s Gundam per pass), + model build and profiler pass (~20-40 s) => ~2.5-3 min per
# mode, ~5-6 min in all. Each mode runs under `timeout -s INT $MODE_BUDGET_S` (default 255 s; 2 x 255 s + a 20 s kill margin each stays under 10 min): if a mode
# runs long it is interrupted like Ctrl-C and still writes its reports over the passes it measured
# (the report lists what was skipped).
#
# Full run folders go to $RUNS (default ./tmp/gpu-runs, NOT under $OUT). Under $OUT (default
# ./tmp/gpu-out) it writes only 7 files, so that all of them come back:
#   profile-summary.txt                  short table of both modes + the exact commands + log tails
#   profile-base/{report.md,metrics.json,stakeholder_summary.md}
#   profile-gundam/{report.md,metrics.json,stakeholder_summary.md}
#
# Overrides (env): MODES ("base gundam"), PAGES (10), TOKENS (256), REPEATS (2), PROFILE_TOKENS (16),
# PROFILE_IMAGES (2), CONFIG (default), DEVICE (cuda), DTYPE (bf16), ATTN (eager), MODE_BUDGET_S (255),
# CEILINGS (a `hw bench` JSON; default $OUT/hw-ceilings.json when present), EXTRA (more runner flags),
# BENCH (1: afterwards run benchmarks/bench_instrumentation_overhead.py if more than 60 s remain of
# TOTAL_BUDGET_S=570 since the script started; its table is appended to profile-summary.txt).
# On a copied tree without .git, pass the revision for env.json: LLM_PERF_OPT_GIT_REVISION=<sha> bash ...
# CPU dry run of this script:  MODES=tiny CONFIG=tiny DEVICE=cpu DTYPE=fp32 PAGES=2 TOKENS=3 \
#                               PROFILE_TOKENS=2 REPEATS=1 bash scripts/gpu/profile_h100.sh
set -uo pipefail
OUT="${OUT:-./tmp/gpu-out}"
RUNS="${RUNS:-./tmp/gpu-runs}"
MODES="${MODES:-base gundam}"
PAGES="${PAGES:-10}"
TOKENS="${TOKENS:-256}"
REPEATS="${REPEATS:-2}"
PROFILE_TOKENS="${PROFILE_TOKENS:-16}"
PROFILE_IMAGES="${PROFILE_IMAGES:-2}"
CONFIG="${CONFIG:-default}"
DEVICE="${DEVICE:-cuda}"
DTYPE="${DTYPE:-bf16}"
ATTN="${ATTN:-eager}"
MODE_BUDGET_S="${MODE_BUDGET_S:-255}"
EXTRA="${EXTRA:-}"
CEILINGS="${CEILINGS:-}"
if [[ -z "$CEILINGS" && -f "$OUT/hw-ceilings.json" ]]; then CEILINGS="$OUT/hw-ceilings.json"; fi
PY="${PYTHON:-python}"
export PYTHONPATH="${PWD}/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT" "$RUNS"
SUMMARY="$OUT/profile-summary.txt"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"

# Preflight: one line naming every missing module, before any GPU time is spent.
$PY - <<'EOF' || exit 2
import importlib.util, sys
missing = [m for m in ("torch", "transformers", "attrs", "cattrs", "yaml", "PIL", "matplotlib", "tqdm")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"profile_h100.sh: missing Python modules: {', '.join(missing)} (pip install them first)")
EOF

{
  echo "# profile_h100.sh $STAMP  (git $(git rev-parse HEAD 2>/dev/null || echo "${LLM_PERF_OPT_GIT_REVISION:-unknown}"))"
  echo "# settings: modes=[$MODES] pages=$PAGES tokens=$TOKENS repeats=$REPEATS profile_tokens=$PROFILE_TOKENS config=$CONFIG device=$DEVICE dtype=$DTYPE attn=$ATTN ceilings=${CEILINGS:-none}"
} > "$SUMMARY"

status=0
for MODE in $MODES; do
  RUN_ID="h100-${MODE}-${STAMP}"
  ARGS=(--device "$DEVICE" --config "$CONFIG" --dtype "$DTYPE" --attn-implementation "$ATTN" --mode "$MODE"
        --synthetic "$PAGES" --max-new-tokens "$TOKENS" --fixed-length --warmup 1 --repeats "$REPEATS"
        --profile-images "$PROFILE_IMAGES" --profile-max-new-tokens "$PROFILE_TOKENS" --no-progress
        --output-dir "$RUNS" --run-id "$RUN_ID")
  if [[ -n "$CEILINGS" ]]; then ARGS+=(--ceilings "$CEILINGS"); fi
  # shellcheck disable=SC2206
  if [[ -n "$EXTRA" ]]; then ARGS+=($EXTRA); fi
  echo "command: python -m llm_perf_opt.runners.llm_profile_runner ${ARGS[*]}" | tee -a "$SUMMARY"
  t0=$(date +%s)
  timeout -s INT -k 20 "$MODE_BUDGET_S" $PY -m llm_perf_opt.runners.llm_profile_runner "${ARGS[@]}" \
      > "$RUNS/$RUN_ID.stdout" 2> "$RUNS/$RUN_ID.stderr"
  rc=$?
  t1=$(date +%s)
  echo "mode $MODE: exit $rc after $((t1 - t0)) s" | tee -a "$SUMMARY"
  if [[ $rc -ne 0 ]]; then
    status=1
    echo "--- stderr tail ($MODE)" >> "$SUMMARY"
    tail -n 15 "$RUNS/$RUN_ID.stderr" >> "$SUMMARY"
  fi
  ART="$RUNS/$RUN_ID/torch_profiler"
  if [[ -f "$ART/metrics.json" ]]; then
    mkdir -p "$OUT/profile-$MODE"
    cp "$ART/report.md" "$ART/metrics.json" "$ART/stakeholder_summary.md" "$OUT/profile-$MODE/"
  fi
done

# Short table of both modes from their metrics.json (what the lead reads first).
$PY - "$OUT" $MODES >> "$SUMMARY" <<'EOF'
import json, sys
from pathlib import Path
out, modes = Path(sys.argv[1]), sys.argv[2:]
cols = ["vision.sam", "vision.clip", "projector", "prefill", "decode"]
print()
print(f"{'mode':<8}{'passes':>7}" + "".join(f"{c + ' ms':>15}" for c in cols)
      + f"{'ms/token':>10}{'tok/s':>8}{'pages/s':>9}{'MFU':>9}{'skipped':>8}")
for mode in modes:
    p = out / f"profile-{mode}" / "metrics.json"
    if not p.is_file():
        print(f"{mode:<8} no metrics.json (see the stderr tail above)")
        continue
    m = json.loads(p.read_text())
    st = m["stage_ms"]
    dec = st.get("decode")
    tps = m["stage_tokens_per_s"].get("decode", {}).get("mean")
    steps = m["meta"]["max_new_tokens"]
    cells = "".join(f"{st[c]['mean']:>9.1f}±{st[c]['std']:<5.1f}" if c in st else f"{'-':>15}" for c in cols)
    per_tok = dec["mean"] / steps if dec else float("nan")
    pages = (m.get("pages_per_s") or {}).get("mean", float("nan"))
    mfu = m.get("model_mfu")
    print(f"{mode:<8}{st.get('prefill', {}).get('count', 0):>7}{cells}{per_tok:>10.2f}{(tps or 0):>8.1f}"
          f"{pages:>9.3f}{(100 * mfu if mfu is not None else float('nan')):>8.3f}%{len(m['skipped_images']):>8}")
    ops = m["operators"][:5]
    print("   top ops: " + "; ".join(f"{o['op_name']} {100 * o['share_of_total']:.1f}%" for o in ops))
EOF
# Instrumentation overhead (same decode bare / timed / profiler ranges), when the time left allows it.
if [[ "${BENCH:-1}" == "1" ]]; then
  left=$(( ${TOTAL_BUDGET_S:-570} - SECONDS ))
  if (( left > 60 )); then
    echo >> "$SUMMARY"
    echo "command: python benchmarks/bench_instrumentation_overhead.py --device $DEVICE --config $CONFIG --dtype $DTYPE --tokens ${BENCH_TOKENS:-32} --repeats ${BENCH_REPEATS:-5}" >> "$SUMMARY"
    timeout -s INT -k 10 $(( left - 15 )) $PY benchmarks/bench_instrumentation_overhead.py --device "$DEVICE" \
        --config "$CONFIG" --dtype "$DTYPE" --tokens "${BENCH_TOKENS:-32}" --repeats "${BENCH_REPEATS:-5}" \
        >> "$SUMMARY" 2> "$RUNS/bench-$STAMP.stderr" || { echo "benchmark: exit $?" >> "$SUMMARY"; tail -n 5 "$RUNS/bench-$STAMP.stderr" >> "$SUMMARY"; }
  else
    echo "benchmark skipped: only ${left} s left of TOTAL_BUDGET_S" >> "$SUMMARY"
  fi
fi
cat "$SUMMARY"
exit $status
