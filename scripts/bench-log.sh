#!/usr/bin/env bash
# The log benchmark (issue #11 item 7): a 3-node release cluster (`quorumdb demo`, N=3,
# durability fsync) and confluent-kafka clients (scripts/bench_log.py), all on this machine.
# Per round, on a fresh cluster:
#   1. produce RECORDS_SMALL records of 100 bytes to a new one-partition topic as fast as one
#      idempotent acks=all producer goes (records/s, MB/s);
#   2. consume that partition from the beginning with one assign()ed consumer (time to the
#      first record, records/s);
#   3. produce RECORDS_LARGE records of 1 KiB the same way;
#   4. produce 100-byte records at half of step 1's rate for LATENCY_S seconds: p50/p99/p99.9
#      delivery-report latency.
# Prints every run as JSON, then the median and range of each figure over the rounds.
#
#   scripts/bench-log.sh [QUORUMDB_BINARY] [ROUNDS] [OTHER_BINARY]
#
# With OTHER_BINARY every round runs both builds, QUORUMDB_BINARY ("a") first, each on its
# own fresh cluster, and the summary adds the per-round ratios b/a and their median (the
# figure to trust on a noisy machine). The latency step of both builds runs at build a's
# half-peak rate, so both are measured at the same offered load.
#
# Environment: RECORDS_SMALL (500000), RECORDS_LARGE (150000), LATENCY_S (10), BASE_PORT
# (17800; Kafka on BASE_PORT+201..203), PYTHON (target/test-venv/bin/python, created by
# scripts/test.sh; any python with confluent-kafka==2.16.2 works), DEMO_SET (extra
# `--set KEY=VALUE` words for the demo, e.g. "--set durability=buffered").
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/quorumdb}; rounds=${2:-3}; other=${3:-}
small=${RECORDS_SMALL:-500000}; large=${RECORDS_LARGE:-150000}; latency_s=${LATENCY_S:-10}
base=${BASE_PORT:-17800}; python=${PYTHON:-target/test-venv/bin/python}
for b in "$bin" ${other:+"$other"}; do
  [ -x "$b" ] || { echo "no QuorumDB binary at $b (cargo build --release -p quorumdb first)" >&2; exit 1; }
done
"$python" -c "import confluent_kafka" 2>/dev/null || {
  echo "$python lacks confluent-kafka: run scripts/test.sh once (it creates target/test-venv) or set PYTHON" >&2
  exit 1
}
bootstrap="127.0.0.1:$((base + 201)),127.0.0.1:$((base + 202)),127.0.0.1:$((base + 203))"

work=$(mktemp -d)
demo=""
stop_demo() {
  if [ -n "$demo" ]; then kill -TERM "$demo" 2>/dev/null || true; wait "$demo" 2>/dev/null || true; fi
  demo=""
}
trap 'stop_demo; rm -rf "$work"' EXIT

# One run, tagged with its build and round: its JSON line goes to the terminal (stderr) and
# to the runs file; a run that failed stops the benchmark.
bench() {
  local build=$1; shift
  timeout 300 "$python" scripts/bench_log.py "$@" | tail -1 |
    sed "s/^{/{\"build\": \"$build\", \"round\": $round, /" | tee -a "$work/runs.jsonl" >&2
  tail -1 "$work/runs.jsonl" | grep -qv '"error"'
}

# One build's round on a fresh cluster. The latency step runs at $rate, set by the first
# build of the round to half its 100-byte produce rate.
round_of() {
  local build=$1 b=$2
  rm -rf "$work/qdb"
  # shellcheck disable=SC2086 # DEMO_SET is a list of words
  "$b" demo --nodes 3 --zones 3 --base-port "$base" --data-dir "$work/qdb" ${DEMO_SET:-} >"$work/demo.log" 2>&1 &
  demo=$!
  for _ in $(seq 1 300); do grep -q '^ready' "$work/demo.log" && break; sleep 0.1; done
  grep -q '^ready' "$work/demo.log" || { cat "$work/demo.log" >&2; exit 1; }
  echo "== round $round, build $build ($b)" >&2
  bench "$build" produce "$bootstrap" "small-$round" 100 "$small"
  if [ -z "$rate" ]; then
    rate=$(tail -1 "$work/runs.jsonl" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["records_per_s"] // 2)')
  fi
  # The warm-up record is in the partition too.
  bench "$build" consume "$bootstrap" "small-$round" $((small + 1))
  bench "$build" produce "$bootstrap" "large-$round" 1024 "$large"
  bench "$build" latency "$bootstrap" "latency-$round" 100 "$rate" "$latency_s"
  stop_demo
}

for round in $(seq 1 "$rounds"); do
  rate=""
  round_of a "$bin"
  if [ -n "$other" ]; then round_of b "$other"; fi
done

"$python" - "$work/runs.jsonl" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
builds = sorted({r["build"] for r in runs})
FIGURES = [
    ("produce 100 B, records/s", "produce", 100, "records_per_s"),
    ("produce 100 B, MB/s", "produce", 100, "mb_per_s"),
    ("produce 1 KiB, records/s", "produce", 1024, "records_per_s"),
    ("produce 1 KiB, MB/s", "produce", 1024, "mb_per_s"),
    ("consume from offset 0, records/s", "consume", None, "records_per_s"),
    ("consume, time to first record, s", "consume", None, "first_record_s"),
    ("latency run: offered records/s", "latency", None, "target_rate"),
    ("latency run: achieved records/s", "latency", None, "achieved_rate"),
    ("latency: p50 ms", "latency", None, "p50_ms"),
    ("latency: p99 ms", "latency", None, "p99_ms"),
    ("latency: p99.9 ms", "latency", None, "p999_ms"),
]
print()
for label, mode, size, key in FIGURES:
    line = f"{label:<34}"
    by_round = {}
    for b in builds:
        rs = [r for r in runs if r["build"] == b and r["mode"] == mode and (size is None or r["size"] == size)]
        by_round[b] = {r["round"]: r[key] for r in rs}
        vals = list(by_round[b].values())
        if vals:
            line += f" | {b}: median {statistics.median(vals):,} (range {min(vals):,}-{max(vals):,})"
    if len(builds) == 2:
        a, b = by_round[builds[0]], by_round[builds[1]]
        ratios = [b[k] / a[k] for k in sorted(a) if k in b and a[k]]
        if ratios:
            line += f" | b/a {statistics.median(ratios):.2f} ({' '.join(f'{x:.2f}' for x in ratios)})"
    print(line)
EOF
