#!/usr/bin/env bash
# Run the ROS tests while other processes keep every core busy, to show that they wait on
# conditions and assert no speed: a test that counts frames against the wall clock fails here.
#
#   scripts/ros_tests_under_load.sh [RUNS] [pytest args...]
#
# RUNS (default 3) consecutive runs of `pytest test/ros` (or the given args); BUSY (default:
# the number of cores) CPU-bound processes run for the whole time and are stopped at the end.
# Exits non-zero if any run fails; prints one summary line per run.
set -u
cd "$(dirname "$0")/.."
runs=${1:-3}
[ $# -gt 0 ] && shift
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(test/ros)
busy=${BUSY:-$(nproc)}
py=${PYTHON:-.venv/bin/python}

pids=()
stop() { [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; }
trap stop EXIT
for _ in $(seq "$busy"); do
  "$py" -c 'while True: sum(i * i for i in range(10000))' &
  pids+=($!)
done
echo "==> $busy busy process(es); $runs run(s) of pytest ${args[*]}"
failed=0
for run in $(seq "$runs"); do
  start=$(date +%s)
  log=$(mktemp)
  "$py" -m pytest -q "${args[@]}" >"$log" 2>&1
  code=$?
  echo "run $run: exit $code in $(( $(date +%s) - start )) s: $(tail -n 1 "$log")"
  if [ $code -ne 0 ]; then
    failed=1
    grep -E "^(FAILED|ERROR)" "$log" | head -20
  fi
  rm -f "$log"
done
exit $failed
