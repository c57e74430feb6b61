#!/usr/bin/env bash
# Starts lb on this machine: builds it (release) and runs `lb up`.
# Extra arguments go to `lb up` (see `lb up --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
./contrib/deps.sh
exec cargo run --release --quiet --bin lb -- up "$@"
