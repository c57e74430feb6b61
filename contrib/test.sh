#!/usr/bin/env bash
# Runs every test of lb: unit tests, the store conformance suite on the
# embedded store and on a real etcd, and end-to-end tests of the binaries.
# Extra arguments go to the test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
./contrib/deps.sh --test
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
