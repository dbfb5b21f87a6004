#include "helpers.h"

Test(pool, placeholder) { cr_assert(1); }
