#!/usr/bin/env bash
# Convergence benchmarks for BENCHMARKS.md (issue "Replicas converge"). Runs on loopback only.
#   1. time to full convergence after a 60 s node outage under steady writes
#   2. anti-entropy bytes moved vs number of differing keys (1, 100, 10 000 of 100 000)
#   3. cost of incremental Merkle-tree maintenance on write throughput (with vs without, same run)
# Usage: scripts/bench-convergence.sh [all|outage|aecost|treecost]   (needs a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
Q=${Q:-target/release/quorumdb}
BASE=${BASE:-27700}
OUTAGE_S=${OUTAGE_S:-60}
what=${1:-all}
[ -x "$Q" ] || cargo build --release -p quorumdb

demo_pid=
start_demo() { # args: nodes zones extra-demo-args...
  local nodes=$1 zones=$2; shift 2
  DIR=$(mktemp -d /tmp/qdb-bench-XXXX)
  "$Q" demo --nodes "$nodes" --zones "$zones" --base-port "$BASE" --data-dir "$DIR" "$@" > "$DIR/demo.out" 2>&1 &
  demo_pid=$!
  for _ in $(seq 1 300); do grep -q '^ready$' "$DIR/demo.out" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo did not start"; cat "$DIR/demo.out"; exit 1
}
stop_demo() {
  [ -n "$demo_pid" ] && kill -TERM "$demo_pid" 2>/dev/null && wait "$demo_pid" 2>/dev/null || true
  pkill -f "server --config $DIR/" 2>/dev/null || true
  demo_pid=; rm -rf "$DIR"
}
trap stop_demo EXIT
ep() { echo "http://127.0.0.1:$((BASE + $1))"; }
hints_total() {
  local n=$1 total=0
  for i in $(seq 1 "$n"); do
    h=$(curl -s "$(ep "$i")/v1/cluster/status" | sed -n 's/.*"hints_queued":\([0-9]*\).*/\1/p')
    total=$((total + ${h:-0}))
  done
  echo $total
}

outage() {
  echo "== 1. convergence after a ${OUTAGE_S} s outage of n5 under steady writes (5 nodes, 3 zones, N=3)"
  start_demo 5 3
  local pid5; pid5=$(awk '/^node n5 /{print $7}' "$DIR/demo.out")
  "$Q" bench --endpoint "$(ep 1)" --endpoint "$(ep 2)" --workload a --records 10000 --ops 1 --concurrency 32 >/dev/null
  kill -9 "$pid5"
  # Steady writes for the whole outage: ~OUTAGE_S seconds of YCSB-A through n1..n4.
  local t0; t0=$(date +%s.%N)
  timeout "$OUTAGE_S" "$Q" bench --endpoint "$(ep 1)" --endpoint "$(ep 2)" --endpoint "$(ep 3)" --endpoint "$(ep 4)" \
      --workload a --records 10000 --no-load --ops 100000000 --concurrency 16 >/dev/null 2>&1 || true
  local queued; queued=$(hints_total 4)
  echo "writes during outage: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", b-a}') s; hints queued: $queued"
  "$Q" server --config "$DIR/n5/quorumdb.toml" >>"$DIR/n5/server.log" 2>&1 &
  local t1; t1=$(date +%s.%N)
  until curl -sf "$(ep 5)/readyz" >/dev/null; do sleep 0.05; done
  until [ "$(hints_total 4)" = 0 ]; do sleep 0.1; done
  local t2; t2=$(date +%s.%N)
  echo "n5 restarted -> all hints handed off: $(awk -v a="$t1" -v b="$t2" 'BEGIN{printf "%.2f", b-a}') s"
  echo "verification repair pass (should move nothing):"
  "$Q" repair --wait --endpoint "$(ep 1)" -o json
  local t3; t3=$(date +%s.%N)
  echo "n5 restarted -> verified converged: $(awk -v a="$t1" -v b="$t3" 'BEGIN{printf "%.2f", b-a}') s"
  stop_demo
}

aecost() {
  echo "== 2. anti-entropy cost vs differing keys (3 nodes, N=3, 100 000 keys, hints off)"
  start_demo 3 3 --set hinted_handoff=false --set antientropy_interval_ms=0
  "$Q" bench --endpoint "$(ep 1)" --endpoint "$(ep 2)" --endpoint "$(ep 3)" --workload c --records 100000 --ops 1 --concurrency 64 >/dev/null
  for k in 1 100 10000; do
    "$Q" nemesis --endpoint "$(ep 1)" partition --from n1,n2 --to n3 --one-way >/dev/null
    sleep 4  # let n1/n2 see n3 down so writes go to them only
    "$Q" bench --endpoint "$(ep 1)" --endpoint "$(ep 2)" --workload c --records "$k" --ops 1 --concurrency 32 --w quorum >/dev/null
    "$Q" nemesis --endpoint "$(ep 1)" heal >/dev/null
    sleep 2
    printf "differing keys %6d: " "$k"
    "$Q" repair --wait --local --endpoint "$(ep 3)" --table bench -o json
  done
  stop_demo
}

treecost() {
  echo "== 3. write throughput with and without Merkle-tree maintenance (3 nodes, N=3, fsync, YCSB load phase = 100% writes)"
  for round in 1 2; do
    for ae in true false; do
      start_demo 3 3 --set antientropy=$ae
      printf "round %d antientropy=%-5s " "$round" "$ae"
      "$Q" bench --endpoint "$(ep 1)" --endpoint "$(ep 2)" --endpoint "$(ep 3)" --workload a --records 20000 --ops 40000 --concurrency 64 -o json 2>/dev/null \
        | sed -n 's/.*"ops_per_sec": *\([0-9.]*\).*/workload-a ops\/s \1/p'
      stop_demo
    done
  done
}

case $what in
  all) outage; aecost; treecost ;;
  outage) outage ;; aecost) aecost ;; treecost) treecost ;;
  *) echo "usage: $0 [all|outage|aecost|treecost]"; exit 2 ;;
esac
