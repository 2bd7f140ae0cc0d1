# Sourced by the GPU shell scripts (calibration_set.sh, ngram_runs.sh, stage_timeline.sh): one log of the
# commands and their exit codes, and the worst exit code so far.
#   start_log FILE   empty FILE and make it the log ($LOG); RC=0; STAMP = the UTC time, e.g. 20261204T195740Z
#   note_rc CODE     log "exit CODE" (also on stdout) and keep the worst in $RC
start_log() {
  LOG="$1"
  : > "$LOG"
  RC=0
  STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
}
note_rc() { local rc=$1; echo "exit $rc" | tee -a "$LOG"; if (( rc > RC )); then RC=$rc; fi; }
