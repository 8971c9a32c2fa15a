#!/usr/bin/env bash
# Builds the Docker image and smoke-tests it, where a container engine runs (the development and
# CI machines have none: there it says so and exits 2).
#
#   bash scripts/docker-smoke.sh [docker|podman]
#
# Checks: the image builds (its last stage runs `keyhop check` on the bundled example config);
# `keyhop check` works as a container command; the container serves a Redis client against two
# redis-servers on this host (host network), turns healthy through its HEALTHCHECK, reloads on
# SIGHUP, and exits 0 on `docker stop`. The redis-servers are started from PATH on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
engine="${1:-docker}"
image="keyhop:smoke"

if ! "$engine" info >/dev/null 2>&1; then
  echo "docker-smoke: no running container engine ('$engine info' failed): nothing to test here" >&2
  exit 2
fi
for bin in redis-server redis-cli; do
  command -v "$bin" >/dev/null || { echo "docker-smoke: needs $bin (./dev setup redis)" >&2; exit 1; }
done

step() { echo "docker-smoke: $*"; }
fail() { echo "docker-smoke: FAILED: $*" >&2; exit 1; }

free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  fail "no free port found"
}

work="$(mktemp -d)"
name="keyhop-smoke-$$"
pids=()
cleanup() {
  "$engine" rm -f "$name" >/dev/null 2>&1 || true
  for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step "building $image"
"$engine" build -t "$image" .

step "keyhop check on the bundled example"
out="$("$engine" run --rm "$image" check --config /etc/keyhop/keyhop.example.toml)"
grep -q "g1" <<<"$out" || fail "check printed no slot map: $out"

p1="$(free_port)"; p2="$(free_port)"; listen="$(free_port)"; admin="$(free_port)"
for p in "$p1" "$p2"; do
  redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    --logfile "$work/redis-$p.log" &
  pids+=($!)
done
cat >"$work/keyhop.toml" <<EOF
listen = "127.0.0.1:$listen"
admin_listen = "127.0.0.1:$admin"
[[groups]]
name = "g1"
master = "127.0.0.1:$p1"
[[groups]]
name = "g2"
master = "127.0.0.1:$p2"
EOF
chmod 644 "$work/keyhop.toml"

step "running the container (host network; keyhop on $listen, admin on $admin)"
# The image's HEALTHCHECK asks port 9121; with a different admin port, override it to match.
"$engine" run -d --name "$name" --network host \
  --health-cmd "bash -c 'exec 3<>/dev/tcp/127.0.0.1/$admin && printf \"GET /readyz HTTP/1.0\\r\\n\\r\\n\" >&3 && head -n 1 <&3 | grep -q \" 200 \"'" \
  --health-interval 1s \
  -v "$work/keyhop.toml:/etc/keyhop/keyhop.toml:ro" "$image" >/dev/null

healthy=""
for _ in $(seq 1 60); do
  healthy="$("$engine" inspect --format '{{.State.Health.Status}}' "$name" 2>/dev/null || true)"
  [ "$healthy" = healthy ] && break
  sleep 1
done
[ "$healthy" = healthy ] || fail "container not healthy after 60 s ($healthy): $("$engine" logs "$name" 2>&1 | tail -20)"

[ "$(redis-cli -p "$listen" set smoke:a 1)" = OK ] || fail "SET through the container"
[ "$(redis-cli -p "$listen" mset smoke:b 2 smoke:c 3)" = OK ] || fail "MSET through the container"
[ "$(redis-cli -p "$listen" get smoke:a)" = 1 ] || fail "GET through the container"
step "serving: SET/MSET/GET answered through the container"

"$engine" kill -s HUP "$name" >/dev/null
for _ in $(seq 1 20); do
  "$engine" logs "$name" 2>&1 | grep -q "configuration reloaded" && break
  sleep 0.5
done
"$engine" logs "$name" 2>&1 | grep -q "configuration reloaded" || fail "no reload logged after SIGHUP"
step "SIGHUP reloaded the config"

"$engine" stop "$name" >/dev/null
code="$("$engine" inspect --format '{{.State.ExitCode}}' "$name")"
[ "$code" = 0 ] || fail "exit code $code after docker stop"
step "stopped cleanly (exit 0). All checks passed."
