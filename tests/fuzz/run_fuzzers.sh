#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz (built by `make fuzz` in
# BUILD_DIR/fuzz/) for SECONDS each, at most FUZZ_JOBS (default 2) at once,
# each on a fresh copy of its seed corpus in BUILD_DIR/fuzz-work/TARGET/
# (new inputs go there, never into the repository). Prints a summary table
# and exits non-zero if any target crashed or a sanitizer reported, naming
# the crashing input and the command that reproduces it.
#
# Usage: tests/fuzz/run_fuzzers.sh BUILD_DIR SECONDS [TARGET ...]
#   TARGET: a name under tests/fuzz/corpus/ (default: all of them).
set -uo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS [TARGET ...]" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd)
seconds=$2
shift 2
src_dir=$(cd "$(dirname "$0")" && pwd)
jobs=${FUZZ_JOBS:-2}

# Largest input per target: a few times the largest seed, small enough to
# keep each run fast.
max_len() {
  case "$1" in
    expert_request|router_request|kv_transfer) echo 16384 ;;
    generate_request|prefill_request) echo 2048 ;;
    chat_template) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for d in "$src_dir"/corpus/*/; do targets+=("$(basename "$d")"); done
fi
for t in "${targets[@]}"; do
  if [ ! -x "$build_dir/fuzz/${t}_fuzzer" ]; then
    echo "run_fuzzers: $build_dir/fuzz/${t}_fuzzer is missing (make fuzz builds it)" >&2
    exit 2
  fi
done

# Errors abort, so any report ends the run as a crash with the input saved.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

work_root="$build_dir/fuzz-work"
echo "fuzz: ${#targets[@]} targets, ${seconds} s each, $jobs at a time" \
     "(about $(( (${#targets[@]} + jobs - 1) / jobs * seconds )) s); work in $work_root"

run_one() {
  local t=$1 work="$work_root/$1"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  cp "$src_dir/corpus/$t"/* "$work/corpus/"
  "$build_dir/fuzz/${t}_fuzzer" "$work/corpus" -max_total_time="$seconds" \
    -max_len="$(max_len "$t")" -timeout=25 -rss_limit_mb=2048 \
    -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
    > "$work/log" 2>&1
  echo $? > "$work/rc"
}

start=$(date +%s)
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
  echo "fuzz: [$(( $(date +%s) - start ))s] start $t (max_len $(max_len "$t"))"
  run_one "$t" &
  running=$((running + 1))
done
wait

failed=0
printf '\n%-18s %12s %9s %8s  %s\n' target runs execs/s corpus result
for t in "${targets[@]}"; do
  work="$work_root/$t"
  rc=$(cat "$work/rc" 2> /dev/null || echo 1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log" | tail -1)
  corpus=$(find "$work/corpus" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $rc)"
    failed=1
  fi
  printf '%-18s %12s %9s %8s  %s\n' "$t" "${runs:--}" "${speed:--}" "$corpus" "$result"
done
echo "fuzz: done in $(( $(date +%s) - start )) s"

if [ "$failed" -ne 0 ]; then
  echo
  for t in "${targets[@]}"; do
    work="$work_root/$t"
    [ "$(cat "$work/rc" 2> /dev/null || echo 1)" -eq 0 ] && continue
    echo "=== $t: the end of $work/log"
    grep -E "ERROR: |SUMMARY: |runtime error|fuzz invariant|^    #[0-9]+ " "$work/log" | head -30
    for artifact in "$work"/artifacts/*; do
      [ -e "$artifact" ] || continue
      echo "crashing input: $artifact"
      echo "reproduce:      $build_dir/fuzz/${t}_fuzzer $artifact"
    done
    echo
  done
  echo "fuzz: FAILED. Fix the cause, then add the input to tests/fuzz/corpus/TARGET/" \
       "or a regression test (tests/fuzz/README.md)."
  exit 1
fi
