#!/bin/sh
# Installs the Debian packages named on the command line, with apt-get (via
# sudo unless root), for the check scripts and CI: tries once, and if that
# fails (stale package lists on a fresh machine) updates the lists and tries
# again. Without apt-get it does nothing and succeeds: the caller then finds
# out what is missing itself. Exit status: apt-get's.
set -eu
command -v apt-get >/dev/null 2>&1 || exit 0
if [ "$(id -u)" = 0 ]; then as_root=; else as_root=sudo; fi
install() {
  $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "$@" >/dev/null
}
install "$@" || { $as_root apt-get update -q >/dev/null && install "$@"; }
