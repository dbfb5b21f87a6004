#include "helpers.h"

Test(threads, placeholder) { cr_assert(1); }
