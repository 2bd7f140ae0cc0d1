# Sourced by probe_choice.sh and host_probe_check.sh (not run alone; expects PY and P to be set, and RUN_PREFIX, the
# run folders' GPU prefix, default h200):
# compare_set CAL STAMP DIR TITLE  compares every run folder $P/$RUN_PREFIX-*-STAMP with calibration CAL into DIR/<run>,
#                                  then prints TITLE and the calibrated stage errors (host_figures.py cross DIR).
compare_set() {
  local cal=$1 stamp=$2 dir=$3 title=$4 run name
  mkdir -p "$dir"
  for run in "$P"/"${RUN_PREFIX:-h200}"-*-"$stamp"; do
    [[ -d "$run" ]] || continue
    name="$(basename "$run")"
    "$PY" -m llm_perf_opt.runners.compare_cli --run "$run" --config default --calibration "$cal" \
      --out "$dir/$name/compare" --unified-dir "$dir/$name" > /dev/null
  done
  echo "== $title"
  "$PY" scripts/analytical/host_figures.py cross "$dir"
}
