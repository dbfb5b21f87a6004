#!/bin/sh
# Configure did not find Criterion: the native suite cannot run. This fails on
# purpose, so that a missing test framework is never mistaken for a pass.
echo "Criterion was not found at configure time: install libcriterion-dev and re-run configure." >&2
exit 1
