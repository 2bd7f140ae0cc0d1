#!/usr/bin/env bash
# Does a standalone host probe (llm-perf-opt hw probe, taken on the GPU machine next to a run set) carry a
# timeline calibration to another session as well as the runs' own in-pass probes do? (CPU only.)
# Fits on one run set's Base b1 and Gundam b1 (Small b1 and Base b4 held out) with the add_ probe, then
# compares every run of another set three ways and prints each comparison's calibrated stage errors
# (host_figures.py cross):
#   in-run      the host costs moved to each run's own probe (compare's default; printed first)
#   fitted      the fitted host costs as they are (no host-speed scaling)
#   standalone  the host costs moved to the mean of the PROBE_JSON files' add_ medians (what-if --host-probe-us)
#
# Usage: scripts/analytical/host_probe_check.sh FIT_STAMP EVAL_STAMP PROBE_JSON [PROBE_JSON ...]
#   e.g. scripts/analytical/host_probe_check.sh 20261203T090148Z 20261203T110219Z \
#          reports/profile/h200-host-probe/probe-*-20261203T110219Z.json          (~10 min on 2 cores)
# Env: OUT (default tmp/host-probe-check), RUN_PREFIX (the run folders' GPU prefix, default h200), CEILINGS
#      (default reports/hardware/$RUN_PREFIX/hw-ceilings.json; read by probe_choice.sh), FIT_RUNS
#      (the fitted runs, read by probe_choice.sh; default "base-b1 gundam-b1"), PYTHON
#      (default python).
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 FIT_STAMP EVAL_STAMP PROBE_JSON [PROBE_JSON ...] (hw probe --out files)" >&2
  exit 2
fi
PROBES=()
for F in "${@:3}"; do
  [[ -f "$F" ]] || { echo "$0: no probe file $F" >&2; exit 2; }
  PROBES+=("$(cd "$(dirname "$F")" && pwd)/$(basename "$F")")
done
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
A=$1 B=$2
OUT="${OUT:-tmp/host-probe-check}"
P=reports/profile
source scripts/analytical/compare_set.sh
# the fit and the in-run variant: probe_choice.sh with the add_ probe at exponent 1 (it checks the run folders)
VARIANTS="add:1" OUT="$OUT" PYTHON="$PY" bash scripts/analytical/probe_choice.sh "$A" "$B"
X="$OUT/fit-$A-eval-$B-add-1"
# the two fixed-host variants: host_probe_us 0 stops compare from rescaling to each run's probe
"$PY" - "$X" "${PROBES[@]}" <<'PY'
import json
import statistics
import sys
from pathlib import Path

import attrs

from llm_perf_opt.analytic.calibration import load_calibration, save_calibration
from llm_perf_opt.errors import UserError

out, files = Path(sys.argv[1]), sys.argv[2:]
medians = []
for f in files:
    try:
        medians.append(float(json.loads(Path(f).read_text())["probes"]["add"]["median_us"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.exit(f"host_probe_check.sh: {f}: not an hw probe file with an add probe ({exc})")
cal = load_calibration(out / "calibration.json")
probe = statistics.fmean(medians)
try:
    moved = cal.for_host_probe(probe)
except UserError as exc:
    sys.exit(f"host_probe_check.sh: {exc}")
save_calibration(attrs.evolve(cal, host_probe_us=0.0), out / "fitted.json")
save_calibration(attrs.evolve(moved, host_probe_us=0.0), out / "standalone.json")
print(f"fitted runs' mean probe {cal.host_probe_us:.2f} us/op; standalone probe {probe:.2f} us/op "
      f"(medians {', '.join(f'{m:.2f}' for m in medians)})")
PY
for V in fitted standalone; do
  compare_set "$X/$V.json" "$B" "$X/$V" "fitted on set $A, evaluated on set $B: host $V"
done
