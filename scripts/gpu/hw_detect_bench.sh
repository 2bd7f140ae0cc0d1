#!/usr/bin/env bash
# Detect the local GPU and measure its achievable ceilings (issue 4). Run from the repository root
# on the GPU machine; takes well under 2 minutes on an H100. Writes under $OUT (default ./tmp/gpu-out):
#   hw-detect.json    detection (name, memory, catalogue key, clocks, driver / CUDA versions)
#   hw-ceilings.json  measured ceilings (load with llm_perf_opt.hardware.load_ceilings)
#   hw-bench.txt      the printed table: measured vs datasheet and their ratio
#   hw-gpu-tests.txt  pytest -m gpu of tests/gpu/test_hardware_gpu.py
set -euo pipefail
OUT="${OUT:-./tmp/gpu-out}"
mkdir -p "$OUT"
export PYTHONPATH="${PWD}/src${PYTHONPATH:+:$PYTHONPATH}"
HW="python -m llm_perf_opt.runners.hw_cli"

$HW detect --out "$OUT/hw-detect.json"
echo "command: llm-perf-opt hw bench --out $OUT/hw-ceilings.json" | tee "$OUT/hw-bench.txt"
$HW bench --out "$OUT/hw-ceilings.json" | tee -a "$OUT/hw-bench.txt"
python -m pytest -q -m gpu -p no:cacheprovider tests/gpu/test_hardware_gpu.py 2>&1 | tee "$OUT/hw-gpu-tests.txt"
