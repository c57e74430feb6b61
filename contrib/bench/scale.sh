#!/usr/bin/env bash
# Cost that grows with the work, not the size: `lb up` (embedded store, no
# local node) holding SERVICES services of 0 replicas in one project: its
# RSS, the latency of a page of 100 services, its idle CPU, and an
# authenticated GET of one service under `wrk -t2 -c32` beside Debian's
# nginx serving the same bytes as a static file, in the same run.
# Usage: contrib/bench/scale.sh [SERVICES] [SECS]
# Targets: RSS ≤ 120 MiB, page p99 ≤ 10 ms, idle ≤ 2% of a core, GET ≥ 0.6× nginx.
set -euo pipefail
cd "$(dirname "$0")/../.."
./contrib/deps.sh
. contrib/bench/lib.sh
need_commands wrk:wrk nginx:nginx
lb=$(lb_binary)
services="${1:-10000}"
secs="${2:-20}"
hz=$(getconf CLK_TCK)

port=$(free_port); registry=$(free_port)
LB_ADMIN_PASSWORD=scale-bench-1 "$lb" up --no-node --data-dir "$dir/lb" --listen "127.0.0.1:$port" \
  --registry-listen "127.0.0.1:$registry" >"$dir/lb.log" 2>&1 &
pids+=($!)
lb_pid=$!
api="http://127.0.0.1:$port/api/v1"
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done

# Services created through the API, 32 at a time.
python3 - "$api" "$services" >"$dir/token" <<'EOF'
import http.client, json, sys, threading, urllib.parse
api, count = sys.argv[1], int(sys.argv[2])
u = urllib.parse.urlparse(api)
def call(conn, method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    conn.request(method, u.path + path, json.dumps(body) if body is not None else None, headers)
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data) if data else None
c = http.client.HTTPConnection(u.hostname, u.port)
token = call(c, "POST", "/auth/login", {"username": "admin", "password": "scale-bench-1"})["token"]
call(c, "POST", "/projects", {"name": "scale"}, token)
def worker(start):
    conn = http.client.HTTPConnection(u.hostname, u.port)
    for i in range(start, count, 32):
        call(conn, "POST", "/projects/scale/services",
             {"name": f"svc-{i:05d}", "image": "busybox", "replicas": 0, "memory": 16,
              "env": {"MODE": "bench", "INDEX": str(i)}}, token)
threads = [threading.Thread(target=worker, args=(s,)) for s in range(32)]
for t in threads: t.start()
for t in threads: t.join()
print(token)
EOF
token=$(cat "$dir/token")
sleep 3
rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$lb_pid/status")

# A page of 100 from the middle, 300 times, one after another.
page=$(python3 - "$api" "$token" "$services" <<'EOF'
import http.client, sys, time, urllib.parse
api, token, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urllib.parse.urlparse(api)
c = http.client.HTTPConnection(u.hostname, u.port)
times = []
for i in range(300):
    offset = (count // 2 + i * 100) % max(count - 100, 1)
    t = time.perf_counter()
    c.request("GET", f"{u.path}/projects/scale/services?offset={offset}&limit=100",
              headers={"Authorization": "Bearer " + token})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
    times.append((time.perf_counter() - t) * 1000)
times.sort()
print(f"{times[len(times)//2]:.2f} {times[int(len(times)*0.99)]:.2f}")
EOF
)
read -r p50 p99 <<<"$page"

[ -n "${SCALE_PAUSE:-}" ] && { echo "lb pid $lb_pid dir $dir token $token"; sleep "$SCALE_PAUSE"; }
# Idle CPU with that many services.
a=$(awk '{print $14+$15}' "/proc/$lb_pid/stat"); sleep "$secs"; b=$(awk '{print $14+$15}' "/proc/$lb_pid/stat")
idle=$(awk -v a="$a" -v b="$b" -v hz="$hz" -v s="$secs" 'BEGIN {printf "%.2f", (b-a)/hz/s*100}')

# One service's GET beside nginx serving the same bytes.
one="$api/projects/scale/services/svc-00042"
mkdir -p "$dir/www"
curl -sf "$one" -H "Authorization: Bearer $token" >"$dir/www/svc.json"
nport=$(free_port)
cat >"$dir/nginx.conf" <<EOF
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  server { listen 127.0.0.1:$nport; root $dir/www; }
}
EOF
nginx -c "$dir/nginx.conf" -p "$dir" -g 'daemon off;' &
pids+=($!)
sleep 0.5
rps() { awk '/^Requests\/sec/ {print $2}'; }
lb_rps=$(wrk -t2 -c32 -d10s -H "Authorization: Bearer $token" "$one" | rps)
nginx_rps=$(wrk -t2 -c32 -d10s "http://127.0.0.1:$nport/svc.json" | rps)
ratio=$(awk -v a="$lb_rps" -v b="$nginx_rps" 'BEGIN {printf "%.2f", a/b}')

echo "lb up with $services services (0 replicas), embedded store, no local node:"
echo "rss_mib=$((rss_kib / 1024)) (target ≤ 120)"
echo "page_of_100_ms p50=$p50 p99=$p99 (target p99 ≤ 10)"
echo "idle_cpu_pct=$idle over ${secs} s (target ≤ 2)"
echo "get_one_rps lb=$lb_rps nginx=$nginx_rps ratio=$ratio (target ≥ 0.6)"
