#include "helpers.h"

Test(numa, placeholder) { cr_assert(1); }
