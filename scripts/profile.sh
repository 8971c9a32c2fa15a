#!/usr/bin/env bash
# Where a proxy's time goes, for the README's Performance section: keyhop beside nutcracker over
# the same two redis-servers (the load benchmark's setup), one redis-benchmark workload each:
#   - syscalls per request: `strace -c -f` attached to the proxy for one run (strace slows the
#     proxy a lot, so req/s of that run mean nothing; the counts per request do);
#   - the kernel's share of the proxy's CPU: stime / (utime + stime) from /proc/PID/stat over a
#     second run without strace, and CPU seconds per million requests.
# perf is not used: with kernel.perf_event_paranoid >= 2 (the default) it cannot see kernel time.
#
# usage: scripts/profile.sh [REDIS-BENCHMARK ARGS...]
#   default: -t get -c 50 -r 100000 -n 100000 (GET, 50 clients, no pipelining)
#   KEYHOP_BIN=path   keyhop binary (default: cargo build --release, target/release/keyhop)
#   NO_NUTCRACKER=1   keyhop only
# needs redis-server, redis-benchmark, strace; nutcracker optional.
set -euo pipefail

cd "$(dirname "$0")/.."
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(-t get -c 50 -r 100000 -n 100000)
requests=100000
for ((i = 0; i < ${#args[@]}; i++)); do
  [ "${args[$i]}" = "-n" ] && requests=${args[$((i + 1))]}
done

for tool in redis-server redis-cli redis-benchmark strace; do
  command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install -y redis-server redis-tools strace)" >&2; exit 1; }
done
if [ -z "${KEYHOP_BIN:-}" ]; then
  cargo build --release --bin keyhop >&2
  KEYHOP_BIN=target/release/keyhop
fi

dir=$(mktemp -d /tmp/keyhop-profile.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# A loopback port nothing listens on (bash's /dev/tcp connect fails).
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port found" >&2; exit 1
}

# Waits (at most 10 s) until PORT answers PING.
wait_ping() {
  for _ in $(seq 200); do
    [ "$(redis-cli -p "$1" PING 2>/dev/null)" = "PONG" ] && return 0
    sleep 0.05
  done
  echo "nothing answered PING on port $1 within 10 s" >&2; exit 1
}

# utime + stime of a pid, in clock ticks, as "utime stime".
ticks() { awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$1/stat"; }

g1=$(free_port); g2=$(free_port)
for p in "$g1" "$g2"; do
  redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --logfile "$dir/redis-$p.log" &
  pids+=($!)
  wait_ping "$p"
done

kport=$(free_port)
cat >"$dir/keyhop.toml" <<EOF
listen = "127.0.0.1:$kport"
threads = 0

[[groups]]
name = "g1"
master = "127.0.0.1:$g1"
slots = ["0-8191"]

[[groups]]
name = "g2"
master = "127.0.0.1:$g2"
slots = ["8192-16383"]
EOF
RUST_LOG=warn "$KEYHOP_BIN" --config "$dir/keyhop.toml" >"$dir/keyhop.log" 2>&1 &
pids+=($!)
targets=("keyhop $! $kport")
wait_ping "$kport"

if [ -z "${NO_NUTCRACKER:-}" ] && command -v nutcracker >/dev/null; then
  nport=$(free_port); nstats=$(free_port)
  cat >"$dir/nutcracker.yml" <<EOF
bench:
  listen: 127.0.0.1:$nport
  hash: fnv1a_64
  distribution: ketama
  redis: true
  timeout: 10000
  preconnect: true
  servers:
   - 127.0.0.1:$g1:1 g1
   - 127.0.0.1:$g2:1 g2
EOF
  nutcracker -c "$dir/nutcracker.yml" -s "$nstats" -a 127.0.0.1 -o "$dir/nutcracker.log" &
  pids+=($!)
  targets+=("nutcracker $! $nport")
  wait_ping "$nport"
fi

tck=$(getconf CLK_TCK)
echo "commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown); $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "workload: redis-benchmark ${args[*]}"
printf '%-11s %9s %16s %15s  %s\n' target "req/s" "syscalls/req" "kernel CPU" "CPU s/M req; top syscalls per request"
for t in "${targets[@]}"; do
  read -r name pid port <<<"$t"
  # Warm-up, then a run without strace for req/s and the user/kernel split.
  redis-benchmark -p "$port" -t get -n 2000 -q >/dev/null 2>&1
  read -r u0 s0 < <(ticks "$pid")
  rps=$(redis-benchmark -p "$port" --csv "${args[@]}" 2>/dev/null | awk -F'","' '/^"[A-Z]/ { print $2; exit }')
  read -r u1 s1 < <(ticks "$pid")
  du=$((u1 - u0)); ds=$((s1 - s0))
  kernel=$(awk -v u="$du" -v s="$ds" 'BEGIN { if (u + s > 0) printf "%.0f%%", 100 * s / (u + s); else print "-" }')
  cpu=$(awk -v t="$((du + ds))" -v hz="$tck" -v n="$requests" 'BEGIN { printf "%.2f", t / hz / n * 1e6 }')
  # The same run under strace -c; SIGINT makes strace detach and print its summary.
  strace -c -f -p "$pid" -o "$dir/strace-$name.txt" 2>/dev/null &
  spid=$!
  sleep 1
  redis-benchmark -p "$port" "${args[@]}" -q >/dev/null 2>&1
  kill -INT "$spid"
  wait "$spid" 2>/dev/null || true
  per_req=$(awk -v n="$requests" '$NF == "total" { printf "%.2f", $4 / n }' "$dir/strace-$name.txt")
  top=$(awk -v n="$requests" '$1 ~ /^[0-9.]+$/ && $NF != "total" { printf "%s %.2f\n", $NF, $4 / n }' \
    "$dir/strace-$name.txt" | sort -k2 -nr | head -4 | tr '\n' ',' | sed 's/,$//; s/,/, /g')
  printf '%-11s %9s %16s %15s  %s; %s\n' "$name" "${rps%.*}" "$per_req" "$kernel" "$cpu" "$top"
done
