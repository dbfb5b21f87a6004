/* Bookkeeping memory for the common code (meta.c). */
#ifndef OSMEM_COMMON_META_H
#define OSMEM_COMMON_META_H

#include <stddef.h>

#include "../backend.h"

/* size bytes of zero-filled memory from the backend, recorded so that a
 * teardown can give it back. Lock held. 0 or ENOMEM. */
OSMEM_HIDDEN int osmem__meta_alloc(size_t size, void **out);

/* Unmaps every recorded piece (teardown); 0 or the first error. */
OSMEM_HIDDEN int osmem__meta_release_all(void);

/* Drops the records without giving anything back (osmem__forget_everything). */
OSMEM_HIDDEN void osmem__meta_forget(void);

#endif /* OSMEM_COMMON_META_H */
