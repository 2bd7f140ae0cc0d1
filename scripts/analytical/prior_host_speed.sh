#!/usr/bin/env bash
# The prior (nothing fitted) on every committed H200 run set that records a host probe, three ways (docs/results-h200.md section 16):
#   constant  host cost per kernel from the reference eager baseline (calibrate --prior, the default);
#   add       host cost from the HOST_SPEED file(s) (hw probe --decode-step; several pool their samples),
#             scaled by each run's add_ probe;
#   module    the same, scaled by each run's module probe (only the sets whose runs record it).
# Then the per-stage summary of each (host_figures.py prior: runs within 25%, rms error).
#
# Usage: scripts/analytical/prior_host_speed.sh HOST_SPEED [HOST_SPEED ...] [OUTDIR]
#        (an argument that is not an existing file is OUTDIR, default tmp/prior-host-speed;
#        PYTHON=python by default; ~7 min on 2 cores)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
usage="usage: $0 HOST_SPEED [HOST_SPEED ...] [OUTDIR] (HOST_SPEED: a file from hw probe --decode-step --out)"
SPEED=()
OUTDIR=tmp/prior-host-speed
for A in "$@"; do
  if [[ -f "$A" ]]; then SPEED+=("$A")
  elif [[ "$A" == "${*: -1}" && ${#SPEED[@]} -gt 0 && "$A" != *.json ]]; then OUTDIR="$A"
  else echo "$0: $A is not a host-speed file; $usage" >&2; exit 2
  fi
done
[[ ${#SPEED[@]} -ge 1 ]] || { echo "$usage" >&2; exit 2; }
P=reports/profile
H200=reports/hardware/h200/hw-ceilings.json
# every H200 set whose runs record the add_ probe (set 2 on; set 1's record none, so no prior can follow their
# host), then those whose runs also record the module probe
ADD_SETS="20261202T033259Z 20261202T042320Z 20261202T142808Z 20261202T173413Z 20261202T215944Z"
MODULE_SETS="20261203T074846Z 20261203T090148Z 20261203T110219Z 20261203T155750Z 20261203T162611Z 20261203T183902Z 20261204T000735Z 20261204T112529Z 20261204T140212Z 20261204T141251Z 20261204T142146Z"
rm -rf "$OUTDIR"; mkdir -p "$OUTDIR"
for S in $ADD_SETS $MODULE_SETS; do
  RUNS=()
  for RUN in $P/h200-*-$S; do [[ -d "$RUN" ]] && RUNS+=(--run "$RUN"); done
  common=("${RUNS[@]}" --config default --prior --ceilings "$H200")
  "$PY" -m llm_perf_opt.runners.calibrate_cli "${common[@]}" --out "$OUTDIR/$S-constant.json" > /dev/null
  "$PY" -m llm_perf_opt.runners.calibrate_cli "${common[@]}" --host-speed "${SPEED[@]}" --host-probe add \
    --out "$OUTDIR/$S-add.json" > /dev/null
  if [[ " $MODULE_SETS " == *" $S "* ]]; then
    "$PY" -m llm_perf_opt.runners.calibrate_cli "${common[@]}" --host-speed "${SPEED[@]}" --host-probe module \
      --out "$OUTDIR/$S-module.json" > /dev/null
  fi
  echo "set $S done" >&2
done
for V in constant add module; do
  echo "== prior, host cost: $V (all sets)"
  "$PY" scripts/analytical/host_figures.py prior "$OUTDIR"/*-$V.json | tail -1
done
for V in constant add module; do
  echo "== prior, host cost: $V (sets whose runs record the module probe)"
  "$PY" scripts/analytical/host_figures.py prior $(for S in $MODULE_SETS; do echo "$OUTDIR/$S-$V.json"; done) | tail -1
done
