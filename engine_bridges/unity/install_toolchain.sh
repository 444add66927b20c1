#!/usr/bin/env bash
# Installs what run_tests.sh needs: mono's C# compiler (C# 7.2) and NUnit 2.6 (Debian packages).
# Idempotent: does nothing when the tools are already there. Needs root (or sudo) for apt-get.
set -euo pipefail
nunit_fw=/usr/lib/cli/nunit.framework-2.6.3/nunit.framework.dll
if command -v mcs >/dev/null && command -v mono >/dev/null && command -v nunit-console >/dev/null && [ -f "$nunit_fw" ]; then
  echo "unity toolchain: already installed ($(mcs --version))"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "unity toolchain: need root or sudo to apt-get install" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get -o DPkg::Lock::Timeout=600 update -q
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q \
  mono-mcs mono-runtime nunit-console libnunit-cil-dev
echo "unity toolchain: installed ($(mcs --version))"
