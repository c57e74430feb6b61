#!/usr/bin/env bash
# The REST API benchmark on the embedded store and on a real etcd, each beside
# the raw store's rate measured in the same run. Usage: contrib/bench/api.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
./contrib/deps.sh --test
seconds="${1:-5}"
cargo build --release --quiet -p lb-bench
bench=target/release/lb-bench
[ -n "${CARGO_TARGET_DIR:-}" ] && bench="$CARGO_TARGET_DIR/release/lb-bench"

"$bench" api --seconds "$seconds"
echo

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
peer=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
etcd --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
  --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
  --initial-cluster "default=http://127.0.0.1:$peer" >"$dir/etcd.log" 2>&1 &
etcd_pid=$!
trap 'kill $etcd_pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do etcdctl --endpoints "127.0.0.1:$port" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
"$bench" api --seconds "$seconds" --etcd "http://127.0.0.1:$port"
