/* AIP_DEBUG: 0 by default; build with -DAIP_DEBUG=1 (CMake option AIP_DEBUG=ON)
 * to turn on invariant checks in the core. A failed check aborts with the
 * expression and location: in a shared-memory protocol a broken invariant
 * means corruption, and continuing would only move the crash elsewhere. */
#ifndef AIP_DEBUG_H
#define AIP_DEBUG_H

#include <stdio.h>
#include <stdlib.h>

#ifndef AIP_DEBUG
#define AIP_DEBUG 0
#endif

#if AIP_DEBUG
#define AIP_ASSERT(cond)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "aip: invariant failed: %s (%s:%d)\n", #cond,      \
                    __FILE__, __LINE__);                                       \
            abort();                                                           \
        }                                                                      \
    } while (0)
#else
#define AIP_ASSERT(cond) ((void)0)
#endif

#endif /* AIP_DEBUG_H */
