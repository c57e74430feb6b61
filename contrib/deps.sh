#!/usr/bin/env bash
# Installs the Debian packages lb needs when they are missing:
#   protoc  (protobuf-compiler)  to build etcd-client
#   etcd    (etcd-server)        for tests against a real etcd   [--test]
#   etcdctl (etcd-client)        for tests that read etcd by hand [--test]
#   curl                         for the API fuzzing script      [--test]
#   busybox (busybox-static)     test images built FROM scratch  [--test]
#   bash-static                  /bin/bash-static, bash in a test image (bash scripts) [--test]
#   python3.11-minimal, libpython3.11-stdlib  python3 copied into a test image (python scripts) [--test]
#   skopeo                       a second registry client in tests [--test]
#   git                          builds clone with it; tests serve repositories
#   libjs-term.js, libjs-chart.js  the web UI's console and charts (served from
#                                /usr/share/javascript; Debian's libjs-xterm 3.8 ships no
#                                browser bundle, only a stub that calls require())
#   chromium, chromium-driver    the web UI's end-to-end tests   [--test]
#   pebble                       a real ACME server (and pebble-challtestsrv, its DNS) [--test]
#   openssl                      certificates made in tests       [--test]
#   nginx, wrk                   the ingress benchmark's baseline and load  [--test]
#   iptables, iproute2           network namespaces and the node's firewall [--test]
#   nodejs, npm                  a node base image for the static-site build test [--test]
#   systemd-analyze (systemd)    CI checks the systemd units (contrib/systemd/verify.sh) [--test]
set -euo pipefail
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v git >/dev/null || need+=(git)
dpkg -s libjs-term.js >/dev/null 2>&1 || need+=(libjs-term.js)
dpkg -s libjs-chart.js >/dev/null 2>&1 || need+=(libjs-chart.js)
if [ "${1:-}" = "--test" ]; then
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v etcdctl >/dev/null || need+=(etcd-client)
  command -v curl >/dev/null || need+=(curl)
  dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
  [ -x /bin/bash-static ] || need+=(bash-static)
  [ -x /usr/bin/python3.11 ] || need+=(python3.11-minimal)
  [ -d /usr/lib/python3.11/encodings ] || need+=(libpython3.11-stdlib)
  command -v skopeo >/dev/null || need+=(skopeo)
  command -v chromium >/dev/null || need+=(chromium)
  command -v chromedriver >/dev/null || need+=(chromium-driver)
  command -v pebble >/dev/null || need+=(pebble)
  command -v openssl >/dev/null || need+=(openssl)
  command -v nginx >/dev/null || need+=(nginx)
  command -v wrk >/dev/null || need+=(wrk)
  command -v iptables >/dev/null || need+=(iptables)
  command -v ip >/dev/null || need+=(iproute2)
  command -v node >/dev/null || need+=(nodejs)
  command -v npm >/dev/null || need+=(npm)
  command -v systemd-analyze >/dev/null || need+=(systemd)
fi
command -v cargo >/dev/null || { echo "lb needs a Rust toolchain (cargo): see https://rustup.rs" >&2; exit 1; }
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
