#!/usr/bin/env bash
# A/B two keyhop builds (and nutcracker) on the same two redis-servers, in alternating rounds.
#
#   benches/ab.sh OLD_BIN NEW_BIN [ROUNDS] [-- redis-benchmark args]
#   benches/ab.sh /tmp/keyhop-before target/release/keyhop 6 -- -t get -c 50
#
# For each round it runs redis-benchmark against each target in turn and records req/s, p99 and
# the proxy's CPU seconds per million requests (utime+stime from /proc, as benches/load.rs does);
# then it prints the medians. Use it to measure one change: build the old binary, copy it aside,
# rebuild, run this. Ports are picked free on 127.0.0.1; everything started is stopped on exit.
set -euo pipefail

old=${1:?usage: benches/ab.sh OLD_BIN NEW_BIN [ROUNDS] [-- redis-benchmark args]}
new=${2:?usage: benches/ab.sh OLD_BIN NEW_BIN [ROUNDS] [-- redis-benchmark args]}
rounds=${3:-5}
shift $(($# < 3 ? $# : 3))
[ "${1:-}" = "--" ] && shift
bench_args=("$@")
[ ${#bench_args[@]} -eq 0 ] && bench_args=(-t get -c 50)
requests=${REQUESTS:-200000}

dir=$(mktemp -d /tmp/keyhop-ab.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_ping() {
    for _ in $(seq 100); do
        redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "nothing answers PING on port $1" >&2
    exit 1
}

r1=$(free_port)
r2=$(free_port)
for p in $r1 $r2; do
    redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --logfile "$dir/redis-$p.log" &
    pids+=($!)
    wait_ping "$p"
done

start_keyhop() { # name bin -> port
    local port
    port=$(free_port)
    cat >"$dir/$1.toml" <<EOF
listen = "127.0.0.1:$port"
[[groups]]
name = "g1"
master = "127.0.0.1:$r1"
slots = ["0-8191"]
[[groups]]
name = "g2"
master = "127.0.0.1:$r2"
slots = ["8192-16383"]
EOF
    "$2" --config "$dir/$1.toml" >"$dir/$1.log" 2>&1 &
    wait_ping "$port"
    echo "$port $!"
}

targets=()
# start_keyhop runs in a subshell: its pid is recorded here for the cleanup.
read -r port pid < <(start_keyhop old "$old")
pids+=("$pid")
targets+=("old:$port:$pid")
read -r port pid < <(start_keyhop new "$new")
pids+=("$pid")
targets+=("new:$port:$pid")
if command -v nutcracker >/dev/null; then
    port=$(free_port)
    cat >"$dir/nutcracker.yml" <<EOF
ab:
  listen: 127.0.0.1:$port
  hash: fnv1a_64
  distribution: ketama
  redis: true
  timeout: 10000
  preconnect: true
  servers:
   - 127.0.0.1:$r1:1 g1
   - 127.0.0.1:$r2:1 g2
EOF
    nutcracker -c "$dir/nutcracker.yml" -s "$(free_port)" -a 127.0.0.1 -o "$dir/nutcracker.log" &
    pids+=($!)
    wait_ping "$port"
    targets+=("nutcracker:$port:$!")
fi

# Values for GET to find, on both servers.
for p in $r1 $r2; do
    redis-benchmark -p "$p" -n 100000 -r 100000 -t set -P 16 -q >/dev/null
done

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
results="$dir/results"
echo "redis-benchmark -n $requests -r 100000 ${bench_args[*]}, $rounds rounds"
for round in $(seq "$rounds"); do
    for t in "${targets[@]}"; do
        IFS=: read -r name port pid <<<"$t"
        t0=$(ticks "$pid")
        line=$(redis-benchmark -p "$port" -n "$requests" -r 100000 --csv "${bench_args[@]}" 2>/dev/null | tail -1)
        t1=$(ticks "$pid")
        rps=$(cut -d, -f2 <<<"$line" | tr -d '"')
        p99=$(cut -d, -f6 <<<"$line" | tr -d '"')
        cpu=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v n="$requests" 'BEGIN{printf "%.2f", d/hz/(n/1e6)}')
        echo "$name $rps $p99 $cpu" >>"$results"
        echo "round $round $name: $rps req/s, p99 $p99 ms, $cpu CPU s per M requests"
    done
done

# The middle value (the lower middle one for an even number of rounds).
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo
echo "medians: target req/s p99_ms cpu_s_per_M"
for t in "${targets[@]}"; do
    name=${t%%:*}
    printf '%s %s %s %s\n' "$name" \
        "$(awk -v n="$name" '$1==n{print $2}' "$results" | median)" \
        "$(awk -v n="$name" '$1==n{print $3}' "$results" | median)" \
        "$(awk -v n="$name" '$1==n{print $4}' "$results" | median)"
done
