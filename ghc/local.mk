# GHC's OS layer on libosmem (./configure --enable-ghc); see ghc/README.md.
