#!/usr/bin/env bash
# The REST API benchmark on the embedded store and on a real etcd, each beside
# the raw store's rate measured in the same run. Usage: contrib/bench/api.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
./contrib/deps.sh --test
. contrib/bench/lib.sh
seconds="${1:-5}"
bench=$(bench_binary)

"$bench" api --seconds "$seconds"
echo

start_etcd
"$bench" api --seconds "$seconds" --etcd "http://127.0.0.1:$etcd_port"
