#!/usr/bin/env bash
# Installs the Debian packages lb needs when they are missing:
#   protoc  (protobuf-compiler)  to build etcd-client
#   etcd    (etcd-server)        for tests against a real etcd   [--test]
#   etcdctl (etcd-client)        for tests that read etcd by hand [--test]
#   curl                         for the API fuzzing script      [--test]
#   busybox (busybox-static)     test images built FROM scratch  [--test]
#   skopeo                       a second registry client in tests [--test]
#   git                          builds clone with it; tests serve repositories
set -euo pipefail
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v git >/dev/null || need+=(git)
if [ "${1:-}" = "--test" ]; then
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v etcdctl >/dev/null || need+=(etcd-client)
  command -v curl >/dev/null || need+=(curl)
  dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
  command -v skopeo >/dev/null || need+=(skopeo)
fi
command -v cargo >/dev/null || { echo "lb needs a Rust toolchain (cargo): see https://rustup.rs" >&2; exit 1; }
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
