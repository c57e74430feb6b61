#!/usr/bin/env bash
# Replicas started and deleted at once through lb (a real `lb node` process)
# beside raw docker create + start and docker stop + rm, all at once, in the
# same run; and the node's RSS. Usage: contrib/bench/node.sh [REPLICAS]
set -euo pipefail
cd "$(dirname "$0")/../.."
./contrib/deps.sh
command -v busybox >/dev/null || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo; $sudo apt-get install -y -qq busybox-static >/dev/null; }
cargo build --release --quiet -p lb-bench --bin lb-bench
cargo build --release --quiet --bin lb
target="${CARGO_TARGET_DIR:-target}"
"$target/release/lb-bench" node --replicas "${1:-50}" --lb "$target/release/lb"
