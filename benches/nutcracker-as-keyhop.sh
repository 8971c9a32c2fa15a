#!/usr/bin/env bash
# A/A noise check for benches/load.rs: stands in for keyhop by running nutcracker over the same
# masters, so "keyhop / nutcracker" ratios show how much the machine alone moves the numbers.
#   KEYHOP_BIN=benches/nutcracker-as-keyhop.sh cargo bench --bench load
# Called as `nutcracker-as-keyhop.sh --config FILE.toml`; reads `listen` and each group's `master`.
set -euo pipefail
[[ "${1:-}" == "--config" && -f "${2:-}" ]] || { echo "usage: $0 --config keyhop.toml" >&2; exit 2; }
cfg="$2"
dir="$(dirname "$cfg")"
listen="$(sed -n 's/^listen *= *"\(.*\)"/\1/p' "$cfg")"
yml="$dir/aa-$(basename "$cfg" .toml).yml"
{
  echo "aa:"
  echo "  listen: $listen"
  echo "  hash: fnv1a_64"
  echo "  distribution: ketama"
  echo "  redis: true"
  echo "  timeout: 10000"
  echo "  auto_eject_hosts: false"
  echo "  preconnect: true"
  echo "  servers:"
  i=0
  for m in $(sed -n 's/^master *= *"\(.*\)"/\1/p' "$cfg"); do
    i=$((i + 1))
    echo "   - $m:1 g$i"
  done
} > "$yml"
# nutcracker needs a stats port: take one below Linux's ephemeral range (32768+), where earlier
# benchmark connections may still sit in TIME_WAIT. Its log goes to stderr, which the harness
# keeps and shows if this stand-in fails to come up.
stats=$((20000 + RANDOM % 12000))
exec "${NUTCRACKER_BIN:-/usr/sbin/nutcracker}" -c "$yml" -s "$stats" -a 127.0.0.1 -o /dev/stderr
