#!/bin/sh
# Builds libosmem and its whole test suite for another architecture, in its
# own directory, and runs every test there:
#   sh tools/check-cross.sh i386          32-bit x86 (i686), run natively
#   sh tools/check-cross.sh aarch64       64-bit Arm under qemu-user
#   sh tools/check-cross.sh aarch64-64k   the same with 64 KiB pages
# Build: build-TARGET/, out of tree, --host, --enable-werror. The suites are
# built on tests/minicr.h (--enable-minicr-tests), each test in a process of
# its own: Debian's i386 Criterion would remove the amd64 one the native
# suite needs. Compilers: Debian's gcc/g++ cross packages (not gcc-multilib,
# which conflicts with gcc-aarch64-linux-gnu). libnuma for the target: its
# two .deb files unpacked into build-cross-deps/ARCH, not installed, so the
# machine's packages stay as they were (a multiarch libnuma-dev:ARCH drags
# in libc6-dev:ARCH, whose version must match the host's exactly). aarch64
# runs under qemu-aarch64-static, named explicitly (binfmt_misc may not be
# mounted), with QEMU_LD_PREFIX for the cross C library.
# Prints the failures' logs, the skips with their reasons, the time taken
# and, last, "N passed, N failed" (every test of every suite counted).
set -eu
target=${1:-}
case $target in
  i386) triplet=i686-linux-gnu arch=i386 multiarch=i386-linux-gnu ;;
  aarch64 | aarch64-64k)
    triplet=aarch64-linux-gnu arch=arm64 multiarch=aarch64-linux-gnu ;;
  *) echo "usage: sh tools/check-cross.sh i386|aarch64|aarch64-64k" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
src=$(pwd)
start=$(date +%s)
jobs=$(nproc 2>/dev/null || echo 2)
if [ "$(id -u)" = 0 ]; then as_root=; else as_root=sudo; fi

# ------------------------------------------------------------- toolchain
need="gcc-$triplet g++-$triplet" tools="$triplet-gcc $triplet-g++"
if [ "$arch" = arm64 ]; then
  need="$need qemu-user-static" tools="$tools qemu-aarch64-static"
fi
for tool in $tools; do
  command -v "$tool" >/dev/null 2>&1 && continue
  # shellcheck disable=SC2086 # a list of packages
  sh tools/apt-install.sh $need
  break
done

# libnuma (headers, libnuma.so, libnuma.so.1) for the target. apt can only
# download ARCH's packages while ARCH is a dpkg architecture: added for the
# download and removed again if it was not there before (a foreign
# architecture's index that fails to download makes every later
# `apt-get update` fail).
deps=$src/build-cross-deps/$arch
fetch_numa() {
  debs=$src/build-cross-deps/debs-$arch
  rm -rf "$debs" && mkdir -p "$debs"
  added=
  if ! dpkg --print-foreign-architectures | grep -qx "$arch" &&
     [ "$(dpkg --print-architecture)" != "$arch" ]; then
    $as_root dpkg --add-architecture "$arch"; added=yes
  fi
  rc=0
  (cd "$debs" && apt-get download "libnuma1:$arch" "libnuma-dev:$arch") \
    >"$debs/download.log" 2>&1 || {
    $as_root apt-get update -q >>"$debs/download.log" 2>&1 || true
    (cd "$debs" && apt-get download "libnuma1:$arch" "libnuma-dev:$arch") \
      >>"$debs/download.log" 2>&1 || rc=$?
  }
  [ -z "$added" ] || $as_root dpkg --remove-architecture "$arch"
  [ "$rc" = 0 ] || { cat "$debs/download.log"; exit 1; }
  rm -rf "$deps"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$deps"; done
}
[ -f "$deps/usr/lib/$multiarch/libnuma.so" ] || fetch_numa
numalib=$deps/usr/lib/$multiarch

# ------------------------------------------------------------ build, run
[ -x configure ] || {
  sh tools/apt-install.sh autoconf automake libtool pkg-config make
  autoreconf -fi
}
dir=build-$target
mkdir -p "$dir"
cd "$dir"
ldflags="-L$numalib -Wl,-rpath,$numalib"
runner=
case $target in
  # Run natively, with the cross C library: its own loader and path.
  i386)
    ldflags="$ldflags -Wl,--dynamic-linker=/usr/$triplet/lib/ld-linux.so.2"
    ldflags="$ldflags -Wl,-rpath,/usr/$triplet/lib" ;;
  aarch64) runner=qemu-aarch64-static ;;
  aarch64-64k) runner="qemu-aarch64-static -p 65536" ;;
esac
QEMU_LD_PREFIX=/usr/$triplet
export QEMU_LD_PREFIX
# Under qemu-user the fuzz replay runs 100 random programs, not 1,000:
# qemu 7.2 puts every mapping at a new address and never frees its page
# tables for unmapped ranges, so 1,000 programs grow it to 21 GB (96 s).
[ -z "$runner" ] || { OSMEM_FUZZ_ROUNDS=100; export OSMEM_FUZZ_ROUNDS; }
"$src/configure" --build="$(sh "$src/build-aux/config.guess")" \
  --host="$triplet" --enable-werror --enable-minicr-tests \
  CPPFLAGS="-I$deps/usr/include" LDFLAGS="$ldflags" \
  PKG_CONFIG_LIBDIR="$numalib/pkgconfig" >configure.log 2>&1 ||
  { tail -n 30 configure.log; exit 1; }
# Everything `make check` builds, nothing run yet; a compiler warning or
# note counts (a psABI note is not a warning to -Werror, but says that the
# layout of a structure differs between compiler versions).
make -j"$jobs" check TESTS= >build.log 2>&1 || { tail -n 40 build.log; exit 1; }
if grep -E 'warning:|note:' build.log; then
  echo "check-cross: the $target build printed warnings or notes (above)"; exit 1
fi
echo "== $target: built in $(( $(date +%s) - start )) s; what the library sees:"
# shellcheck disable=SC2086 # the runner is a command and its options
./libtool --mode=execute $runner tools/osmem-info 2>&1 | sed -n '1,9p'
rm -f tests/*.log tests/*.trs test-suite.log
# Bounded: a hung test stops the run, which then fails.
check_rc=0
timeout 900 make -j"$jobs" check LOG_COMPILER="$runner" >check.log 2>&1 ||
  check_rc=$?

# ----------------------------------------------------------------- report
# A suite's log has a line per test ([PASS], [FAIL], [CRASH], [SKIP] with
# the reason) and Criterion's Synthesis line; any other test counts once,
# as its .trs says.
passed=0 failed=0
for trs in tests/*.trs; do
  log=${trs%.trs}.log name=${trs%.trs}
  result=$(sed -n 's/^:test-result: //p' "$trs")
  if grep -q '^\[====\] Synthesis' "$log"; then
    p=$(grep -c '^\[PASS\]' "$log" || true)
    f=$(grep -c '^\[FAIL\]\|^\[CRASH\]' "$log" || true)
    grep '^\[SKIP\]' "$log" | sed "s|^|$name: |" || true
    [ "$result" = PASS ] || [ "$result" = SKIP ] || [ "$f" -gt 0 ] || f=1
  else
    p=0 f=0
    case $result in
      PASS) p=1 ;;
      SKIP) echo "[SKIP] $name: $(grep -m 1 -i 'skip' "$log" || echo '(no reason given)')" ;;
      *) f=1 ;;
    esac
  fi
  [ "$f" = 0 ] || { echo "== FAILED in $name:"; grep -v '^\[PASS\]' "$log" | tail -n 60; }
  passed=$((passed + p)) failed=$((failed + f))
done
# make check failed, yet no test did (timed out, or a test left no result).
if [ "$check_rc" != 0 ] && [ "$failed" = 0 ]; then
  echo "== make check failed (status $check_rc; 124: timed out):"
  tail -n 40 check.log
  failed=1
fi
echo "== $target: $(( $(date +%s) - start )) s in all"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
