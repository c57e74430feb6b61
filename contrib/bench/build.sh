#!/usr/bin/env bash
# Builds through lb beside the same work done by hand, in one run:
#  1. first build: POST build -> the new replicas answering, beside bare
#     `docker build` + `docker push` (to Docker's own registry server) +
#     `docker run` of the same repository (target: lb <= 1.2x);
#  2. a rebuild after a code-only change, as a share of the first build
#     (target: <= 30%);
#  3. push + pull of a 200 MB image: lb's registry beside Docker's registry
#     server, Debian's `docker-registry` (target: >= 1.0x).
# Usage: contrib/bench/build.sh [IMAGE_MB]   (LB=path/to/lb to skip the build)
set -euo pipefail
cd "$(dirname "$0")/../.."
./contrib/deps.sh --test
. contrib/bench/lib.sh
need_commands docker-registry:docker-registry
# Debian starts a registry service on :5000 when it installs one; lb's
# registry and ours get their own ports here.
LB=$(lb_binary)
mb="${1:-200}"
work="$dir"
on_exit() {
  docker ps -aq --filter "label=lb.bench=1" | xargs -r docker rm -f >/dev/null 2>&1 || true
  if [ -n "${node:-}" ]; then
    docker ps -aq --filter "label=lb.node=$node" | xargs -r docker rm -f >/dev/null 2>&1 || true
  fi
}
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
export DOCKER_CONFIG="$work/docker"
mkdir -p "$DOCKER_CONFIG"

# A base image from Debian's busybox-static (nothing can be pulled here).
mkdir -p "$work/base"
cp /bin/busybox "$work/base/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\n' >"$work/base/Dockerfile"
docker build -q -t lb-bench-busybox:1 "$work/base" >/dev/null

# The sample app: a dependency layer (20 MB), an install step, the code.
app="$work/app"
mkdir -p "$app/deps" "$app/www"
head -c $((20 << 20)) /dev/urandom >"$app/deps/vendor.bin"
cat >"$app/Dockerfile" <<'EOF'
FROM lb-bench-busybox:1
COPY nonce /nonce
COPY deps/ /deps/
RUN ["/bin/busybox", "sleep", "2"]
COPY www/ /www/
CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
EOF
echo "version one" >"$app/www/index.html"

# Docker's own registry server, on a free port.
reg_port=$(free_port)
cat >"$work/registry.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry-data
http:
  addr: 127.0.0.1:$reg_port
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)

# lb up.
api_port=$(free_port)
lb_reg_port=$(free_port)
LB_ADMIN_PASSWORD=bench-admin-password "$LB" up --data-dir "$work/lb" \
  --listen "127.0.0.1:$api_port" --registry-listen "127.0.0.1:$lb_reg_port" \
  >"$work/lb.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$api_port/api/v1"
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$api_port/readyz" >/dev/null && break; sleep 0.1; done
for _ in $(seq 100); do curl -s "http://127.0.0.1:$reg_port/v2/" >/dev/null && break; sleep 0.1; done
curl -sf -XPOST "$api/auth/signup" -d '{"username":"bench","password":"bench-password"}' >/dev/null
token=$(curl -sf -XPOST "$api/auth/login" -d '{"username":"bench","password":"bench-password"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
H="Authorization: Bearer $token"
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# 1a. By hand: build, push to Docker's registry, run, first answer.
echo "hand-$RANDOM-$(date +%s%N)" >"$app/nonce"
ref="127.0.0.1:$reg_port/bench/app:1"
host_port=$(free_port)
t0=$(now)
docker build -q -t "$ref" "$app" >/dev/null
docker push -q "$ref" >/dev/null
docker run -d --label lb.bench=1 -p "127.0.0.1:$host_port:8080" "$ref" >/dev/null
until curl -sf "http://127.0.0.1:$host_port/index.html" >/dev/null; do sleep 0.05; done
t1=$(now)
hand=$(elapsed "$t0" "$t1")

# 1b. Through lb: a git repository over dumb HTTP, POST build, replicas up.
echo "lb-$RANDOM-$(date +%s%N)" >"$app/nonce"
git -C "$app" init -q -b main
git -C "$app" -c user.name=b -c user.email=b@example.test add -A
git -C "$app" -c user.name=b -c user.email=b@example.test commit -q -m one
git clone -q --bare "$app" "$work/served/app.git"
git -C "$work/served/app.git" update-server-info
git_port=$(free_port)
(cd "$work/served" && exec python3 -m http.server "$git_port" --bind 127.0.0.1 >/dev/null 2>&1) &
pids+=($!)
sleep 0.5
curl -sf -XPOST "$api/projects" -H "$H" -d '{"name":"bench"}' >/dev/null
curl -sf -XPOST "$api/projects/bench/services" -H "$H" -d "{\"name\":\"app\",\"replicas\":1,\"memory\":16,
  \"ports\":[{\"container\":8080}],\"source\":{\"url\":\"http://127.0.0.1:$git_port/app.git\",\"branch\":\"main\"}}" >/dev/null
# Waits for build N to succeed and its image to answer on a replica.
deployed() {
  local n=$1 want=$2
  while :; do
    status=$(curl -sf "$api/projects/bench/services/app/builds/$n" -H "$H" | json 'd["status"]')
    case "$status" in failed|canceled) echo "build $n $status" >&2; exit 1 ;; succeeded) break ;; esac
    sleep 0.05
  done
  digest=$(curl -sf "$api/projects/bench/services/app/builds/$n" -H "$H" | json 'd["digest"]')
  while :; do
    port=$(curl -sf "$api/projects/bench/services/app/replicas" -H "$H" | json "next((r['ports'][0]['host'] for r in d['items'] if r['state']=='running' and r['image'].endswith('$digest') and r['ports'][0]['host']), '')")
    if [ -n "$port" ] && [ "$(curl -sf "http://127.0.0.1:$port/index.html" || true)" = "$want" ]; then break; fi
    sleep 0.05
  done
}
t0=$(now)
curl -sf -XPOST "$api/projects/bench/services/app/builds" -H "$H" >/dev/null
deployed 1 "version one"
t1=$(now)
first=$(elapsed "$t0" "$t1")
node=$(curl -sf "$api/projects/bench/services/app/replicas" -H "$H" | json 'd["items"][0]["node"]')

# 2. A code-only change.
echo "version two" >"$app/www/index.html"
git -C "$app" -c user.name=b -c user.email=b@example.test commit -qam two
git -C "$app" push -q "$work/served/app.git" main
git -C "$work/served/app.git" update-server-info
t0=$(now)
curl -sf -XPOST "$api/projects/bench/services/app/builds" -H "$H" >/dev/null
deployed 2 "version two"
t1=$(now)
rebuild=$(elapsed "$t0" "$t1")

# 3. Push and pull of a big image: Docker's registry, then lb's.
mkdir -p "$work/big"
head -c $((mb << 20)) /dev/urandom >"$work/big/blob"
printf 'FROM lb-bench-busybox:1\nCOPY blob /blob\n' >"$work/big/Dockerfile"
docker build -q -t lb-bench-big:1 "$work/big" >/dev/null
echo bench-password | docker login -u bench --password-stdin "127.0.0.1:$lb_reg_port" >/dev/null 2>&1
pushpull() {
  local ref=$1
  docker tag lb-bench-big:1 "$ref"
  local a b c
  a=$(now); docker push -q "$ref" >/dev/null; b=$(now)
  docker rmi -f "$ref" >/dev/null
  # Pulling needs the layer gone locally: drop the source tag too.
  docker rmi -f lb-bench-big:1 >/dev/null
  b2=$(now); docker pull -q "$ref" >/dev/null; c=$(now)
  docker tag "$ref" lb-bench-big:1
  docker rmi -f "$ref" >/dev/null
  echo "$(elapsed "$a" "$b") $(elapsed "$b2" "$c")"
}
read -r d_push d_pull < <(pushpull "127.0.0.1:$reg_port/bench/big:1")
read -r l_push l_pull < <(pushpull "127.0.0.1:$lb_reg_port/bench/app:big")

python3 - "$hand" "$first" "$rebuild" "$mb" "$d_push" "$d_pull" "$l_push" "$l_pull" <<'EOF'
import sys
hand, first, rebuild, mb, dp, dl, lp, ll = map(float, sys.argv[1:])
print(f"first build to running: lb {first:.2f} s, by hand (docker build+push+run) {hand:.2f} s, ratio {first/hand:.2f} (target <= 1.2)")
print(f"rebuild after a code-only change: {rebuild:.2f} s = {100*rebuild/first:.0f}% of the first (target <= 30%)")
print(f"push {mb:.0f} MB: lb {mb/lp:.1f} MB/s, docker-registry {mb/dp:.1f} MB/s, ratio {dp/lp:.2f} (target >= 1.0)")
print(f"pull {mb:.0f} MB: lb {mb/ll:.1f} MB/s, docker-registry {mb/dl:.1f} MB/s, ratio {dl/ll:.2f} (target >= 1.0)")
EOF
