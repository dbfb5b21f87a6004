#!/bin/sh
# Quick start on a fresh Debian or Ubuntu machine: installs what libosmem
# needs to build and test (with sudo unless run as root; mandoc lints the
# manual pages in make check, which skips that lint without it), builds it in build/
# with warnings as errors, and runs osmem-info. Then `make -C build check`.
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then as_root=; else as_root=sudo; fi
$as_root apt-get update -q
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
  --no-install-recommends \
  build-essential autoconf automake libtool pkg-config \
  libcriterion-dev libnuma-dev numactl \
  mandoc

[ -x configure ] || autoreconf -fi
mkdir -p build
cd build
../configure --enable-werror
make -j"$(nproc 2>/dev/null || echo 2)"
./tools/osmem-info
