#!/usr/bin/env bash
# One GPU call that times what the committed ceilings lack and checks the timer (docs/hardware.md,
# "GEMMs by shape"): `hw gemms` adds every GEMM shape and call timed whole (routed experts, rotary
# embedding, MoE router) of the default workloads that CEILINGS does not hold yet, the GPU tests run
# (tests/gpu: the hardware bench, the host-speed probes), and scripts/gpu/gemm_timer_check.py compares
# the timer with the profiler's kernel durations. About 3-4 minutes on an H200.
#
# Run from the repository root on the GPU machine:   bash scripts/gpu/timed_calls_check.sh
#
# Writes under $OUT (default ./tmp/gpu-out):
#   hw-ceilings.json       CEILINGS plus the newly timed shapes and calls
#   hw-gemms.txt           the command and its printed table
#   gpu-tests.txt          pytest -m gpu of tests/gpu/ (hardware bench, host probes)
#   gemm-timer-check.json  (and .txt) the timer against the profiler, shape by shape
# Overrides (env): CEILINGS (reports/hardware/h200/hw-ceilings.json), PYTHON (python).
# A step that fails or runs over its time is recorded with its exit code; the next steps still run.
set -uo pipefail
OUT="${OUT:-./tmp/gpu-out}"
CEILINGS="${CEILINGS:-reports/hardware/h200/hw-ceilings.json}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
export PYTHONPATH="${PWD}/src${PYTHONPATH:+:$PYTHONPATH}"

[ -f "$CEILINGS" ] || { echo "timed_calls_check.sh: no ceilings file $CEILINGS (set CEILINGS)" >&2; exit 2; }
{
  echo "command: llm-perf-opt hw gemms --ceilings $CEILINGS --out hw-ceilings.json"
  timeout 300 "$PY" -m llm_perf_opt.runners.hw_cli gemms --ceilings "$CEILINGS" --out "$OUT/hw-ceilings.json" 2>&1
  echo "exit code: $?"
} > "$OUT/hw-gemms.txt"
{
  echo "command: python -m pytest -q -m gpu tests/gpu/"
  timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/gpu/ 2>&1
  echo "exit code: $?"
} > "$OUT/gpu-tests.txt"
{
  echo "command: PYTHONPATH=src python scripts/gpu/gemm_timer_check.py --out gemm-timer-check.json"
  timeout 120 "$PY" scripts/gpu/gemm_timer_check.py --out "$OUT/gemm-timer-check.json" 2>&1
  echo "exit code: $?"
} > "$OUT/gemm-timer-check.txt"
tail -n 3 "$OUT/hw-gemms.txt" "$OUT/gpu-tests.txt" "$OUT/gemm-timer-check.txt"
