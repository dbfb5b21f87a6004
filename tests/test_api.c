#include "helpers.h"

Test(api, placeholder) { cr_assert(1); }
