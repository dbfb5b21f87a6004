#include "helpers.h"

Test(reserve, placeholder) { cr_assert(1); }
