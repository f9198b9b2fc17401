/* The engine's profiler: one event per op (name, worker, push, start and
 * end times), written as Chrome trace-event JSON, which Perfetto and
 * chrome://tracing open (docs/profiler.md says how to read it). */
#ifndef KILN_PROFILER_H
#define KILN_PROFILER_H

#include <stdint.h>

#include "base/base.h"

typedef struct kiln_profiler kiln_profiler;

/* A profiler writing to path when freed, or NULL when path is NULL. */
kiln_profiler *engine_profiler_new(const char *path);
/* Thread-safe; drops the event when out of memory. */
void engine_profile_record(kiln_profiler *p, const char *name, int worker, int64_t push_ns, int64_t start_ns,
                           int64_t end_ns);
/* Writes the trace (atomically: temporary file, then rename). */
kiln_status engine_profiler_write(kiln_profiler *p);
/* Writes, then frees. NULL does nothing. */
void engine_profiler_free(kiln_profiler *p);
/* Frees without writing (a stopped recording, written when it stopped). */
void engine_profiler_free_quietly(kiln_profiler *p);
/* A list link for the engine's stopped recordings. */
kiln_profiler *engine_profiler_next(const kiln_profiler *p);
void engine_profiler_set_next(kiln_profiler *p, kiln_profiler *next);

#endif
