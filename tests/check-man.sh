#!/bin/sh
# The manual pages (man/): every public function of include/osmem.h (each
# OSMEM_EXTERN declaration) must be reachable as `man <function>`, through
# a page of its own or a one-line `.so man3/<page>.3` page; every page must
# be installed (listed in Makefile.am) and must name the function in its
# NAME and SYNOPSIS sections. Then each page is linted with `mandoc -T lint`
# (or, without mandoc, `groff -ww -man -z`): any message fails.
# The coverage part needs nothing but sh, sed and grep; without mandoc and
# groff the lint cannot run, and the test SKIPs (exit 77) once the coverage
# has passed.
set -u
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
header="$top_srcdir/include/osmem.h"
mandir="$top_srcdir/man"
makefile_am="$top_srcdir/Makefile.am"
for f in "$header" "$makefile_am"; do
  [ -f "$f" ] || { echo "FAIL: $f not found"; exit 1; }
done
[ -d "$mandir" ] || { echo "FAIL: $mandir not found"; exit 1; }

fail=0
problem() { echo "FAIL: $*"; fail=1; }

# The public functions: `OSMEM_EXTERN <type> <name>(...`, the name being the
# identifier just before the first parenthesis of the declaration's line.
decls=$(grep -E '^OSMEM_EXTERN[[:space:]]' "$header")
functions=$(printf '%s\n' "$decls" |
  sed -n 's/^OSMEM_EXTERN[^(]*[^A-Za-z0-9_]\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*(.*/\1/p')
n_decls=$(printf '%s\n' "$decls" | grep -c .)
n_functions=$(printf '%s\n' "$functions" | grep -c .)
if [ "$n_decls" -ne "$n_functions" ] || [ "$n_functions" -eq 0 ]; then
  problem "found $n_decls OSMEM_EXTERN declarations in include/osmem.h but" \
    "could read the name of only $n_functions (keep the name and its '(' on" \
    "the OSMEM_EXTERN line)"
fi

# The pages Makefile.am installs (dist_man_MANS): man/<name>.3 entries.
installed=$(sed -n 's/.*\(man\/[A-Za-z0-9_]*\.3\).*/\1/p' "$makefile_am" |
  sed 's/^man\///; s/\.3$//' | sort -u)
is_installed() { printf '%s\n' "$installed" | grep -qx "$1"; }

# A link page is exactly one line, `.so man3/<page>.3`; prints <page>.
link_target() {
  [ "$(grep -c . "$mandir/$1.3")" = 1 ] || return 1
  sed -n 's/^\.so man3\/\([A-Za-z0-9_]*\)\.3$/\1/p' "$mandir/$1.3" | grep .
}

# The names a page's NAME section lists, one per line: the words before
# its `\-`, which may span several lines.
name_section() {
  awk '/^\.SH NAME/ { on = 1; next }
       on && /^\./ { exit }
       on { i = index($0, "\\-"); if (i) { print substr($0, 1, i - 1); exit }
            print }' "$mandir/$1.3" |
    tr ',' '\n' | tr -d ' \t' | grep .
}

# Every function: its page or link page exists and is installed, and the
# page it leads to names it in NAME and declares it in SYNOPSIS.
for fn in $functions; do
  page=$fn
  if [ ! -f "$mandir/$fn.3" ]; then
    problem "$fn has no manual page: add man/$fn.3 (a page, or the line" \
      "'.so man3/<page>.3' leading to the page that documents it) and list" \
      "it in Makefile.am's dist_man_MANS"
    continue
  fi
  is_installed "$fn" || problem "man/$fn.3 is not listed in Makefile.am (dist_man_MANS)"
  if grep -q '^\.so' "$mandir/$fn.3"; then
    page=$(link_target "$fn") || {
      problem "man/$fn.3: a link page must be the single line '.so man3/<page>.3'"
      continue
    }
    [ -f "$mandir/$page.3" ] || { problem "man/$fn.3 leads to man3/$page.3, which does not exist"; continue; }
    if grep -q '^\.so' "$mandir/$page.3"; then
      problem "man/$fn.3 leads to man3/$page.3, itself a link page"
      continue
    fi
  fi
  name_section "$page" | grep -qx "$fn" ||
    problem "man/$page.3 does not list $fn in its NAME section"
  sed -n '/^\.SH SYNOPSIS/,/^\.SH/p' "$mandir/$page.3" | grep -q "$fn(" ||
    problem "man/$page.3 does not declare $fn in its SYNOPSIS section"
done

# Every page: installed, and naming only real functions (or itself, as
# osmem.3 does), so that a renamed function cannot leave a stale page.
pages=
for f in "$mandir"/*.3; do
  [ -f "$f" ] || continue
  name=$(basename "$f" .3)
  is_installed "$name" || problem "man/$name.3 is not listed in Makefile.am (dist_man_MANS)"
  if grep -q '^\.so' "$f"; then
    link_target "$name" >/dev/null ||
      problem "man/$name.3: a link page must be the single line '.so man3/<page>.3'"
    printf '%s\n' "$functions" | grep -qx "$name" ||
      problem "man/$name.3 links a name that include/osmem.h does not declare"
    continue
  fi
  pages="$pages $name"
  for listed in $(name_section "$name"); do
    [ "$listed" = "$name" ] && continue
    printf '%s\n' "$functions" | grep -qx "$listed" ||
      problem "man/$name.3 lists $listed in NAME, which include/osmem.h does not declare"
  done
done
for name in $installed; do
  [ -f "$mandir/$name.3" ] || problem "Makefile.am lists man/$name.3, which does not exist"
done
[ "$fail" = 0 ] || exit 1
echo "coverage: $n_functions functions, each with a page or a link page;" \
  "pages:$pages"

# Lint the pages (the link pages are checked above).
if command -v mandoc >/dev/null 2>&1; then
  linter="mandoc -T lint -W warning"
  lint() { mandoc -T lint -W warning "$1" 2>&1; }
elif command -v groff >/dev/null 2>&1; then
  linter="groff -ww -man -z"
  lint() { groff -ww -man -z "$1" 2>&1; }
else
  echo "SKIP: the pages cover every function, but neither mandoc nor groff is" \
    "installed to lint them (Debian: apt-get install mandoc)"
  exit 77
fi
for name in $pages; do
  out=$(lint "$mandir/$name.3") || true
  if [ -n "$out" ]; then
    problem "$linter man/$name.3:"; printf '%s\n' "$out"
  fi
done
[ "$fail" = 0 ] || exit 1
echo "PASS: $linter reports nothing on$pages"
