/* Internal view of the engine for the layers above it (dispatch, tensors,
 * the profiler). The public API is in kiln.h. */
#ifndef KILN_ENGINE_H
#define KILN_ENGINE_H

#include "base/base.h"

/* The failure a variable carries, or NULL. The message stays valid while
 * the variable lives. Waits for v's pending writes first. */
const char *engine_var_error(kiln_engine *e, kiln_engine_var *v, kiln_status *status);

/* Devices (src/device): a ready queue with `workers` threads of its own;
 * returns its index, or -1 with kiln_last_error. Queue 0 is the one
 * kiln_engine_new starts; kiln_engine_push and kiln_engine_new_var use it. */
int engine_add_queue(kiln_engine *e, int workers);
kiln_status engine_push_on(kiln_engine *e, int queue, kiln_engine_fn fn, void (*done)(void *data), void *data,
                           kiln_engine_var *const *reads, int n_reads, kiln_engine_var *const *writes, int n_writes,
                           const char *name, int priority);
/* A variable of queue's device: waits and the delete on it run there. */
kiln_engine_var *engine_new_var_on(kiln_engine *e, int queue);

/* Whether the engine runs work in the pushing thread. */
bool engine_is_naive(const kiln_engine *e);

#endif
