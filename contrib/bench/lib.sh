# Shared by the benchmark scripts (sourced, not run): the binaries, free
# ports, a stock etcd, and cleanup of everything a script started.
#
# After sourcing: $dir is a temp dir and every pid pushed to `pids` is killed
# on exit, after which a function `on_exit`, if the script defines one, runs.

target="${CARGO_TARGET_DIR:-target}"
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if declare -F on_exit >/dev/null; then on_exit; fi
  rm -rf "$dir"
}
trap cleanup EXIT

# Debian packages for commands the script needs: `need_commands cmd:package ...`.
need_commands() {
  local want=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || want+=("${pair#*:}")
  done
  [ ${#want[@]} -eq 0 ] && return
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${want[@]}" >/dev/null
}

# The path of a release `lb` (built here), or of $LB when set (e.g. a debug one).
lb_binary() {
  if [ -n "${LB:-}" ]; then
    echo "$LB"
  else
    cargo build --release --quiet --bin lb
    echo "$(cd "$target/release" && pwd)/lb"
  fi
}

# The path of a release `lb-bench`, built here.
bench_binary() {
  cargo build --release --quiet -p lb-bench --bin lb-bench
  echo "$(cd "$target/release" && pwd)/lb-bench"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until `url` answers 2xx (up to TRIES tenths of a second, default 300).
wait_http() {
  local url="$1" tries="${2:-300}"
  for _ in $(seq "$tries"); do curl -sf "$url" >/dev/null && return; sleep 0.1; done
  echo "$url did not answer" >&2
  return 1
}

# Starts an etcd of one member with etcd's default limits (no flag beyond
# the addresses and data dir); sets etcd_port and etcd_pid.
start_etcd() {
  local client peer
  client=$(free_port); peer=$(free_port)
  etcd --name bench --data-dir "$dir/etcd-$client" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench=http://127.0.0.1:$peer" >"$dir/etcd-$client.log" 2>&1 &
  pids+=($!)
  etcd_pid=$!
  etcd_port=$client
  wait_http "http://127.0.0.1:$client/health" 100
}
