/* Native models (src/io/model.c): loading with a status, for the tests, and
 * from memory, for the fuzzer (tests/fuzz/fuzz_model.c) and for loaders that
 * hold the bytes already. */
#ifndef KILN_IO_MODEL_H
#define KILN_IO_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "graph/graph.h"
#include "kiln.h"
#include "ops/op.h"

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

/* ---------------------------------------------------------------- importers
 * What an importer of another format (src/io/onnx.c) needs to make a
 * kiln_model of a graph it built through the ops: the model then runs and
 * answers introspection exactly as a native one. */

/* The FLOPs of one op call by the rules of kiln_model_flops, for a call its
 * op's inference accepted. */
int64_t model_node_flops(kiln_op_id id, int n_in, kiln_tensor *const *in, const kiln_attr_value *attrs,
                         kiln_tensor *const *out);

typedef struct {
  const char *fn, *path; /* for messages: "fn: path: ..." */
  kiln_graph *graph;
  int n_inputs; /* the graph's inputs, in the order they were made; -1 dims unknown */
  const kiln_model_value *inputs;
  int n_outputs; /* 1 to 64 values of graph (not bound tensors), and their names */
  kiln_tensor *const *outputs;
  const char *const *output_names;
  const int *op_count; /* KILN_OP_COUNT entries: the op nodes the import made, by op */
  int64_t flops;
  int parameters; /* the tensors the graph binds, as kiln_model_stats reports them */
  int64_t parameter_elements, parameter_bytes;
} model_parts;

/* Compiles parts.graph with the default options into *out (NULL on
 * failure, with a message prefixed by "fn: path: "). Copies what it keeps;
 * the caller still owns parts' arrays and the graph. */
kiln_status model_from_graph(const model_parts *parts, kiln_model **out);

/* ---------------------------------------------------------------- exporters
 * What the native export selects from a plan's source graph, shared with
 * the exporters of other formats (src/io/onnx_export.c), so every format
 * writes the same nodes under the same parameter names. */
typedef struct {
  const kiln_graph *g;
  int n_inputs;       /* the plan's inputs: the first n_inputs input nodes */
  int n_out;          /* the plan's outputs, values of g */
  const graph_ref *outs;
  bool dynamic_batch; /* inputs' dim 0 written unknown (checked first) */
  int *index;         /* per graph node: its number in the file, or -1 */
  char **bound_name;  /* per graph node, for bound nodes: owned */
  int n_bound;
  kiln_tensor **bound; /* in node order, borrowed */
  const char **names;  /* the same order */
} model_export_state;

/* The exported graph of block b's latest inference plan (as
 * kiln_block_export_ex takes it) or, when b is NULL, of model m's plan
 * (its bound tensors then named "const.N"). fn prefixes messages. The
 * graph is borrowed from the plan: b or m must outlive *s. On failure *s
 * holds nothing to free beyond model_export_state_free. */
kiln_status model_export_select(const char *fn, kiln_block *b, const kiln_model *m, const kiln_export_options *options,
                                model_export_state *s);
void model_export_state_free(model_export_state *s);

/* data to path through a temporary file in the same directory, flushed,
 * fsync'd and renamed over path: a reader sees the old file or the new,
 * and a failure leaves no temporary behind. */
kiln_status model_write_atomic(const char *fn, const char *path, const void *data, size_t len);

#endif
