#!/usr/bin/env bash
# Fuzzes the REST API from its own OpenAPI document with schemathesis (PyPI):
# starts `lb up` on a temp data dir and a free port, signs a user up, makes a
# project "demo" with a service "web", then lets schemathesis generate
# requests (fixed seed) and fail on any 5xx or any answer that breaks the
# schema. schemathesis lives in a venv under ~/.cache/lb-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LB_VENV:-$HOME/.cache/lb-venv}"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  }
  "$venv/bin/pip" install -q schemathesis
fi
cargo build --quiet --bin lb
target="${CARGO_TARGET_DIR:-target}"
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LB_ADMIN_PASSWORD=fuzz-admin-password "$target/debug/lb" up --data-dir "$dir/data" --listen "127.0.0.1:$port" --registry-listen 127.0.0.1:0 >"$dir/lb.log" 2>&1 &
lb_pid=$!
trap 'kill $lb_pid 2>/dev/null; wait $lb_pid 2>/dev/null; rm -rf "$dir"' EXIT
api="http://127.0.0.1:$port/api/v1"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
curl -sf -XPOST "$api/auth/signup" -d '{"username":"fuzz","password":"fuzz-password"}' >/dev/null
token=$(curl -sf -XPOST "$api/auth/login" -d '{"username":"fuzz","password":"fuzz-password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
curl -sf -XPOST "$api/projects" -H "Authorization: Bearer $token" -d '{"name":"demo"}' >/dev/null
curl -sf -XPOST "$api/projects/demo/services" -H "Authorization: Bearer $token" -d '{"name":"web","image":"busybox"}' >/dev/null
cat >"$dir/schemathesis.toml" <<'TOML'
[parameters]
"path.p" = "demo"
"path.s" = "web"
TOML
"$venv/bin/schemathesis" --config-file "$dir/schemathesis.toml" run "$api/openapi.json" \
  -H "Authorization: Bearer $token" \
  --checks not_a_server_error,response_schema_conformance \
  --exclude-path /api/v1/events \
  -n "${LB_FUZZ_EXAMPLES:-50}" --seed 1 --generation-database none
