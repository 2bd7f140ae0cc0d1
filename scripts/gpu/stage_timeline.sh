#!/usr/bin/env bash
# Host/device timeline per stage (profiling/timeline.py) for a few runs, plus the GPU-marked tests.
# Run from the repository root on the GPU machine:   bash scripts/gpu/stage_timeline.sh
# Each run: full-size model, random bf16 weights, eager attention, grouped_mm experts, PAGES synthetic
# pages, 1 repeat, 32 fixed new tokens, one profiled batch with a 16-token decode (~40-60 s per run).
# Writes under $OUT (default ./tmp/gpu-out): timeline-<mode>-b<batch>.md (the run's operators.md, which
# holds the timeline table), timeline-<mode>-b<batch>.json, stage-timeline.txt (commands, exit codes,
# tables) and gpu-tests.txt. Exit status: the worst of the steps.
# Overrides (env): SPECS ("base 1;base 4"), PAGES (4), CEILINGS (a hw bench file, optional).
set -uo pipefail
OUT="${OUT:-./tmp/gpu-out}"
RUNS="${RUNS:-./tmp/gpu-runs}"
SPECS="${SPECS:-base 1;base 4}"
PAGES="${PAGES:-4}"
PY="${PYTHON:-python}"
export PYTHONPATH="${PWD}/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT" "$RUNS"
source "$(dirname "$0")/run_log.sh"
start_log "$OUT/stage-timeline.txt"
COMMON=(--device cuda --config default --dtype bf16 --attn-implementation eager --experts-implementation grouped_mm
        --synthetic "$PAGES" --max-new-tokens 32 --fixed-length --warmup 1 --repeats 1 --profile-images 1
        --profile-max-new-tokens 16 --no-progress --output-dir "$RUNS")
if [[ -n "${CEILINGS:-}" && -f "${CEILINGS:-}" ]]; then COMMON+=(--ceilings "$CEILINGS"); fi
IFS=';' read -r -a LIST <<<"$SPECS"
for spec in "${LIST[@]}"; do
  read -r MODE BATCH <<<"$spec"
  RUN_ID="timeline-${MODE}-b${BATCH}-${STAMP}"
  echo "command: python -m llm_perf_opt.runners.llm_profile_runner ${COMMON[*]} --mode $MODE --batch-size $BATCH --run-id $RUN_ID" | tee -a "$LOG"
  timeout -s INT -k 20 150 $PY -m llm_perf_opt.runners.llm_profile_runner "${COMMON[@]}" --mode "$MODE" \
    --batch-size "$BATCH" --run-id "$RUN_ID" > "$RUNS/$RUN_ID.stdout" 2> "$RUNS/$RUN_ID.stderr"
  note_rc $?
  ART="$RUNS/$RUN_ID/torch_profiler"
  cp "$ART/operators.md" "$OUT/timeline-${MODE}-b${BATCH}.md" 2>/dev/null
  cp "$ART/timeline.json" "$OUT/timeline-${MODE}-b${BATCH}.json" 2>/dev/null
  grep -A9 "Host/device timeline" "$ART/operators.md" >> "$LOG" 2>/dev/null
  grep -A8 "^## Stage timings" "$ART/../torch_profiler/report.md" >> "$LOG" 2>/dev/null
done
echo "command: pytest -m gpu tests/gpu tests/integration/test_profile_runner_gpu.py" | tee -a "$LOG"
timeout 200 $PY -m pytest -q -m gpu -p no:cacheprovider tests/gpu tests/integration/test_profile_runner_gpu.py \
  > "$OUT/gpu-tests.txt" 2>&1
note_rc $?
tail -n 3 "$OUT/gpu-tests.txt" >> "$LOG"
cat "$LOG"
exit "$RC"
