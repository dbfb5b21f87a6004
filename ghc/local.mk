# GHC's OS layer on libosmem (./configure --enable-ghc); see ghc/README.md.
#
# libosmem-ghc.a holds the adapter (ghc/osmem-ghc.c: the 17 functions of
# GHC's OSMem.o) and the whole core library, so that a Haskell program
# linked with it needs no shared libosmem at run time. Static only: GHC
# links its runtime statically, and the adapter must be found before
# libHSrts.a is searched (osmem-ghc.pc carries the flags).
EXTRA_DIST += ghc/README.md tests/ghc/run.sh tests/ghc/GcHeavy.hs \
	tests/ghc/MemReturn.hs tests/ghc/Exhaust.hs tests/ghc/HeapInfo.hs

if ENABLE_GHC
lib_LTLIBRARIES += libosmem-ghc.la
libosmem_ghc_la_SOURCES = ghc/osmem-ghc.c
# -isystem: GHC's headers are not ours to keep free of warnings.
libosmem_ghc_la_CPPFLAGS = $(AM_CPPFLAGS) -isystem $(GHC_INCLUDE_DIR)
libosmem_ghc_la_LIBADD = libosmem-internal.la
libosmem_ghc_la_LDFLAGS = -static
pkgconfig_DATA += osmem-ghc.pc

# Builds Haskell programs against this build tree's libosmem-ghc.a (and
# against GHC's own layer, for comparison); about a minute.
TESTS += tests/ghc/run.sh
AM_TESTS_ENVIRONMENT += GHC='$(GHC)'; export GHC;
endif
