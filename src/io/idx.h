/* IDX parsing from memory, for the fuzzer (tests/fuzz) and for callers that
 * hold a file's bytes already. Same checks and messages as kiln_load_idx
 * (gzip included), with `name` standing for the path. On success *out is a
 * new tensor owned by the caller (not registered with any scope); on failure
 * *out is NULL and kiln_last_error says why. */
#ifndef KILN_IO_IDX_H
#define KILN_IO_IDX_H

#include <stddef.h>

#include "kiln.h"

kiln_status idx_load_memory(const void *data, size_t size, const char *name, kiln_tensor **out);

#endif
