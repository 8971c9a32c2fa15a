#!/usr/bin/env bash
# The README's test command. Runs every test, then the data-plane tests again with keyhop on the
# multi-threaded runtime (2 workers) and 3 shared connections per backend: on a 2-core machine
# keyhop's default is one worker, so without this second pass the multi-threaded scheduler that
# larger machines run would never be tested. tests/common reads KEYHOP_TEST_THREADS and
# KEYHOP_TEST_BACKEND_CONNECTIONS and checks that keyhop started with them.
# Extra arguments go to both cargo test runs (e.g. `-- --nocapture`).
set -euo pipefail
cd "$(dirname "$0")/.."

# Both passes run even when the first fails, so one report shows every failure.
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?

echo "== the data-plane tests again: threads = 2, backend_connections = 3 =="
KEYHOP_TEST_THREADS=2 KEYHOP_TEST_BACKEND_CONNECTIONS=3 cargo test --no-fail-fast -p keyhop \
  --test proxy_routing --test proxy_isolation --test proxy_recovery --test fuzz_differential --test proxy_fanout --test proxy_faults --test proxy_replicas --test proxy_resp3 \
  --test proxy_clients --test auth --test failover_proxy --test failover_fence --test failover_fast \
  --test lifecycle_shutdown --test lifecycle_reload \
  --test proxy_transactions --test proxy_transactions_failover \
  --test proxy_pubsub --test proxy_pubsub_failover --test proxy_blocking --test apps \
  --test chaos --test tls --test tls_sentinel --test fleet_dataplane --test fleet_migrate --test fleet_lease "$@" || status=$?
exit $status
