/* Cases that exist only for the wasm backend. */
#include "helpers.h"

Test(wasm, placeholder) { cr_assert_str_eq(osmem_backend(), "wasm"); }
