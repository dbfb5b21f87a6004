#!/bin/sh
# GHC's runtime on libosmem: installs Debian's ghc (and what the static
# Haskell link and the NUMA VM need) when apt-get is there, builds libosmem
# with --enable-ghc in build-ghc/, runs the Haskell checks
# (tests/ghc/run.sh, through make check) and then the two-node NUMA VM with
# a threaded Haskell program (+RTS -N2 --numa) in it. Prints each check and
# a closing "ghc: N passed, N failed".
set -eu
cd "$(dirname "$0")/.."
src=$(pwd)

pkgs="ghc libnuma-dev libgmp-dev libffi-dev qemu-system-x86 cpio"
command -v autoreconf >/dev/null 2>&1 || pkgs="$pkgs autoconf automake libtool pkg-config"
# shellcheck disable=SC2086 # a package list
sh tools/apt-install.sh $pkgs
command -v ghc >/dev/null 2>&1 || { echo "ghc: not found"; exit 1; }

[ -x configure ] || autoreconf -fi
mkdir -p build-ghc
cd build-ghc
"$src/configure" --enable-ghc --enable-werror >configure.log 2>&1 ||
  { tail -n 30 configure.log; exit 1; }
make -j"$(nproc 2>/dev/null || echo 2)" >make.log 2>&1 || { tail -n 30 make.log; exit 1; }

status=0
make check TESTS=tests/ghc/run.sh >check.log 2>&1 || status=1
cat tests/ghc/run.log 2>/dev/null || cat check.log

# The kernel the main build's VMs used, when there is one (else fetched).
kernel=$(ls "$src"/build/tests/numa-vm/kernel-cache/boot/vmlinuz-* 2>/dev/null | tail -n 1 || true)
make check-numa OSMEM_VM_TOPOLOGIES=two OSMEM_VM_GHC=required \
  ${kernel:+OSMEM_VM_KERNEL="$kernel"} >numa-vm.log 2>&1 || status=1
grep -E '(PASS|FAIL|PAGES) ghc\.|^numa-vm:' numa-vm.log || tail -n 30 numa-vm.log

count() { n=$(grep -c "$1" "$2" 2>/dev/null) || true; echo "${n:-0}"; }
passed=$(( $(count '^PASS: ' tests/ghc/run.log) + $(count '^ *PASS ghc\.' numa-vm.log) ))
failed=$(( $(count '^FAIL: ' tests/ghc/run.log) + $(count '^ *FAIL ghc\.' numa-vm.log) ))
[ "$status" = 0 ] || [ "$failed" -gt 0 ] || failed=1
echo "ghc: $passed passed, $failed failed"
exit "$status"
