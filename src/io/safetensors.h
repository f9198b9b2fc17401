/* safetensors parsing from memory, for the fuzzer (tests/fuzz) and for
 * loaders that hold a file's bytes already. Same checks and messages as
 * kiln_load_safetensors, with `name` standing for the path; the same
 * outputs, freed with kiln_named_tensors_free. */
#ifndef KILN_IO_SAFETENSORS_H
#define KILN_IO_SAFETENSORS_H

#include <stddef.h>

#include "kiln.h"

/* The largest header kiln reads or writes, the limit of the reference
 * implementation (so a file kiln writes is one every reader opens). */
#define SAFETENSORS_MAX_HEADER ((uint64_t)100000000)

kiln_status safetensors_load_memory(const void *data, size_t size, const char *name, int *n, char ***names,
                                    kiln_tensor ***tensors);

#endif
