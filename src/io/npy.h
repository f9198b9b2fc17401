/* .npy parsing from memory, for the fuzzer (tests/fuzz) and for future
 * loaders that hold a file's bytes already. Same checks and messages as
 * kiln_load_npy, with `name` standing for the path. On success *out is a new
 * tensor owned by the caller (not registered with any scope). */
#ifndef KILN_IO_NPY_H
#define KILN_IO_NPY_H

#include <stddef.h>

#include "kiln.h"

kiln_status npy_load_memory(const void *data, size_t size, const char *name, kiln_tensor **out);

#endif
