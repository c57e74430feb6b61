#!/usr/bin/env bash
# Scheduler placements per second with hollow nodes, beside the raw batched
# write rate of the same records, on the embedded store and on a real etcd.
# Usage: contrib/bench/scheduler.sh [NODES] [REPLICAS]
set -euo pipefail
cd "$(dirname "$0")/../.."
./contrib/deps.sh --test
nodes="${1:-5000}"; replicas="${2:-100000}"
. contrib/bench/lib.sh
bench=$(bench_binary)
"$bench" scheduler --nodes "$nodes" --replicas "$replicas"
start_etcd
"$bench" scheduler --nodes "$nodes" --replicas "$replicas" --etcd "http://127.0.0.1:$etcd_port"
