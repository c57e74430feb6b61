#!/usr/bin/env bash
# Builds lb and lbc (release, one cargo invocation), installs both, then
# starts `lb up` with its data in ./lb-data. Extra arguments go to `lb up`
# (see `lb up --help`).
#
#   --install-only  (first argument) install and stop there, e.g. to run
#                   lb from systemd (contrib/systemd/).
#   LB_BINDIR       where to install (default: /usr/local/bin as root,
#                   else ~/.local/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
start=1
if [ "${1:-}" = "--install-only" ]; then
  start=0
  shift
fi
./contrib/deps.sh
cargo build --release -p lb -p lbc
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [ "$(id -u)" -eq 0 ]; then
  bindir="${LB_BINDIR:-/usr/local/bin}"
else
  bindir="${LB_BINDIR:-$HOME/.local/bin}"
fi
mkdir -p "$bindir"
install -m 0755 "$target/release/lb" "$target/release/lbc" "$bindir/"
echo "installed lb and lbc in $bindir" >&2
case ":$PATH:" in
  *":$bindir:"*) ;;
  *) echo "note: $bindir is not on PATH" >&2 ;;
esac
[ "$start" -eq 1 ] || exit 0
exec "$bindir/lb" up "$@"
