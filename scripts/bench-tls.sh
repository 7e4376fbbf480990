#!/usr/bin/env bash
# The cost of TLS: YCSB workload A on a 3-node demo cluster, three ways in alternation in one
# invocation (plain, TLS on every listener and between nodes, TLS + authentication as
# `demo --secure` runs), so the ratios are measured on the same machine state.
#
#   scripts/bench-tls.sh BINARY [ROUNDS] [OPS]
#
# Prints one line per round and the median ratios tls/plain and secure/plain.
set -euo pipefail
bin=${1:?quorumdb binary}; rounds=${2:-3}; ops=${3:-40000}
port=17700
endpoints() { # scheme
  echo "--endpoint $1://127.0.0.1:$((port+1)) --endpoint $1://127.0.0.1:$((port+2)) --endpoint $1://127.0.0.1:$((port+3))"
}
certs=$(mktemp -d)
"$bin" certs create-ca --certs-dir "$certs" > /dev/null
"$bin" certs create-node --certs-dir "$certs" > /dev/null
trap 'rm -rf "$certs"' EXIT

run() { # mode (plain|tls|secure) -> ops/s
  local mode=$1 dir args=() extra=() scheme=http
  dir=$(mktemp -d)
  case $mode in
    tls) args=(--set "tls={certs_dir=\"$certs\"}"); scheme=https; extra=(--ca-cert "$certs/ca.crt") ;;
    secure) args=(--secure); scheme=https; extra=(--ca-cert "$dir/certs/ca.crt") ;;
  esac
  "$bin" demo --nodes 3 --zones 3 --base-port $port --data-dir "$dir" "${args[@]}" > "$dir/demo.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 300); do grep -q '^ready' "$dir/demo.log" && break; sleep 0.1; done
  if [ "$mode" = secure ]; then extra+=(--token "$(cat "$dir/certs/root.token")"); fi
  # shellcheck disable=SC2046
  "$bin" bench $(endpoints $scheme) "${extra[@]}" --workload a --ops "$ops" --concurrency 64 --records 10000 -o json \
    > "$dir/bench.json" 2> "$dir/bench.err" || true
  kill -TERM $pid; wait $pid 2>/dev/null || true
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(round(d["ops_per_sec"]), d.get("errors", 0))' "$dir/bench.json"
  rm -rf "$dir"
}

tls_ratios=(); secure_ratios=()
for r in $(seq 1 "$rounds"); do
  read -r p pe < <(run plain); read -r t te < <(run tls); read -r s se < <(run secure)
  tr=$(python3 -c "print(round($t/$p, 3))"); sr=$(python3 -c "print(round($s/$p, 3))")
  tls_ratios+=("$tr"); secure_ratios+=("$sr")
  echo "round $r: plain $p ops/s ($pe errors), tls $t ($te), tls+auth $s ($se); tls/plain $tr, tls+auth/plain $sr"
done
python3 -c "import statistics,sys; print('median tls/plain', statistics.median(map(float, sys.argv[1:])))" "${tls_ratios[@]}"
python3 -c "import statistics,sys; print('median tls+auth/plain', statistics.median(map(float, sys.argv[1:])))" "${secure_ratios[@]}"
