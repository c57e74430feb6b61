#!/usr/bin/env bash
# The embedded store's file size under steady churn: RATE updates a second to
# KEYS keys for SECONDS, the file size printed every EVERY seconds.
# Usage: contrib/bench/store-growth.sh [RATE] [SECONDS] [KEYS] [EVERY]
#   (defaults: 50 updates/s for 3600 s to 100 keys, a line a minute;
#    the goal is a file under 64 MiB for the whole hour)
set -euo pipefail
cd "$(dirname "$0")/../.."
rate="${1:-50}"
seconds="${2:-3600}"
keys="${3:-100}"
every="${4:-60}"
. contrib/bench/lib.sh
bench=$(bench_binary)
"$bench" store-growth --rate "$rate" --seconds "$seconds" --keys "$keys" --every "$every"
