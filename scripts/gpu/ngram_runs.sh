#!/usr/bin/env bash
# One GPU call that checks the analytic model's n-gram-ban term (analytic.model.NGRAM_BAN_ROW_LAUNCHES, its
# DECODE_ROW_HOST_WEIGHT) against runs with the ban off: a kernel census of the decode step with the ban off
# (launches per row should be ~0), then Stage 1 runs of each SPECS workload with each NGRAMS setting, the
# settings of one workload back to back on the same host (a paired comparison). The runs use the profiler
# command of the committed H200 sets (scripts/gpu/calibration_set.sh), plus --no-repeat-ngram-size.
# A SPECS entry "MODE BATCH TOKENS" sets its own new tokens per page (a long decode, docs/results-h200.md
# section 23); its run id then carries -t<TOKENS>.
#
# Run from the repository root on the GPU machine:   bash scripts/gpu/ngram_runs.sh
#
# Runtime (H200): census ~1 min; each run ~2 min at batch 16-32 (model build, warm-up, 2 repeats of 32 pages
# at 64 tokens, one profiler pass). Each run is bounded by `timeout -s INT $RUN_BUDGET_S`: an interrupted run
# still writes its reports, and runs.tgz is rewritten after every run (a call cut short keeps the runs done).
#
# Writes under $OUT (default ./tmp/gpu-out):
#   census-<PREFIX>-ngram<N>.json   kernel census (scripts/gpu/kernel_census.py) of CENSUS workloads, the ban at N
#   runs.tgz                        this call's run folders (no raw traces)
#   ngram-runs.txt                  the exact commands, exit codes and log tails
# Overrides (env): SPECS ("MODE BATCH [TOKENS];..." default "small 32;base 16"), NGRAMS ("0 20"), CENSUS_NGRAM (0),
# CENSUS ("base:1 base:4"), CEILINGS (reports/hardware/h200/hw-ceilings.json), PREFIX (h200), TOKENS (64),
# REPEATS (2), PROFILE_IMAGES (1; 0 skips the torch.profiler pass), RUN_BUDGET_S (150), SKIP_CENSUS=1, and
# for a check of the script on a CPU: DEVICE (cuda), CONFIG (default), DTYPE (bf16). Exit status: the worst of
# the steps; 2 for a bad SPECS, NGRAMS or PROFILE_IMAGES, before anything runs.
set -uo pipefail
OUT="${OUT:-./tmp/gpu-out}"
RUNS="${RUNS:-./tmp/gpu-runs}"
SPECS="${SPECS:-small 32;base 16}"
NGRAMS="${NGRAMS:-0 20}"
CENSUS_NGRAM="${CENSUS_NGRAM:-0}"
CENSUS="${CENSUS:-base:1 base:4}"
CEILINGS="${CEILINGS:-reports/hardware/h200/hw-ceilings.json}"
PREFIX="${PREFIX:-h200}"
TOKENS="${TOKENS:-64}"
REPEATS="${REPEATS:-2}"
PROFILE_IMAGES="${PROFILE_IMAGES:-1}"
RUN_BUDGET_S="${RUN_BUDGET_S:-150}"
DEVICE="${DEVICE:-cuda}"
CONFIG="${CONFIG:-default}"
DTYPE="${DTYPE:-bf16}"
PY="${PYTHON:-python}"
export PYTHONPATH="${PWD}/src${PYTHONPATH:+:$PYTHONPATH}"
IFS=';' read -r -a SPEC_LIST <<<"$SPECS"
for spec in "${SPEC_LIST[@]}"; do
  read -r MODE BATCH SPEC_TOKENS EXTRA <<<"$spec"
  [[ -n "${MODE:-}" && "${BATCH:-}" =~ ^[0-9]+$ && "${SPEC_TOKENS:-1}" =~ ^[1-9][0-9]*$ && -z "${EXTRA:-}" ]] \
    || { echo "ngram_runs.sh: SPECS: '$spec' is not 'MODE BATCH [TOKENS]'" >&2; exit 2; }
done
[[ "$PROFILE_IMAGES" =~ ^[0-9]+$ ]] || { echo "ngram_runs.sh: PROFILE_IMAGES: '$PROFILE_IMAGES' is not a count" >&2; exit 2; }
for N in $NGRAMS $CENSUS_NGRAM; do
  [[ "$N" =~ ^[0-9]+$ ]] || { echo "ngram_runs.sh: NGRAMS/CENSUS_NGRAM: '$N' is not an n-gram size >= 0" >&2; exit 2; }
done
mkdir -p "$OUT" "$RUNS"
source "$(dirname "$0")/run_log.sh"
start_log "$OUT/ngram-runs.txt"

if [[ "${SKIP_CENSUS:-0}" != "1" ]]; then
  ARGS=(--out "$OUT/census-$PREFIX-ngram$CENSUS_NGRAM.json" --no-repeat-ngram-size "$CENSUS_NGRAM"
        --device "$DEVICE" --config "$CONFIG")
  for W in $CENSUS; do ARGS+=(--workload "$W"); done
  echo "command: python scripts/gpu/kernel_census.py ${ARGS[*]}" | tee -a "$LOG"
  timeout -s INT 200 $PY scripts/gpu/kernel_census.py "${ARGS[@]}" >> "$LOG" 2>&1; note_rc $?
fi

COMMON=(--device "$DEVICE" --config "$CONFIG" --dtype "$DTYPE" --attn-implementation eager --experts-implementation grouped_mm
        --fixed-length --warmup 1 --repeats "$REPEATS"
        --profile-images "$PROFILE_IMAGES" --profile-max-new-tokens 16 --no-progress --output-dir "$RUNS")
if [[ -f "$CEILINGS" ]]; then COMMON+=(--ceilings "$CEILINGS"); fi
DONE=()
for spec in "${SPEC_LIST[@]}"; do
  read -r MODE BATCH SPEC_TOKENS <<<"$spec"
  T="${SPEC_TOKENS:-$TOKENS}"
  for N in $NGRAMS; do
    RUN_ID="${PREFIX}-${MODE}-b${BATCH}${SPEC_TOKENS:+-t$SPEC_TOKENS}-ngram${N}-${STAMP}"
    echo "command: python -m llm_perf_opt.runners.llm_profile_runner ${COMMON[*]} --max-new-tokens $T --synthetic $BATCH --mode $MODE --batch-size $BATCH --no-repeat-ngram-size $N --run-id $RUN_ID" | tee -a "$LOG"
    timeout -s INT "$RUN_BUDGET_S" $PY -m llm_perf_opt.runners.llm_profile_runner "${COMMON[@]}" --max-new-tokens "$T" \
      --synthetic "$BATCH" --mode "$MODE" --batch-size "$BATCH" --no-repeat-ngram-size "$N" --run-id "$RUN_ID" \
      > "$OUT/run-$RUN_ID.log" 2>&1
    note_rc $?
    tail -n 5 "$OUT/run-$RUN_ID.log" >> "$LOG"
    [[ -d "$RUNS/$RUN_ID" ]] && DONE+=("$RUN_ID")
    if (( ${#DONE[@]} )); then  # after every run: a call cut short keeps the runs done
      tar --exclude='*.gz' --exclude='*.pt.trace.json' -czf "$OUT/runs.tgz.tmp" -C "$RUNS" "${DONE[@]}" 2>> "$LOG" \
        && mv "$OUT/runs.tgz.tmp" "$OUT/runs.tgz"
      note_rc $?
    fi
  done
done
echo "stamp $STAMP; worst exit $RC" | tee -a "$LOG"
exit $RC
