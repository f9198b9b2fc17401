/* Native models (src/io/model.c): loading with a status, for the tests, and
 * from memory, for the fuzzer (tests/fuzz/fuzz_model.c) and for loaders that
 * hold the bytes already. */
#ifndef KILN_IO_MODEL_H
#define KILN_IO_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

/* kiln_model_load, returning its status: *out is the model, or NULL on
 * failure. */
kiln_status model_load_files(const char *path_prefix, kiln_model **out);

/* kiln_model_load on the two files' bytes: json[0, json_len) for
 * PREFIX.kiln.json and weights[0, weights_len) for PREFIX.safetensors, with
 * the same checks and messages, name standing for the prefix. When
 * max_value_bytes is positive, a model whose inputs and op results
 * together take more bytes than that fails (KILN_ERR_UNSUPPORTED) before
 * anything is compiled or run: the fuzzer keeps the memory and time of one
 * input bounded with it. On failure *out is NULL. */
kiln_status model_load_memory(const char *json, size_t json_len, const void *weights, size_t weights_len,
                              const char *name, int64_t max_value_bytes, kiln_model **out);

#endif
