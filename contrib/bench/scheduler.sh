#!/usr/bin/env bash
# Scheduler placements per second with hollow nodes, beside the raw batched
# write rate of the same records, on the embedded store and on a real etcd.
# Usage: contrib/bench/scheduler.sh [NODES] [REPLICAS]
set -euo pipefail
cd "$(dirname "$0")/../.."
./contrib/deps.sh --test
nodes="${1:-5000}"; replicas="${2:-100000}"
cargo build --release --quiet -p lb-bench --bin lb-bench
bench="${CARGO_TARGET_DIR:-target}/release/lb-bench"
"$bench" scheduler --nodes "$nodes" --replicas "$replicas"
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
peer=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
etcd --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "default=http://127.0.0.1:$peer" >"$dir/etcd.log" 2>&1 &
etcd_pid=$!
trap 'kill $etcd_pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do etcdctl --endpoints "127.0.0.1:$port" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
"$bench" scheduler --nodes "$nodes" --replicas "$replicas" --etcd "http://127.0.0.1:$port"
