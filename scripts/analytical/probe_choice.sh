#!/usr/bin/env bash
# Which host probe carries a timeline calibration across sessions (CPU only): fit on one run set's Base b1
# and Gundam b1 (Small b1 and Base b4 held out; FIT_RUNS changes which), compare every run of another set
# with that calibration,
# once per host probe and exponent, and print each comparison's calibrated stage errors
# (host_figures.py cross). Both sets need runs that recorded both probes (host_probe_us and
# host_module_probe_us in passes.jsonl).
#
# Usage: scripts/analytical/probe_choice.sh FIT_STAMP EVAL_STAMP
#   e.g. scripts/analytical/probe_choice.sh 20261203T074846Z 20261203T090148Z   (~12 min on 2 cores)
# Env: VARIANTS ("PROBE:EXPONENT ...", default "add:1 module:1 module:0.64"), OUT (default tmp/probe-choice),
#      PROFILE_DIR (where the run folders are, default reports/profile; absolute or relative to the repository root),
#      RUN_PREFIX (the run folders' prefix, default h200), CEILINGS (default reports/hardware/$RUN_PREFIX/hw-ceilings.json),
#      PYTHON (default python), FIT_RUNS (the fitted runs among base-b1,
#      gundam-b1, small-b1 and base-b4, default "base-b1 gundam-b1"; the others are held out).
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: $0 FIT_STAMP EVAL_STAMP (run-set stamps of reports/profile/\$RUN_PREFIX-<mode>-b<n>-<stamp>, RUN_PREFIX default h200)" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
P="${PROFILE_DIR:-reports/profile}"
source scripts/analytical/compare_set.sh
A=$1 B=$2
RUN_PREFIX="${RUN_PREFIX:-h200}"
CEILINGS="${CEILINGS:-reports/hardware/$RUN_PREFIX/hw-ceilings.json}"
OUT="${OUT:-tmp/probe-choice}"
FIT_RUNS="${FIT_RUNS:-base-b1 gundam-b1}"
ROLES=()
for R in $FIT_RUNS; do
  [[ " base-b1 gundam-b1 small-b1 base-b4 " == *" $R "* ]] || {
    echo "$0: FIT_RUNS: $R is not one of base-b1 gundam-b1 small-b1 base-b4" >&2; exit 2; }
done
for R in base-b1 gundam-b1 small-b1 base-b4; do
  RUN="$P/$RUN_PREFIX-$R-$A"
  [[ -d "$RUN" ]] || { echo "$0: no run folder $RUN" >&2; exit 2; }
  if [[ " $FIT_RUNS " == *" $R "* ]]; then ROLES+=(--run "$RUN"); else ROLES+=(--held-out "$RUN"); fi
done
ls -d "$P"/"$RUN_PREFIX"-*-"$B" > /dev/null 2>&1 || { echo "$0: no run folder $P/$RUN_PREFIX-*-$B" >&2; exit 2; }
for V in ${VARIANTS:-add:1 module:1 module:0.64}; do
  PROBE=${V%%:*} E=${V##*:}
  X="$OUT/fit-$A-eval-$B-$PROBE-$E"
  rm -rf "$X"; mkdir -p "$X"
  "$PY" -m llm_perf_opt.runners.calibrate_cli "${ROLES[@]}" --config default --time-model timeline \
    --ceilings "$CEILINGS" --host-probe "$PROBE" --host-probe-exponent "$E" --out "$X/calibration.json" \
    > "$X/calibrate.txt"
  compare_set "$X/calibration.json" "$B" "$X" "fitted on set $A, evaluated on set $B: probe $PROBE, exponent $E"
done
