#!/usr/bin/env bash
# What an idle `lb up` (API, scheduler, builder + registry, local node; nothing
# deployed) costs: its CPU over SECS seconds on the embedded store, then on a
# stock etcd (started with etcd's default flags), with etcd's own CPU and the
# requests lb sends it (from etcd's /metrics). The baseline is the same etcd
# idle with no client, measured in the same run.
# Usage: contrib/bench/idle.sh [SECS]   (target: lb ≤ 1% of a core, etcd
# requests ≤ 2/s)
set -euo pipefail
cd "$(dirname "$0")/../.."
./contrib/deps.sh --test
. contrib/bench/lib.sh
lb=$(lb_binary)
secs="${1:-60}"
hz=$(getconf CLK_TCK)

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# Requests etcd received (unary calls and stream messages, keep-alives included).
etcd_requests() {
  curl -s "http://127.0.0.1:$1/metrics" | awk '/^grpc_server_msg_received_total/ {s+=$2} END {printf "%d\n", s}'
}
pct() { awk -v a="$1" -v b="$2" -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.2f", (b-a)/hz/s*100}'; }

start_lb() {
  local port registry data
  port=$(free_port); registry=$(free_port); data="$dir/lb-$port"
  LB_ADMIN_PASSWORD=idle-bench-1 "$lb" up --data-dir "$data" --listen "127.0.0.1:$port" \
    --registry-listen "127.0.0.1:$registry" "$@" >"$data.log" 2>&1 &
  pids+=($!)
  lb_pid=$!
  wait_http "http://127.0.0.1:$port/readyz"
  # Let start-up work (the node joining, first passes) finish.
  sleep 5
}

echo "idle for ${secs} s each; CPU as % of one core"

start_lb
a=$(ticks "$lb_pid"); sleep "$secs"; b=$(ticks "$lb_pid")
embedded=$(pct "$a" "$b")
kill "$lb_pid"; wait "$lb_pid" 2>/dev/null || true
echo "embedded store: lb_cpu_pct=$embedded (target ≤ 1)"

start_etcd
a=$(ticks "$etcd_pid"); r0=$(etcd_requests "$etcd_port"); sleep "$secs"
b=$(ticks "$etcd_pid"); r1=$(etcd_requests "$etcd_port")
base=$(pct "$a" "$b")
base_rps=$(awk -v a="$r0" -v b="$r1" -v s="$secs" 'BEGIN {printf "%.2f", (b-a)/s}')
echo "baseline, etcd alone: etcd_cpu_pct=$base etcd_requests_per_s=$base_rps"

start_lb --etcd "http://127.0.0.1:$etcd_port"
la=$(ticks "$lb_pid"); ea=$(ticks "$etcd_pid"); r0=$(etcd_requests "$etcd_port")
sleep "$secs"
lb_b=$(ticks "$lb_pid"); eb=$(ticks "$etcd_pid"); r1=$(etcd_requests "$etcd_port")
lb_cpu=$(pct "$la" "$lb_b")
etcd_cpu=$(pct "$ea" "$eb")
rps=$(awk -v a="$r0" -v b="$r1" -v s="$secs" 'BEGIN {printf "%.2f", (b-a)/s}')
echo "stock etcd: lb_cpu_pct=$lb_cpu etcd_cpu_pct=$etcd_cpu (alone $base) etcd_requests_per_s=$rps (target ≤ 2)"
