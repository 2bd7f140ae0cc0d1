#!/usr/bin/env bash
# One GPU call that produces everything issue 7 needs on the GPU it runs on: measured ceilings, the
# Stage 1 runs to fit a calibration on (Base b1, Gundam b1) and the held-out runs (Small b1: another
# mode; Base b4: another batch), all with per-stage kernel counts in operator_table.json, then the
# comparison and calibration of scripts/gpu/compare_calibrate.sh over them (CPU work, done on the spot).
#
# Run from the repository root on the GPU machine:   bash scripts/gpu/calibration_set.sh
#
# Runtime (H100/H200, random bf16 weights, eager attention, grouped_mm experts): hw bench ~1-2 min;
# per run ~20-40 s of model build + (1 warm-up + PAGES x REPEATS / batch) passes of ~0.2 s vision and
# prefill + TOKENS x ~20 ms decode + one profiler pass; 4 runs ~3-4 min; compare ~1 min.
# Each run is bounded by `timeout -s INT $RUN_BUDGET_S`: an interrupted run still writes its reports.
#
# Writes under $OUT (default ./tmp/gpu-out):
#   hw-detect.json, hw-ceilings.json, hw-bench.txt    detection and measured ceilings
#   runs.tgz                                          the four run folders (no raw traces)
#   compare-<gpu>/...                                 compare_calibrate.sh outputs (summary.md, calibrations)
#   calibration-set.txt                               the exact commands, exit codes and log tails
# Overrides (env): EXTRA ("MODE BATCH;MODE BATCH": more held-out runs, e.g. "small 4;gundam 2"),
# PAGES (4), TOKENS (64), REPEATS (2), RUN_BUDGET_S (110), PREFIX (GPU catalogue key
# from hw detect), SKIP_COMPARE=1 (runs and runs.tgz only), SKIP_BENCH=1 with CEILINGS=FILE (use that ceilings file instead of measuring; without
# SKIP_BENCH the bench always writes $OUT/hw-ceilings.json). Exit status: the worst of the steps.
set -uo pipefail
OUT="${OUT:-./tmp/gpu-out}"
RUNS="${RUNS:-./tmp/gpu-runs}"
PAGES="${PAGES:-4}"
TOKENS="${TOKENS:-64}"
REPEATS="${REPEATS:-2}"
RUN_BUDGET_S="${RUN_BUDGET_S:-110}"
PY="${PYTHON:-python}"
export PYTHONPATH="${PWD}/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHON="$PY"
mkdir -p "$OUT" "$RUNS"
source "$(dirname "$0")/run_log.sh"
start_log "$OUT/calibration-set.txt"

$PY - <<'EOF' || exit 2
import importlib.util, sys
missing = [m for m in ("torch", "transformers", "attrs", "cattrs", "yaml", "PIL", "matplotlib", "tqdm")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"calibration_set.sh: missing Python modules: {', '.join(missing)} (pip install them first)")
EOF

echo "command: python -m llm_perf_opt.runners.hw_cli detect --out $OUT/hw-detect.json" | tee -a "$LOG"
$PY -m llm_perf_opt.runners.hw_cli detect --out "$OUT/hw-detect.json" >> "$LOG" 2>&1; note_rc $?
PREFIX="${PREFIX:-$($PY -c "import json,sys; d=json.load(open(sys.argv[1])); print(d.get('catalog_key') or 'gpu')" "$OUT/hw-detect.json" 2>/dev/null || echo gpu)}"
PREFIX="${PREFIX%%-*}"
if [[ "${SKIP_BENCH:-0}" == "1" ]]; then
  CEILINGS="${CEILINGS:-}"
else
  CEILINGS="$OUT/hw-ceilings.json"
  echo "command: python -m llm_perf_opt.runners.hw_cli bench --out $CEILINGS" | tee -a "$LOG"
  timeout 150 $PY -m llm_perf_opt.runners.hw_cli bench --out "$CEILINGS" > "$OUT/hw-bench.txt" 2>&1
  note_rc $?; cat "$OUT/hw-bench.txt" >> "$LOG"
fi

COMMON=(--device cuda --config default --dtype bf16 --attn-implementation eager --experts-implementation grouped_mm
        --synthetic "$PAGES" --max-new-tokens "$TOKENS" --fixed-length --warmup 1 --repeats "$REPEATS"
        --profile-images 1 --profile-max-new-tokens 16 --no-progress --output-dir "$RUNS")
if [[ -n "$CEILINGS" && -f "$CEILINGS" ]]; then COMMON+=(--ceilings "$CEILINGS"); fi
declare -A DIR
SPECS=("base 1" "gundam 1" "small 1" "base 4")
EXTRA_HELD=()
IFS=';' read -r -a EXTRA_SPECS <<<"${EXTRA:-}"
for spec in "${EXTRA_SPECS[@]}"; do
  [[ -n "${spec// /}" ]] || continue
  read -r MODE BATCH <<<"$spec"
  [[ -n "${MODE:-}" && "${BATCH:-}" =~ ^[0-9]+$ ]] || { echo "EXTRA: '$spec' is not 'MODE BATCH'" >&2; exit 2; }
  SPECS+=("$MODE $BATCH")
  EXTRA_HELD+=("$MODE-$BATCH")
done
for spec in "${SPECS[@]}"; do
  read -r MODE BATCH <<<"$spec"
  RUN_ID="${PREFIX}-${MODE}-b${BATCH}-${STAMP}"
  DIR["$MODE-$BATCH"]="$RUNS/$RUN_ID"
  echo "command: python -m llm_perf_opt.runners.llm_profile_runner ${COMMON[*]} --mode $MODE --batch-size $BATCH --run-id $RUN_ID" | tee -a "$LOG"
  timeout -s INT -k 20 "$RUN_BUDGET_S" $PY -m llm_perf_opt.runners.llm_profile_runner "${COMMON[@]}" \
    --mode "$MODE" --batch-size "$BATCH" --run-id "$RUN_ID" > "$RUNS/$RUN_ID.stdout" 2> "$RUNS/$RUN_ID.stderr"
  note_rc $?; tail -n 3 "$RUNS/$RUN_ID.stderr" >> "$LOG"
done
tar --exclude='*.gz' -czf "$OUT/runs.tgz" -C "$(dirname "$RUNS")" "$(basename "$RUNS")"

if [[ "${SKIP_COMPARE:-0}" == "1" ]]; then
  echo "SKIP_COMPARE=1: runs only (compare them on CPU with scripts/gpu/compare_calibrate.sh)" | tee -a "$LOG"
  exit "$RC"
fi
echo "command: OUT=$OUT CONFIG=default scripts/gpu/compare_calibrate.sh --held-out SMALL_B1 --held-out BASE_B4 (--held-out EXTRA ...) BASE_B1 GUNDAM_B1" | tee -a "$LOG"
HELD_ARGS=(--held-out "${DIR[small-1]}" --held-out "${DIR[base-4]}")
for key in "${EXTRA_HELD[@]}"; do HELD_ARGS+=(--held-out "${DIR[$key]}"); done
OUT="$OUT" CONFIG=default timeout 480 bash scripts/gpu/compare_calibrate.sh "${HELD_ARGS[@]}" \
  "${DIR[base-1]}" "${DIR[gundam-1]}" > "$OUT/compare.txt" 2>&1
note_rc $?
tail -n 60 "$OUT/compare.txt"
tail -n 40 "$LOG"
exit "$RC"
