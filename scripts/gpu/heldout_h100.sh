#!/usr/bin/env bash
# Held-out Stage 1 runs for calibration checks (issue 7), the GPU tests, the full-size analytic FLOP
# check and the instrumentation-overhead benchmark, in one H100 call (~5 min).
#   - small mode, batch 1 (a mode not used for fitting)
#   - base mode, batch 4 (a batch not used for fitting)
# Run folders go to ./tmp/gpu-runs; a tarball of them (without the *.gz traces) and the logs go to $OUT.
# Run from the repository root on the GPU machine:  bash scripts/gpu/heldout_h100.sh
set -uo pipefail
OUT="${OUT:-./tmp/gpu-out}"
RUNS="${RUNS:-./tmp/gpu-runs}"
PY="${PYTHON:-python}"
export PYTHONPATH="${PWD}/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT" "$RUNS"
LOG="$OUT/heldout-summary.txt"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
COMMON=(--device cuda --config default --dtype bf16 --attn-implementation eager --synthetic 4
        --max-new-tokens 128 --fixed-length --warmup 1 --repeats 2 --profile-images 1
        --profile-max-new-tokens 16 --no-progress --output-dir "$RUNS")
CEILINGS="${CEILINGS:-reports/hardware/hw-ceilings.json}"
[[ -f "$CEILINGS" ]] && COMMON+=(--ceilings "$CEILINGS")
for spec in "small 1" "base 4"; do
  read -r MODE BATCH <<<"$spec"
  RUN_ID="h100-${MODE}-b${BATCH}-${STAMP}"
  echo "command: python -m llm_perf_opt.runners.llm_profile_runner ${COMMON[*]} --mode $MODE --batch-size $BATCH --run-id $RUN_ID" | tee -a "$LOG"
  timeout -s INT -k 20 150 $PY -m llm_perf_opt.runners.llm_profile_runner "${COMMON[@]}" --mode "$MODE" \
    --batch-size "$BATCH" --run-id "$RUN_ID" > "$RUNS/$RUN_ID.stdout" 2> "$RUNS/$RUN_ID.stderr"
  echo "exit $?" | tee -a "$LOG"; tail -n 3 "$RUNS/$RUN_ID.stderr" >> "$LOG"
done
echo "command: python scripts/gpu/analytic_flops_full_prefill.py --mode base --device cuda" | tee -a "$LOG"
timeout 120 $PY scripts/gpu/analytic_flops_full_prefill.py --mode base --device cuda >> "$LOG" 2>&1; echo "exit $?" >> "$LOG"
echo "command: pytest -m gpu tests/gpu tests/integration/test_profile_runner_gpu.py" | tee -a "$LOG"
timeout 150 $PY -m pytest -q -m gpu -p no:cacheprovider tests/gpu tests/integration/test_profile_runner_gpu.py >> "$LOG" 2>&1; echo "exit $?" >> "$LOG"
echo "command: python benchmarks/bench_instrumentation_overhead.py --device cuda --tokens 32 --repeats 15" | tee -a "$LOG"
timeout 120 $PY benchmarks/bench_instrumentation_overhead.py --device cuda --tokens 32 --repeats 15 >> "$LOG" 2>&1; echo "exit $?" >> "$LOG"
tar --exclude='*.gz' -czf "$OUT/heldout-runs.tgz" -C "$(dirname "$RUNS")" "$(basename "$RUNS")"
cat "$LOG"
