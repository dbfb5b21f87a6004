#!/bin/sh
# The NUMA checks that need more than one node, in qemu VMs: `make
# check-numa` runs this from a configured build directory (see README.md
# here). It finds or fetches a Debian kernel, builds numa-vm-init.c
# statically against the library of this build, packs it as the /init of an
# initramfs and boots each topology under qemu (TCG), then prints every
# check, the per-node page counts and the boot-to-power-off time.
#
# Exit 0: all checks passed; 1: a check failed or a VM did not finish;
# 77 (SKIP): no qemu, no kernel to be had, or a build that cannot run it.
#
# Environment (make sets the first six):
#   top_srcdir, top_builddir   source and build trees (default: from $0, .)
#   CC, CFLAGS                 the build's compiler and flags
#   NUMA_LIBS                  empty when the library was built without libnuma
#   OSMEM_BACKEND              posix or wasm
#   OSMEM_VM_KERNEL            a vmlinuz to boot instead of fetching one
#   OSMEM_VM_TOPOLOGIES        subset of "two sparse restricted" to boot
#   OSMEM_VM_TIMEOUT           seconds one VM may take (default 180)
#   OSMEM_VM_GHC               "required": fail if the GHC program cannot be
#                              built (else it is built when it can be)
#   OSMEM_GHC_LINK             flags that make libosmem-ghc win over GHC's
#                              own OS layer (default: as osmem-ghc.pc)
set -u

here=$(cd "$(dirname "$0")" && pwd)
top_srcdir=${top_srcdir:-$(cd "$here/../.." && pwd)}
top_builddir=${top_builddir:-$(pwd)}
CC=${CC:-cc}
CFLAGS=${CFLAGS:--O2}
OSMEM_BACKEND=${OSMEM_BACKEND:-posix}
topologies=${OSMEM_VM_TOPOLOGIES:-two sparse restricted}
vm_timeout=${OSMEM_VM_TIMEOUT:-180}

work=$top_builddir/tests/numa-vm/vm          # rebuilt every run
cache=$top_builddir/tests/numa-vm/kernel-cache

skip() { echo "SKIP: $*"; exit 77; }
die() { echo "FAIL: $*"; exit 1; }

# ------------------------------------------------------------ can we run?
[ "$OSMEM_BACKEND" = posix ] || skip "the $OSMEM_BACKEND backend has no NUMA to test"
[ "$(uname -m)" = x86_64 ] ||
  skip "the VM is x86_64 and its /init is built with this machine's compiler ($(uname -m))"
[ -n "${NUMA_LIBS-x}" ] || skip "the library was configured without libnuma"
command -v qemu-system-x86_64 >/dev/null 2>&1 ||
  skip "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
for tool in cpio gzip timeout; do
  command -v $tool >/dev/null 2>&1 || skip "$tool not found"
done
case $($CC -print-file-name=libnuma.a) in
  /*) ;;
  *) skip "no static libnuma.a for $CC (libnuma-dev ships it)" ;;
esac
case $($CC -print-file-name=libc.a) in
  /*) ;;
  *) skip "no static libc.a for $CC" ;;
esac

# ---------------------------------------------------------------- kernel
# OSMEM_VM_KERNEL, else the cache, else `apt-get download` of the kernel
# linux-image-amd64 points at (Debian's kernels have NUMA, the serial console
# and gzip initrds built in: no modules needed).
fetch_kernel() {
  command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 ||
    skip "no kernel: no apt-get/dpkg-deb to fetch one; set OSMEM_VM_KERNEL=/path/to/vmlinuz"
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *|\{0,1\}Depends: \(linux-image-[^ ]*-amd64\)$/\1/p' | head -n 1)
  [ -n "$pkg" ] || pkg=$(apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-amd64$' 2>/dev/null |
    awk '{print $1}' | sort -V | tail -n 1)
  [ -n "$pkg" ] ||
    skip "no kernel: apt knows no linux-image-*-amd64 package (run apt-get update, or set OSMEM_VM_KERNEL)"
  echo "fetching kernel: apt-get download $pkg"
  mkdir -p "$cache"
  rm -f "$cache"/*.deb
  (cd "$cache" && apt-get download "$pkg") >"$cache/download.log" 2>&1 ||
    skip "no kernel: 'apt-get download $pkg' failed: $(tail -n 1 "$cache/download.log")"
  deb=$(ls "$cache"/*.deb | head -n 1)
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$cache" --wildcards './boot/vmlinuz-*' ||
    skip "no kernel: no /boot/vmlinuz-* in $deb"
  rm -f "$deb"
}
kernel=${OSMEM_VM_KERNEL:-}
if [ -z "$kernel" ]; then
  kernel=$(ls "$cache"/boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$kernel" ]; then
    fetch_kernel
    kernel=$(ls "$cache"/boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
  fi
fi
[ -n "$kernel" ] && [ -r "$kernel" ] || skip "no kernel to boot (${kernel:-none found})"

# ------------------------------------------------------------- the /init
lib=$top_builddir/.libs/libosmem-internal.a
[ -f "$lib" ] || lib=$top_builddir/.libs/libosmem.a
[ -f "$lib" ] || die "no static library in $top_builddir/.libs: run make first"
rm -rf "$work"
mkdir -p "$work/root/dev" "$work/root/proc" "$work/root/sys"
# Warning-free is part of the test: compile with -Werror, then link (the
# linker's notes about libnuma.a and static glibc are not ours).
$CC -std=c11 -Wall -Wextra -Werror $CFLAGS -I"$top_srcdir/include" \
  -I"$top_builddir/include" -c -o "$work/numa-vm-init.o" \
  "$top_srcdir/tests/numa-vm/numa-vm-init.c" >"$work/build.log" 2>&1 ||
  { cat "$work/build.log"; die "numa-vm-init.c does not compile cleanly"; }
# --whole-archive: calls the test references weakly (not implemented yet in
# some trees) are found whenever the library defines them.
$CC -static -pthread $CFLAGS -o "$work/root/init" "$work/numa-vm-init.o" \
  -Wl,--whole-archive "$lib" -Wl,--no-whole-archive -lnuma >>"$work/build.log" 2>&1 ||
  { cat "$work/build.log"; die "linking the static /init failed"; }
# GHC's threaded runtime on libosmem, when this build has the GHC library
# (--enable-ghc) and ghc is here: a static Haskell program, run by /init in
# the two-node VM with +RTS -N2 --numa (GhcNuma.hs). OSMEM_VM_GHC=required
# makes its absence a failure (CI).
ghc_lib=$top_builddir/.libs/libosmem-ghc.a
if [ -f "$ghc_lib" ] && command -v ghc >/dev/null 2>&1; then
  mkdir -p "$work/ghc"
  # The link flags osmem-ghc.pc gives, pointed at this build.
  # shellcheck disable=SC2086 # flag lists
  ghc -threaded -O0 -v0 -outputdir "$work/ghc" -o "$work/root/ghc-numa" \
    -optl-static -optl-pthread \
    "$top_srcdir/tests/numa-vm/GhcNuma.hs" "$top_srcdir/tests/numa-vm/ghc-heap-nodes.c" \
    ${OSMEM_GHC_LINK:-"-optl-Wl,-u,osMemInit"} -L"$top_builddir/.libs" -losmem-ghc \
    -lnuma >"$work/ghc-build.log" 2>&1 ||
    { cat "$work/ghc-build.log"; die "building the static Haskell program failed"; }
  nm "$work/root/ghc-numa" | grep -q ' T osmem_ghc_heap_reservation$' ||
    die "the Haskell program does not hold libosmem-ghc's OS layer"
  echo "ghc:       /ghc-numa, $(ghc --numeric-version), threaded, static, on libosmem-ghc"
elif [ "${OSMEM_VM_GHC:-}" = required ]; then
  die "OSMEM_VM_GHC=required, but no $ghc_lib or no ghc"
fi
# Without root, mknod fails: /init then opens the console through devtmpfs.
mknod "$work/root/dev/console" c 5 1 2>/dev/null || true
(cd "$work/root" && find . | cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$work/initramfs.gz" ||
  die "packing the initramfs failed"

echo "kernel:    $kernel"
echo "initramfs: $work/initramfs.gz ($(wc -c <"$work/initramfs.gz") bytes, /init linked with $(basename "$lib"))"
echo "qemu:      $(qemu-system-x86_64 --version | head -n 1), TCG"

# ----------------------------------------------------------- topologies
ram() { echo "-object memory-backend-ram,id=$1,size=$2"; }
topology_args() {
  case $1 in
    two|restricted)
      echo "-smp 2 -m 1G $(ram m0 512M) $(ram m1 512M)" \
        "-numa node,nodeid=0,cpus=0,memdev=m0 -numa node,nodeid=1,cpus=1,memdev=m1" ;;
    sparse) # node 2: CPUs, no memory
      echo "-smp 4 -m 1G $(ram m0 384M) $(ram m1 256M) $(ram m3 384M)" \
        "-numa node,nodeid=0,cpus=0,memdev=m0 -numa node,nodeid=1,cpus=1,memdev=m1" \
        "-numa node,nodeid=2,cpus=2 -numa node,nodeid=3,cpus=3,memdev=m3" ;;
  esac
}
topology_text() {
  case $1 in
    two) echo "2 nodes (0, 1), 512 MiB each, 2 vCPUs" ;;
    sparse) echo "4 nodes: 0 (384 MiB), 1 (256 MiB), 2 (CPUs, no memory), 3 (384 MiB); 4 vCPUs" ;;
    restricted) echo "2 nodes, checks restricted to node 1 by a cpuset and by MPOL_BIND" ;;
  esac
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

total_pass=0 total_fail=0 summary=
for topo in $topologies; do
  args=$(topology_args "$topo")
  [ -n "$args" ] || die "unknown topology '$topo' (two, sparse, restricted)"
  log=$work/$topo.log
  echo
  echo "== topology $topo: $(topology_text "$topo")"
  start=$(now_ms)
  # shellcheck disable=SC2086 # $args is a list of options
  timeout -k 5 "$vm_timeout" qemu-system-x86_64 -accel tcg -nographic -no-reboot \
    -net none $args -kernel "$kernel" -initrd "$work/initramfs.gz" \
    -append "console=ttyS0 loglevel=3 panic=-1 osmem.topology=$topo" \
    </dev/null >"$log.raw" 2>&1
  rc=$?
  ms=$(( $(now_ms) - start ))
  # Carriage returns and the firmware's terminal escapes out.
  tr -d '\r' <"$log.raw" | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1b[A-Za-z]//g' >"$log"
  rm -f "$log.raw"
  grep -E '^(PASS|FAIL|PAGES|INFO) ' "$log" | grep -v '^INFO uptime' | sed 's/^/  /'
  secs=$(awk -v ms="$ms" 'BEGIN { printf "%.1f", ms / 1000 }')
  uptime=$(sed -n 's/^INFO uptime \([0-9.]*\) s$/\1/p' "$log" | tail -n 1)
  closing=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
  if [ -n "$closing" ] && [ "$rc" = 0 ]; then
    echo "  time: ${secs} s from qemu start to power-off (guest uptime ${uptime:-?} s)"
    p=${closing%% passed*}
    f=${closing#*passed, }; f=${f%% failed}
    echo "  result: $closing"
  else
    p=$(grep -c '^PASS ' "$log"); f=$(( $(grep -c '^FAIL ' "$log") + 1 ))
    case $rc in
      124|137) why="killed after ${vm_timeout} s" ;;
      0) why="no closing line (crash or panic?)" ;;
      *) why="qemu exited with $rc" ;;
    esac
    echo "  time: ${secs} s, then qemu stopped without a power-off"
    echo "  FAIL $topo.vm: the VM did not finish: $why; last console lines ($log):"
    tail -n 25 "$log" | sed 's/^/    | /'
    echo "  result: $p passed, $f failed (the unfinished VM counts as a failure)"
  fi
  total_pass=$((total_pass + p)) total_fail=$((total_fail + f))
  summary="$summary$(printf '\n  %-11s %6s s  %s passed, %s failed' "$topo" "$secs" "$p" "$f")"
done

echo
echo "== summary (console logs in $work)$summary"
echo "numa-vm: $total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
