#!/usr/bin/env bash
# Side by side, in one invocation on one machine (issue #15): QuorumDB (3 nodes, N=3, quorum
# reads and writes, fsync), etcd (3 members, its JSON gateway) and Redis (one node,
# appendfsync always), each preloaded with the same 10 000 keys and driven with the same
# closed-loop load: wrk, 2 threads, 64 connections, 256-byte values, random keys. Redis is
# driven by redis-benchmark (it speaks RESP, not HTTP), with the same 64 connections.
#
#   scripts/bench-peers.sh [QUORUMDB_BINARY] [SECONDS]
#
# Installs etcd, Redis and wrk from Debian packages when missing (apt-get, with sudo unless
# root). Everything listens on 127.0.0.1 only, in temporary directories removed at the end.
# Prints one table and the ratios the issue's goals are stated in.
set -euo pipefail
bin=${1:-target/release/quorumdb}; secs=${2:-15}
keys=10000; conns=64; threads=2; value_bytes=256
[ -x "$bin" ] || { echo "no QuorumDB binary at $bin (cargo build --release first)" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# ---- Lua scripts for wrk: a random key of $keys per request, one fixed 256-byte value.
value=$(head -c "$value_bytes" /dev/zero | tr '\0' 'x')
cat > "$work/common.lua" <<EOF
local value = "$value"
local keys = $keys
local function b64(s)
  local c = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
  return ((s:gsub('.', function(x)
    local r, b = '', x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2^i - b % 2^(i-1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local n = 0
    for i = 1, 6 do n = n + (x:sub(i, i) == '1' and 2^(6-i) or 0) end
    return c:sub(n + 1, n + 1)
  end) .. ({ '', '==', '=' })[#s % 3 + 1])
end
-- Each thread gets a number (its own random sequence). Preloading walks the keys in order,
-- each thread its own half; measuring draws them at random.
local threads_made = 0
function setup(thread)
  thread:set("id", threads_made)
  threads_made = threads_made + 1
end
local next_key = nil
function init(args)
  math.randomseed(os.time() * 1000 + (id or 0) * 7919)
  if args[1] == "preload" then next_key = (id or 0) * math.floor(keys / 2) end
end
function key()
  if next_key then
    local k = next_key % keys
    next_key = next_key + 1
    return k
  end
  return math.random(0, keys - 1)
end
function wrk_value() return value end
function wrk_b64(s) return b64(s) end
function response(status, headers, body)
  if status >= 300 then errors = (errors or 0) + 1 end
end
EOF
cat > "$work/qdb_put.lua" <<EOF
dofile("$work/common.lua")
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"
table_name = os.getenv("QDB_TABLE") or "bench"
request = function()
  return wrk.format(nil, "/v1/tables/" .. table_name .. "/items/k" .. key(), nil, '{"value":"' .. wrk_value() .. '"}')
end
EOF
cat > "$work/qdb_get.lua" <<EOF
dofile("$work/common.lua")
table_name = os.getenv("QDB_TABLE") or "bench"
request = function() return wrk.format("GET", "/v1/tables/" .. table_name .. "/items/k" .. key()) end
EOF
cat > "$work/etcd_put.lua" <<EOF
dofile("$work/common.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local v = wrk_b64(wrk_value())
request = function()
  return wrk.format(nil, "/v3/kv/put", nil, '{"key":"' .. wrk_b64("k" .. key()) .. '","value":"' .. v .. '"}')
end
EOF
cat > "$work/etcd_get.lua" <<EOF
dofile("$work/common.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function() return wrk.format(nil, "/v3/kv/range", nil, '{"key":"' .. wrk_b64("k" .. key()) .. '"}') end
EOF

# wrk run -> "req/s p99_ms non2xx"
wrk_run() { # url script seconds [args...]
  local url=$1 script=$2 s=$3; shift 3
  local out
  out=$(wrk -t"$threads" -c"$conns" -d"${s}s" --latency -s "$script" "$url" -- "$@" 2>&1)
  echo "$out" >> "$work/wrk.log"
  local rps p99 bad
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}')
  bad=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  echo "${rps:-0} ${p99:-?} ${bad:-0}"
}

wait_http() { # url
  for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; return 1
}

# ---- QuorumDB: 3 nodes on 17701..17703, one siblings table (default) and one LWW table.
echo "== QuorumDB: 3 nodes, N=3, fsync" >&2
"$bin" demo --nodes 3 --zones 3 --base-port 17700 --data-dir "$work/qdb" \
  --set 'tables=[{name = "bench_lww", replication_factor = 3, conflict = "lww"}]' > "$work/qdb.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do grep -q '^ready' "$work/qdb.log" && break; sleep 0.1; done
grep -q '^ready' "$work/qdb.log" || { cat "$work/qdb.log" >&2; exit 1; }
qdb=http://127.0.0.1:17701
for t in bench bench_lww; do
  QDB_TABLE=$t wrk_run "$qdb" "$work/qdb_put.lua" 4 preload > /dev/null
done
read -r q_put q_put_p99 q_put_bad < <(wrk_run "$qdb" "$work/qdb_put.lua" "$secs")
read -r q_lww q_lww_p99 q_lww_bad < <(QDB_TABLE=bench_lww wrk_run "$qdb" "$work/qdb_put.lua" "$secs")
read -r q_get q_get_p99 q_get_bad < <(wrk_run "$qdb" "$work/qdb_get.lua" "$secs")
kill -TERM "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

# ---- etcd: 3 members, client ports 23791..23793.
echo "== etcd: 3 members" >&2
cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench \
    > "$work/etcd$i.log" 2>&1 &
  pids+=($!)
done
wait_http http://127.0.0.1:23791/health
etcd_url=http://127.0.0.1:23791
wrk_run "$etcd_url" "$work/etcd_put.lua" 4 preload > /dev/null
read -r e_put e_put_p99 e_put_bad < <(wrk_run "$etcd_url" "$work/etcd_put.lua" "$secs")
read -r e_get e_get_p99 e_get_bad < <(wrk_run "$etcd_url" "$work/etcd_get.lua" "$secs")
for p in "${pids[@]: -3}"; do kill -TERM "$p" 2>/dev/null || true; done
wait 2>/dev/null || true

# ---- Redis: one node, AOF with fsync on every write.
echo "== Redis: appendfsync always" >&2
mkdir -p "$work/redis"
redis-server --port 26379 --bind 127.0.0.1 --dir "$work/redis" --save "" \
  --appendonly yes --appendfsync always > "$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do redis-cli -p 26379 ping > /dev/null 2>&1 && break; sleep 0.1; done
redis-benchmark -p 26379 -c "$conns" -n "$keys" -d "$value_bytes" -r "$keys" -t set -q > /dev/null
rb() { # test -> "req/s p99_ms"
  redis-benchmark -p 26379 -c "$conns" -n $(( 60000 * secs / 15 )) -d "$value_bytes" -r "$keys" -t "$1" --csv 2>/dev/null |
    python3 -c 'import csv,sys; r=list(csv.reader(sys.stdin)); h=r[0]; v=r[1]; d=dict(zip(h,v)); print(d.get("rps","0"), d.get("p99_latency_ms","?"))'
}
read -r r_set r_set_p99 < <(rb set)
read -r r_get r_get_p99 < <(rb get)

ratio() { python3 -c "a=float('$1'); b=float('$2'); print(f'{a/b:.2f}' if b else '-')"; }
echo
echo "machine: $(uname -n), $(nproc) cores; $(date -u +%Y-%m-%d); wrk -t$threads -c$conns -d${secs}s, $value_bytes-byte values, $keys keys"
printf '%-44s %12s %9s %8s\n' "system / operation" "req/s" "p99 ms" "non-2xx"
printf '%-44s %12.0f %9s %8s\n' "QuorumDB put (siblings table, blind)" "$q_put" "$q_put_p99" "$q_put_bad"
printf '%-44s %12.0f %9s %8s\n' "QuorumDB put (LWW table)" "$q_lww" "$q_lww_p99" "$q_lww_bad"
printf '%-44s %12.0f %9s %8s\n' "QuorumDB get (r=quorum)" "$q_get" "$q_get_p99" "$q_get_bad"
printf '%-44s %12.0f %9s %8s\n' "etcd put (3 members, JSON gateway)" "$e_put" "$e_put_p99" "$e_put_bad"
printf '%-44s %12.0f %9s %8s\n' "etcd get (linearizable range)" "$e_get" "$e_get_p99" "$e_get_bad"
printf '%-44s %12.0f %9s %8s\n' "Redis SET (appendfsync always)" "$r_set" "$r_set_p99" "-"
printf '%-44s %12.0f %9s %8s\n' "Redis GET" "$r_get" "$r_get_p99" "-"
echo
echo "QuorumDB put / etcd put:   $(ratio "$q_put" "$e_put")   (goal >= 4)"
echo "QuorumDB put / Redis SET:  $(ratio "$q_put" "$r_set")   (goal >= 0.3)"
echo "QuorumDB get / Redis GET:  $(ratio "$q_get" "$r_get")   (goal >= 0.3)"
echo "QuorumDB LWW put / etcd put: $(ratio "$q_lww" "$e_put")"
