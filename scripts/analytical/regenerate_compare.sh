#!/usr/bin/env bash
# Regenerate every committed comparison under reports/compare/ from the committed run folders (CPU only):
# the five compare_calibrate.sh sets (H200 sets 1 and 2, H100 of 2026-11-22 and two of 2026-12-05), the H100
# cross-session comparison (probe_choice.sh) and the nineteen cross-session H200 sets of
# CROSS_SETS below (sections 6-9 and 11-22 of docs/results-h200.md: set 2's timeline calibration and the prior on
# runs not fitted; the sets of sections 21 and 22 hold the large batches and the n-gram ban pairs).
#
# Usage: PYTHON=.venv/bin/python scripts/analytical/regenerate_compare.sh   (PYTHON: an interpreter with the project
#        installed, python by default; about 4-5 min on 2 cores)
#        CROSS_ONLY="STAMP ..." scripts/analytical/regenerate_compare.sh   (only those cross-session sets)
# Writes to tmp/regen/ first and replaces each reports/compare/<set>/ only once that set is complete.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
P=reports/profile
H200=reports/hardware/h200/hw-ceilings.json
H100=reports/hardware/hw-ceilings.json
TMP=tmp/regen
rm -rf "$TMP"; mkdir -p "$TMP"

replace() {  # replace reports/compare/$2 with the finished $1
  rm -rf "reports/compare/$2"; cp -r "$1" "reports/compare/$2"; echo "== reports/compare/$2 regenerated"
}

CROSS_SETS="20261202T042320Z 20261202T142808Z 20261202T173413Z 20261202T215944Z 20261203T074846Z
            20261203T090148Z 20261203T110219Z 20261203T155750Z 20261203T162611Z 20261203T183902Z
            20261204T000735Z 20261204T112529Z 20261204T140212Z 20261204T141251Z 20261204T142146Z
            20261204T170006Z 20261204T183159Z 20261204T195740Z 20261204T210208Z"
if [[ -n "${CROSS_ONLY:-}" ]]; then
  for S in $CROSS_ONLY; do
    [[ " $(echo $CROSS_SETS) " == *" $S "* ]] || { echo "$0: $S is not one of the cross-session sets: $(echo $CROSS_SETS)" >&2; exit 2; }
  done
  CROSS_SETS="$CROSS_ONLY"
fi

S1=20261202T012852Z
S2=20261202T033259Z
if [[ -z "${CROSS_ONLY:-}" ]]; then
OUT=$TMP/h200 CONFIG=default CEILINGS=$H200 PYTHON="$PY" bash scripts/gpu/compare_calibrate.sh \
  --held-out $P/h200-small-b1-$S1 --held-out $P/h200-base-b4-$S1 $P/h200-base-b1-$S1 $P/h200-gundam-b1-$S1
replace "$TMP/h200/compare-h200" compare-h200

OUT=$TMP/h200new CONFIG=default CEILINGS=$H200 PYTHON="$PY" bash scripts/gpu/compare_calibrate.sh \
  --held-out $P/h200-small-b1-$S2 --held-out $P/h200-base-b4-$S2 --held-out $P/h200-small-b4-$S2 \
  --held-out $P/h200-gundam-b2-$S2 $P/h200-base-b1-$S2 $P/h200-gundam-b1-$S2
replace "$TMP/h200new/compare-h200" compare-h200-$S2

OUT=$TMP/h100 CONFIG=default CEILINGS=$H100 PYTHON="$PY" bash scripts/gpu/compare_calibrate.sh \
  --held-out $P/h100-small-b1-20261122T054520Z --held-out $P/h100-base-b4-20261122T054520Z \
  $P/h100-base-20261122T053733Z $P/h100-gundam-20261122T053733Z
replace "$TMP/h100/compare-h100-sxm" compare-h100-sxm

# the H100 run sets of 2026-12-05 (docs/results-h100.md section 6), each against its own session's ceilings, and
# set 1's timeline calibration (add probe) on set 2
for S in 20261205T133258Z:hw-ceilings.json 20261205T133904Z:hw-ceilings-20261205T133904Z.json; do
  ST=${S%%:*}
  OUT=$TMP/h100-$ST CONFIG=default CEILINGS=reports/hardware/h100/${S#*:} PYTHON="$PY" bash scripts/gpu/compare_calibrate.sh \
    --held-out $P/h100-small-b1-$ST --held-out $P/h100-base-b4-$ST --held-out $P/h100-small-b4-$ST \
    $P/h100-base-b1-$ST $P/h100-gundam-b1-$ST
  replace "$TMP/h100-$ST/compare-h100-sxm" compare-h100-sxm-$ST
done
RUN_PREFIX=h100 VARIANTS=add:1 OUT=$TMP/probe-h100 PYTHON="$PY" bash scripts/analytical/probe_choice.sh \
  20261205T133258Z 20261205T133904Z
replace "$TMP/probe-h100/fit-20261205T133258Z-eval-20261205T133904Z-add-1" \
  cross-session-h100-fit-20261205T133258Z-eval-20261205T133904Z
fi

CAL=reports/compare/compare-h200-$S2/calibration-h200-timeline.json
for S in $CROSS_SETS; do
  D=$TMP/cross-session-h200-$S
  RUNS=()
  for RUN in $P/h200-*-$S; do
    [[ -d "$RUN" ]] || continue
    R="$(basename "$RUN")"
    RUNS+=(--run "$RUN")
    "$PY" -m llm_perf_opt.runners.compare_cli --run "$RUN" --config default --calibration "$CAL" \
      --out "$D/$R/compare" --unified-dir "$D/$R"
  done
  "$PY" -m llm_perf_opt.runners.calibrate_cli "${RUNS[@]}" --config default --prior --ceilings "$H200" \
    --out "$D/calibration-h200-prior.json"
  replace "$D" "cross-session-h200-$S"
done
