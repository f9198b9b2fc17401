/* ONNX import (src/io/onnx.c): a ModelProto read through protobuf-c and
 * rebuilt as a kiln graph with the registry's ops, compiled into a
 * kiln_model. From memory too, for the fuzzer (tests/fuzz/fuzz_onnx.c). */
#ifndef KILN_IO_ONNX_H
#define KILN_IO_ONNX_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

/* kiln_onnx_load, returning its status. */
kiln_status onnx_load_file(const char *path, const kiln_onnx_options *options, kiln_model **out);

/* The same on the bytes of a .onnx file, name standing for its path in
 * messages. When max_value_bytes is positive, a model whose inputs,
 * constants and op results together take more bytes than that fails
 * (KILN_ERR_UNSUPPORTED) before anything large is allocated or run: the
 * fuzzer bounds the memory and time of one input with it. */
kiln_status onnx_load_memory(const void *data, size_t len, const char *name, const kiln_onnx_options *options,
                             int64_t max_value_bytes, kiln_model **out);

#endif
