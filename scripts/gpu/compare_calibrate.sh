#!/usr/bin/env bash
# Predicted vs measured on Stage 1 runs of one GPU (H100, H200, ...), calibration fitted on some runs and checked on a held-out one.
# Runs on CPU (no GPU needed): it reads the Stage 1 run folders brought back from the GPU machine.
#
# Usage:
#   scripts/gpu/compare_calibrate.sh HELD_OUT_RUN FIT_RUN [FIT_RUN ...]
#   scripts/gpu/compare_calibrate.sh --held-out RUN [--held-out RUN ...] FIT_RUN [FIT_RUN ...]
#     HELD_OUT_RUN  run folder(s) NOT used for fitting (another mode or batch than the fitted ones)
#     FIT_RUN       run folder(s) the calibration is fitted on (e.g. Base batch 1; Gundam batch 1)
#   Environment: OUT (default ./tmp/gpu-out) receives everything; the run folders are only read.
#                CEILINGS (optional): hw bench ceilings of the GPU for the prior (uncalibrated timeline model);
#                with access-pattern bandwidths measured, also the timeline fit's device model.
#                CONFIG (optional): model config to analyse when a run's checkpoint folder is not on this
#                machine ('default' = the published config.json, same as the checkpoint's).
#
# Writes under $OUT/compare-<gpu key>/ (gpu key of the first fit run, e.g. compare-h200):
#   calibration-<gpu>*.json           four fitted calibrations (see below), each with its held-out error,
#                                     and calibration-<gpu>-prior.json, the uncalibrated timeline model
#   <run_id>/compare/...              uncalibrated compare (JSON, Markdown, stage bars, roofline)
#   <run_id>/unified_report.{md,json} unified report per run
#   held-out-calibrated/<run_id>/...  the held-out run compared with the calibration
#   summary.md                        per-stage uncalibrated and calibrated error with the goals
# and prints the tables.
set -euo pipefail

HELDS=()
while [[ $# -gt 0 && "$1" == "--held-out" ]]; do
  [[ $# -ge 2 ]] || { echo "--held-out needs a run folder" >&2; exit 2; }
  HELDS+=("$2"); shift 2
done
if [[ ${#HELDS[@]} -eq 0 && $# -ge 1 ]]; then HELDS=("$1"); shift; fi
if [[ ${#HELDS[@]} -eq 0 || $# -lt 1 ]]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
FITS=("$@")
OUT="${OUT:-./tmp/gpu-out}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"
CFG=()
if [[ -n "${CONFIG:-}" ]]; then CFG=(--config "$CONFIG"); fi
run_id() { "$PY" - "$1" <<'PYEOF'
import sys
from llm_perf_opt.compare.runs import load_run
print(load_run(sys.argv[1]).run_id)
PYEOF
}
GPU="$("$PY" - "${FITS[0]}" <<'PYEOF'
import sys
from llm_perf_opt.compare.runs import load_run
print(load_run(sys.argv[1]).gpu_key or "unknown-gpu")
PYEOF
)"
DEST="$OUT/compare-$GPU"
mkdir -p "$DEST"
C="calibration-$GPU"

echo "== uncalibrated comparison (pure roofline, datasheet peaks) =="
for RUN in "${FITS[@]}" "${HELDS[@]}"; do
  RID="$(run_id "$RUN")"
  echo "-- $RID ($RUN)"
  "$PY" -m llm_perf_opt.runners.compare_cli --run "$RUN" "${CFG[@]}" --out "$DEST/$RID/compare" \
    --unified-dir "$DEST/$RID"
done

FIT_ARGS=()
for RUN in "${FITS[@]}"; do FIT_ARGS+=(--run "$RUN"); done
for RUN in "${HELDS[@]}"; do FIT_ARGS+=(--held-out "$RUN"); done
# Four fits, all evaluated on the same held-out runs (stage times + per-stage/category device times):
#   $C-timeline.json     host/device timeline model: device efficiencies and per-stage device factors from
#                        the operator device times, host us per kernel per stage from the stage times
#                        (relative to the runs' host-speed probe when they have one)
#   $C.json              additive: per-category efficiencies, one launch cost per stage
#   $C-shared.json       additive: one compute + one bandwidth efficiency, one launch cost per stage
#   $C-one-launch.json   additive: per-category efficiencies, a single launch cost
# With a CEILINGS file that has access-pattern bandwidths (hw bench --pattern-sides), the timeline fit takes
# its device model from it (ceilings, kernel floor, patterns) and fits only the per-stage device factors.
TIMELINE_ARGS="--time-model timeline"
if [[ -n "${CEILINGS:-}" ]] && "$PY" - "$CEILINGS" <<'PYEOF'
import sys
from llm_perf_opt.hardware import load_ceilings
sys.exit(0 if load_ceilings(sys.argv[1]).pattern_bandwidth_bytes_per_s else 1)
PYEOF
then TIMELINE_ARGS="$TIMELINE_ARGS --ceilings $CEILINGS"; fi
declare -A VARIANT_ARGS=(["$C-timeline"]="$TIMELINE_ARGS" ["$C"]="--per-stage-launch"
                         ["$C-shared"]="--per-stage-launch --shared" ["$C-one-launch"]="")
for NAME in "$C-timeline" "$C" "$C-shared" "$C-one-launch"; do
  echo "== calibration $NAME: fit on ${#FITS[@]} run(s), held out: ${HELDS[*]} =="
  # shellcheck disable=SC2086
  "$PY" -m llm_perf_opt.runners.calibrate_cli "${FIT_ARGS[@]}" "${CFG[@]}" ${VARIANT_ARGS[$NAME]} \
    --out "$DEST/$NAME.json"
done

# The prior: the uncalibrated timeline model (nothing fitted), evaluated on every run: roofline at the
# measured ceilings' fractions of the datasheet peaks (CEILINGS, a hw bench file; datasheet without it) and
# the reference baseline's host time per launch.
PRIOR_ARGS=()
if [[ -n "${CEILINGS:-}" ]]; then PRIOR_ARGS=(--ceilings "$CEILINGS"); fi
echo "== prior $C-prior: uncalibrated timeline model on all runs =="
"$PY" -m llm_perf_opt.runners.calibrate_cli "${FIT_ARGS[@]}" "${CFG[@]}" --prior "${PRIOR_ARGS[@]}" \
  --out "$DEST/$C-prior.json"

for HELD in "${HELDS[@]}"; do
  HRID="$(run_id "$HELD")"
  echo "== held-out run $HRID with the calibration ($C-timeline.json) =="
  "$PY" -m llm_perf_opt.runners.compare_cli --run "$HELD" "${CFG[@]}" --calibration "$DEST/$C-timeline.json" \
    --out "$DEST/held-out-calibrated/$HRID/compare" --unified-dir "$DEST/held-out-calibrated/$HRID"
done

echo "== summary (goal: |error| <= 25% uncalibrated on vision and prefill; <= 10% calibrated on every stage) =="
"$PY" - "$DEST/summary.md" "$DEST/$C-timeline.json" "$DEST/$C.json" "$DEST/$C-shared.json" "$DEST/$C-one-launch.json" \
  "$DEST/$C-prior.json" <<'PYEOF'
import json, math, sys
out = [f"# {json.load(open(sys.argv[2]))['gpu_key']}: predicted vs measured per stage", ""]
for path in sys.argv[2:]:
    cal = json.load(open(path))
    fit = cal["fit"]
    after = {(e["run_id"], e["stage"]): e for e in fit["after"]}
    prior = any(u.startswith("prior") for u in fit["unidentified"])
    label = "prior (uncalibrated timeline)" if prior else "calibrated"
    rows = [f"| run | set | stage | measured ms | roofline ms | roofline error | goal | {label} ms | {label} error | goal |",
            "|---|---|---|---:|---:|---:|---|---:|---:|---|"]
    held = []
    for b in fit["before"]:
        a = after[(b["run_id"], b["stage"])]
        eb = (b["predicted_ms"] - b["measured_ms"]) / b["measured_ms"]
        ea = (a["predicted_ms"] - a["measured_ms"]) / a["measured_ms"]
        if b["held_out"]:
            held.append(ea)
        uncal_goal = "(none)" if b["stage"] == "decode" else ("<= 25% met" if abs(eb) <= 0.25 else "<= 25% MISSED")
        cal_goal = ("<= 10% met" if abs(ea) <= 0.10 else "<= 10% MISSED") if b["held_out"] else "(fitted)"
        if prior:
            cal_goal = "(none)" if b["stage"] == "decode" else ("<= 25% met" if abs(ea) <= 0.25 else "<= 25% MISSED")
        rows.append(f"| {b['run_id']} | {'held-out' if b['held_out'] else 'fit'} | {b['stage']} | "
                    f"{b['measured_ms']:.3f} | {b['predicted_ms']:.3f} | {eb:+.1%} | {uncal_goal} | "
                    f"{a['predicted_ms']:.3f} | {ea:+.1%} | {cal_goal} |")
    rms = math.sqrt(sum(e * e for e in held) / len(held)) if held else float("nan")
    out += [f"## {path.rsplit('/', 1)[-1]}", "",
            f"Calibration: {cal['gpu_key']} {cal['dtype']}, torch {cal['software']['torch']}, "
            f"transformers {cal['software']['transformers']}; "
            + (("timeline model, host us/kernel " + ", ".join(f"{k} {v * 1e6:.2f}" for k, v in
                                                           cal["stage_host_s_per_kernel"].items())
                + f", sync {cal['host_sync_s'] * 1e6:.1f} us, host probe {cal.get('host_probe_us', 0):.2f} us/op"
                + "; device factors " + ", ".join(f"{k} {v:.2f}" for k, v in cal["stage_device_scale"].items()))
               if cal.get("time_model") == "timeline" else
               f"launch {cal['launch_overhead_s'] * 1e6:.2f} us/kernel"
               + "".join(f", {k} {v * 1e6:.2f}" for k, v in (cal.get("stage_launch_overhead_s") or {}).items()))
            + "; "
            f"fitted on {', '.join(fit['fitted_runs'])}; held out {', '.join(fit['held_out_runs'])}; "
            f"held-out rms {label} error {rms:.1%}.",
            f"Not constrained by the data (kept at 1.0): "
            f"{', '.join(u for u in fit['unidentified'] if ' weakly: ' not in u) or 'none'}."]
    out += [f"Weakly constrained by the data (fitted, uncertain): {u}." for u in fit["unidentified"]
            if " weakly: " in u]
    out += [""] + rows + [""]
text = "\n".join(out)
open(sys.argv[1], "w").write(text)
print(text)
PYEOF
echo "wrote $DEST"
