#!/usr/bin/env bash
# YCSB workload A on a 3-node demo cluster, two builds in alternation (A B A B ...), so a ratio
# is measured in one invocation on the same machine state.
#
#   scripts/bench-ycsb-ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [OPS]
#
# Prints one line per run and, per round, the new/old throughput ratio; then the median ratio.
set -euo pipefail
old=${1:?old binary}; new=${2:?new binary}; rounds=${3:-3}; ops=${4:-40000}
port=17700
E="--endpoint http://127.0.0.1:$((port+1)) --endpoint http://127.0.0.1:$((port+2)) --endpoint http://127.0.0.1:$((port+3))"

run() { # binary -> ops/s
  local bin=$1 dir
  dir=$(mktemp -d)
  "$bin" demo --nodes 3 --zones 3 --base-port $port --data-dir "$dir" > "$dir/demo.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do grep -q '^ready' "$dir/demo.log" && break; sleep 0.1; done
  # shellcheck disable=SC2086
  "$bin" bench $E --workload a --ops "$ops" --concurrency 64 --records 10000 -o json > "$dir/bench.json" 2> "$dir/bench.err" || true
  kill -TERM $pid; wait $pid 2>/dev/null || true
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(round(d["ops_per_sec"]))' "$dir/bench.json"
  rm -rf "$dir"
}

ratios=()
for r in $(seq 1 "$rounds"); do
  a=$(run "$old"); b=$(run "$new")
  ratio=$(python3 -c "print(round($b/$a, 3))")
  ratios+=("$ratio")
  echo "round $r: old ${a} ops/s, new ${b} ops/s, new/old ${ratio}"
done
python3 -c "import statistics,sys; print('median new/old', statistics.median(map(float, sys.argv[1:])))" "${ratios[@]}"
