#!/usr/bin/env bash
# Replicas started and deleted at once through lb (a real `lb node` process)
# beside raw docker create + start and docker stop + rm, all at once, in the
# same run; and the node's RSS. Usage: contrib/bench/node.sh [REPLICAS]
set -euo pipefail
cd "$(dirname "$0")/../.."
./contrib/deps.sh
. contrib/bench/lib.sh
need_commands busybox:busybox-static
bench=$(bench_binary)
"$bench" node --replicas "${1:-50}" --lb "$(lb_binary)"
