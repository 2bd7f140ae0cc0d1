#!/usr/bin/env bash
# Rebuild the reports of every committed Stage 1 run folder with the current code (`llm-perf-opt rebuild`, CPU
# only): statistics and MFU/MBU again, the measurements as they were. Each run keeps the measured ceilings it was
# profiled against. The script reads them from the figures its report.md names:
#   h100-sxm 725.9 TFLOP/s, 3.02 TB/s   reports/hardware/hw-ceilings.json
#   h200     673.4 TFLOP/s, 4.27 TB/s   reports/hardware/h200/hw-ceilings-20261202T012926Z.json
#                                       (the first H200 session's, as committed in cdeac30)
#   h200     683.8 TFLOP/s, 4.25 TB/s   reports/hardware/h200/hw-ceilings.json
#   h100-sxm 733.6 TFLOP/s, 3.02 TB/s   reports/hardware/h100/hw-ceilings.json (run set 20261205T133258Z)
#   h100-sxm 730.0 TFLOP/s, 3.03 TB/s   reports/hardware/h100/hw-ceilings-20261205T133904Z.json (that run set)
# Afterwards it checks that every report names the same datasheet and measured peaks as before.
#
# Usage: PYTHON=.venv/bin/python scripts/analytical/rebuild_profile_reports.sh   (about 30 s on 2 cores)
#        PROFILE_DIR=DIR ...   (run folders under DIR instead of reports/profile)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
DIR="${PROFILE_DIR:-reports/profile}"
H100=reports/hardware/hw-ceilings.json
H200_FIRST=reports/hardware/h200/hw-ceilings-20261202T012926Z.json
H200=reports/hardware/h200/hw-ceilings.json
H100_A=reports/hardware/h100/hw-ceilings.json
H100_B=reports/hardware/h100/hw-ceilings-20261205T133904Z.json

peaks() {  # the peaks lines of a report.md (datasheet and measured)
  grep -E "^- (Datasheet peaks|Measured ceilings \(hw bench\)):" "$1" || true
}

declare -a RUNS_H100=() RUNS_H200_FIRST=() RUNS_H200=() RUNS_H100_A=() RUNS_H100_B=()
BEFORE=$(mktemp -d)
trap 'rm -rf "$BEFORE"' EXIT
n=0
for ART in "$DIR"/*/torch_profiler; do
  [[ -f "$ART/settings.json" ]] || continue
  RUN=$(dirname "$ART")
  LINE=$(grep -m1 -o 'Measured ceilings (hw bench): GPU `[^`]*`, [0-9.,]* TFLOP/s dense, [0-9.]* TB/s' "$ART/report.md" || true)
  case "$LINE" in
    *'`h100-sxm`, 725.9 TFLOP/s dense, 3.02 TB/s') RUNS_H100+=("$RUN") ;;
    *'`h200`, 673.4 TFLOP/s dense, 4.27 TB/s') RUNS_H200_FIRST+=("$RUN") ;;
    *'`h200`, 683.8 TFLOP/s dense, 4.25 TB/s') RUNS_H200+=("$RUN") ;;
    *'`h100-sxm`, 733.6 TFLOP/s dense, 3.02 TB/s') RUNS_H100_A+=("$RUN") ;;
    *'`h100-sxm`, 730.0 TFLOP/s dense, 3.03 TB/s') RUNS_H100_B+=("$RUN") ;;
    *) echo "$0: $RUN: its report.md names no ceilings this script knows (${LINE:-none})" >&2; exit 1 ;;
  esac
  peaks "$ART/report.md" > "$BEFORE/$(basename "$RUN").txt"
  n=$((n + 1))
done
[[ $n -gt 0 ]] || { echo "$0: no run folders under $DIR" >&2; exit 1; }

bad=0  # a folder that fails is one line from rebuild; the others and the check below still run
if [[ ${#RUNS_H100[@]} -gt 0 ]]; then
  "$PY" -m llm_perf_opt.cli rebuild "${RUNS_H100[@]}" --ceilings "$H100" --no-plots --no-progress || bad=1
fi
if [[ ${#RUNS_H200_FIRST[@]} -gt 0 ]]; then
  "$PY" -m llm_perf_opt.cli rebuild "${RUNS_H200_FIRST[@]}" --ceilings "$H200_FIRST" --no-plots --no-progress || bad=1
fi
if [[ ${#RUNS_H200[@]} -gt 0 ]]; then
  "$PY" -m llm_perf_opt.cli rebuild "${RUNS_H200[@]}" --ceilings "$H200" --no-plots --no-progress || bad=1
fi
if [[ ${#RUNS_H100_A[@]} -gt 0 ]]; then
  "$PY" -m llm_perf_opt.cli rebuild "${RUNS_H100_A[@]}" --ceilings "$H100_A" --no-plots --no-progress || bad=1
fi
if [[ ${#RUNS_H100_B[@]} -gt 0 ]]; then
  "$PY" -m llm_perf_opt.cli rebuild "${RUNS_H100_B[@]}" --ceilings "$H100_B" --no-plots --no-progress || bad=1
fi

for f in "$BEFORE"/*.txt; do
  RUN="$DIR/$(basename "$f" .txt)"
  if ! diff -q "$f" <(peaks "$RUN/torch_profiler/report.md") > /dev/null; then
    echo "$0: $RUN: the report's peaks changed:" >&2; diff "$f" <(peaks "$RUN/torch_profiler/report.md") >&2 || true
    bad=1
  fi
done
[[ $bad -eq 0 ]] || { echo "$0: not every run folder was rebuilt as it should be (above)" >&2; exit 1; }
echo "== $n run folders rebuilt under $DIR; every report names the peaks it named before"
