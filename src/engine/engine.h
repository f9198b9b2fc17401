/* Internal view of the engine for the layers above it (dispatch, tensors,
 * the profiler). The public API is in kiln.h. */
#ifndef KILN_ENGINE_H
#define KILN_ENGINE_H

#include "base/base.h"

/* The failure a variable carries, or NULL. The message stays valid while
 * the variable lives. Waits for v's pending writes first. */
const char *engine_var_error(kiln_engine *e, kiln_engine_var *v, kiln_status *status);

/* Whether the engine runs work in the pushing thread. */
bool engine_is_naive(const kiln_engine *e);

#endif
