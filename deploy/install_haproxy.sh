#!/usr/bin/env bash
# Installs HAProxy (Debian package `haproxy`, 2.6 on bookworm) for tests/test_scaleout.py.
# Idempotent: does nothing when haproxy is already there. Needs root (or sudo) for apt-get.
# The package's own service is not needed: the test runs its own haproxy in the foreground.
set -euo pipefail
haproxy_bin() { command -v haproxy || echo /usr/sbin/haproxy; }  # /usr/sbin is not on every PATH
if [ -x "$(haproxy_bin)" ]; then
  echo "haproxy: already installed ($("$(haproxy_bin)" -v | head -1))"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "haproxy: need root or sudo to apt-get install" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get -o DPkg::Lock::Timeout=600 update -q
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q haproxy
echo "haproxy: installed ($("$(haproxy_bin)" -v | head -1))"
