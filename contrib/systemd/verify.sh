#!/usr/bin/env bash
# Checks lb's systemd units with `systemd-analyze verify`, each unit's
# `ExecStart=lb ...` pointed at the lb binary this checkout built (the units
# find `lb` on the PATH of a machine it is installed on; verify needs a file).
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
lb="$(realpath "${1:-$target/debug/lb}")"
[ -x "$lb" ] || { echo "verify.sh: no lb binary at $lb (cargo build -p lb)" >&2; exit 2; }
command -v systemd-analyze >/dev/null || { echo "verify.sh: systemd-analyze not found (apt-get install systemd)" >&2; exit 2; }
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
for unit in contrib/systemd/*.service; do
    sed "s|^ExecStart=lb |ExecStart=$lb |" "$unit" > "$dir/$(basename "$unit")"
done
systemd-analyze verify "$dir"/*.service
echo "verify.sh: $(ls "$dir" | wc -l) units verified"
