#!/usr/bin/env bash
# The ingress benchmark: requests/s and p99 through lb's ingress and through
# Debian's nginx as a reverse proxy, to the same upstream (nginx serving a
# small file), in the same run; plain HTTP and TLS; p99 at a fixed ~2,000
# requests/s beside the upstream reached directly; new TLS handshakes/s; the
# ingress's RSS with 1 and with 1,000 routes.
#
# Usage: contrib/bench/ingress.sh [SECONDS]   (each wrk run; default 10)
#
# wrk has no rate limit and wrk2 is not in Debian: the fixed rate is made
# with a wrk Lua `delay()` of 16 ms per request on each of 32 connections
# (≈ 2,000 requests/s; the rate reached is printed). wrk measures latency
# from the send, so the delay is not counted in it.
set -euo pipefail
cd "$(dirname "$0")/../.."
. contrib/bench/lib.sh
need_commands wrk:wrk nginx:nginx openssl:openssl curl:curl python3:python3
seconds="${1:-10}"

cargo build --release --quiet -p lb-ingress --example serve
serve="$(cd "$target/release/examples" && pwd)/serve"

# The upstream: nginx serving a 612-byte file.
up=$(free_port)
mkdir -p "$dir/www" "$dir/up" "$dir/proxy"
# nginx workers run as nobody when started as root: let them read the file.
chmod 755 "$dir" "$dir/www"
head -c 612 /dev/zero | tr '\0' 'x' >"$dir/www/index.html"
cat >"$dir/up/nginx.conf" <<CONF
worker_processes 1;
pid $dir/up/nginx.pid;
error_log $dir/up/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/up; proxy_temp_path $dir/up; fastcgi_temp_path $dir/up;
  uwsgi_temp_path $dir/up; scgi_temp_path $dir/up;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$up; root $dir/www; }
}
CONF
nginx -p "$dir/up" -c "$dir/up/nginx.conf" -g 'daemon off;' &
pids+=($!)

# A certificate for localhost (the benchmark's host name: wrk needs one it
# can resolve).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null

# nginx as the reverse proxy under comparison: keep-alive to the upstream,
# the same forwarded headers as lb's ingress.
px=$(free_port); pxs=$(free_port)
cat >"$dir/proxy/nginx.conf" <<CONF
worker_processes auto;
pid $dir/proxy/nginx.pid;
error_log $dir/proxy/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/proxy; proxy_temp_path $dir/proxy; fastcgi_temp_path $dir/proxy;
  uwsgi_temp_path $dir/proxy; scgi_temp_path $dir/proxy;
  keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$up; keepalive 64; }
  server {
    listen 127.0.0.1:$px;
    listen 127.0.0.1:$pxs ssl http2;
    ssl_certificate $dir/cert.pem;
    ssl_certificate_key $dir/key.pem;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
CONF
nginx -p "$dir/proxy" -c "$dir/proxy/nginx.conf" -g 'daemon off;' &
pids+=($!)

# lb's ingress with one route (localhost) and, for RSS, one with 1,000.
routes() { # routes COUNT FILE
  python3 - "$1" "$2" "$up" "$dir/cert.pem" "$dir/key.pem" <<'PY'
import json, sys
n, out, up, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
routes = [{"hosts": ["localhost"], "project": "P", "service": "S0", "name": "bench/web",
           "upstreams": [{"replica": "R0", "address": f"127.0.0.1:{up}"}]}]
certs = [{"domains": ["localhost"], "chain_pem": open(cert).read(), "key_pem": open(key).read(),
          "not_after": 4000000000}]
for i in range(1, n):
    routes.append({"hosts": [f"svc{i}.apps.test", f"www.svc{i}.example.com"], "project": f"P{i}",
                   "service": f"S{i}", "name": f"bench/svc{i}",
                   "upstreams": [{"replica": f"R{i}a", "address": f"127.0.0.1:{up}"},
                                 {"replica": f"R{i}b", "address": f"127.0.0.1:{up}"}]})
    certs.append({"domains": [f"svc{i}.apps.test"], "chain_pem": open(cert).read(),
                  "key_pem": open(key).read(), "not_after": 4000000000})
json.dump({"revision": 1, "routes": routes, "certificates": certs}, open(out, "w"))
PY
}
routes 1 "$dir/routes.json"
lb=$(free_port); lbs=$(free_port)
"$serve" --routes "$dir/routes.json" --http "127.0.0.1:$lb" --https "127.0.0.1:$lbs" >"$dir/lb.log" 2>&1 &
pids+=($!)
lb_pid=$!

wait_http "http://127.0.0.1:$up/"
wait_http "http://127.0.0.1:$px/"
wait_http "http://localhost:$lb/"
curl -sf --cacert "$dir/cert.pem" "https://localhost:$pxs/" >/dev/null
curl -sf --cacert "$dir/cert.pem" "https://localhost:$lbs/" >/dev/null

cat >"$dir/rate.lua" <<'LUA'
function delay() return 16 end
LUA
cat >"$dir/close.lua" <<'LUA'
wrk.headers["Connection"] = "close"
LUA

# run NAME URL [wrk args...]: prints "NAME req/s p99_ms" and stores both.
declare -A rps p99
run() {
  local name="$1" url="$2"; shift 2
  local out
  out=$(wrk -t2 -c32 -d"${seconds}s" --latency "$@" "$url")
  rps[$name]=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
  p99[$name]=$(awk '$1 == "99%" { v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v }' <<<"$out")
  local errors
  errors=$(awk '/Non-2xx|Socket errors/' <<<"$out")
  printf '%-28s %10s req/s   p99 %8s ms  %s\n' "$name" "${rps[$name]}" "${p99[$name]}" "$errors"
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
added() { python3 -c "print(f'{$1 - $2:+.3f}')"; }

echo "== ${seconds}s per run, wrk -t2 -c32, $(nproc) cores, upstream nginx on :$up"
run "direct upstream" "http://localhost:$up/"
run "nginx http" "http://localhost:$px/"
run "lb http" "http://localhost:$lb/"
run "nginx https (h1.1)" "https://localhost:$pxs/"
run "lb https (h1.1)" "https://localhost:$lbs/"
echo "-- fixed rate (~2,000 req/s)"
run "rate direct" "http://localhost:$up/" -s "$dir/rate.lua"
run "rate nginx http" "http://localhost:$px/" -s "$dir/rate.lua"
run "rate lb http" "http://localhost:$lb/" -s "$dir/rate.lua"
run "rate nginx https" "https://localhost:$pxs/" -s "$dir/rate.lua"
run "rate lb https" "https://localhost:$lbs/" -s "$dir/rate.lua"
echo "-- a new TLS connection per request (handshakes/s)"
run "handshakes nginx" "https://localhost:$pxs/" -s "$dir/close.lua"
run "handshakes lb" "https://localhost:$lbs/" -s "$dir/close.lua"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
rss1=$(rss_kb "$lb_pid")
kill "$lb_pid"; wait "$lb_pid" 2>/dev/null || true

routes 1000 "$dir/routes1000.json"
lb2=$(free_port); lbs2=$(free_port)
"$serve" --routes "$dir/routes1000.json" --http "127.0.0.1:$lb2" --https "127.0.0.1:$lbs2" >"$dir/lb2.log" 2>&1 &
pids+=($!)
lb2_pid=$!
wait_http "http://localhost:$lb2/"
for i in $(seq 1 50); do
  curl -sf -H "Host: svc$((i * 19)).apps.test" "http://127.0.0.1:$lb2/" -o /dev/null
  curl -sf --cacert "$dir/cert.pem" --resolve "localhost:$lbs2:127.0.0.1" "https://localhost:$lbs2/" -o /dev/null
done
rss1000=$(rss_kb "$lb2_pid")

echo
echo "== summary"
echo "plain: lb/nginx throughput $(ratio "${rps[lb http]}" "${rps[nginx http]}")x   p99 lb ${p99[lb http]} ms, nginx ${p99[nginx http]} ms"
echo "TLS:   lb/nginx throughput $(ratio "${rps[lb https (h1.1)]}" "${rps[nginx https (h1.1)]}")x   p99 lb ${p99[lb https (h1.1)]} ms, nginx ${p99[nginx https (h1.1)]} ms"
echo "at ~2,000 req/s: p99 added over direct: lb $(added "${p99[rate lb http]}" "${p99[rate direct]}") ms, nginx $(added "${p99[rate nginx http]}" "${p99[rate direct]}") ms (plain); TLS p99 lb ${p99[rate lb https]} ms, nginx ${p99[rate nginx https]} ms (rates: lb ${rps[rate lb http]}, nginx ${rps[rate nginx http]}, direct ${rps[rate direct]} req/s)"
echo "new TLS handshakes/s: lb ${rps[handshakes lb]}, nginx ${rps[handshakes nginx]} ($(ratio "${rps[handshakes lb]}" "${rps[handshakes nginx]}")x)"
echo "ingress RSS: ${rss1} KiB after the runs with 1 route; ${rss1000} KiB with 1,000 routes and certificates (fresh, 100 requests)"
