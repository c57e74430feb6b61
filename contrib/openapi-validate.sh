#!/usr/bin/env bash
# Validates the API's OpenAPI document (the one /api/v1/openapi.json serves,
# printed by `cargo run -p lb-api --example openapi`) against the OpenAPI 3
# specification with openapi-spec-validator from PyPI. The validator lives in
# its own venv under ~/.cache (installed once; later runs only check it).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LB_OPENAPI_VENV:-$HOME/.cache/lb-venv-openapi}"
if [ ! -x "$venv/bin/openapi-spec-validator" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  }
  "$venv/bin/pip" install -q openapi-spec-validator
fi
doc=$(mktemp --suffix=.json)
trap 'rm -f "$doc"' EXIT
cargo run --quiet -p lb-api --example openapi >"$doc"
"$venv/bin/openapi-spec-validator" "$doc"
