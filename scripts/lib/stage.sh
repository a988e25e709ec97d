# Sourced by the demo scripts: `stage NAME COMMAND...` runs the command and appends "NAME<TAB>seconds" to
# $TIMING (the stage table benchmarks/demo_time.py reads).
stage() {
  local name=$1 began=$SECONDS
  shift
  "$@"
  printf '%s\t%s\n' "$name" "$((SECONDS - began))" >> "$TIMING"
}
