/* libFuzzer target for the native model loader: the input is the
 * .kiln.json text, loaded with one fixed weights file (the seeds' own,
 * FUZZ_MODEL_WEIGHTS), so mutations reach the graph checks, each op's
 * inference and the compiler. Any bytes must give either a model or a
 * status with a message and no model, never a crash, a leak or undefined
 * behaviour (the build adds ASan and UBSan). A model that loads is run
 * once on inputs of its declared dtypes and shapes (3 at an unknown dim),
 * and its outputs must have the dtypes and the known dims it declares. The loader's size limit keeps
 * each input's memory and time small. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *weights;
static size_t weights_len;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  FILE *f = fopen(FUZZ_MODEL_WEIGHTS, "rb");
  if (!f) abort();
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  weights = malloc(n > 0 ? (size_t)n : 1);
  weights_len = n > 0 ? fread(weights, 1, (size_t)n, f) : 0;
  fclose(f);
  if (!weights || weights_len == 0) abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_model *m = NULL;
  if (model_load_memory((const char *)data, size, weights, weights_len, "fuzz input", (int64_t)1 << 20, &m) !=
      KILN_OK) {
    if (m || kiln_last_error()[0] == '\0') abort(); /* a failure must say why and return nothing */
    return 0;
  }
  int n_in = kiln_model_num_inputs(m), n_out = kiln_model_num_outputs(m);
  if (!m || n_in < 0 || n_out < 1) abort();
  kiln_tensor **in = calloc((size_t)n_in + 1, sizeof *in), **out = calloc((size_t)n_out, sizeof *out);
  if (!in || !out) abort();
  kiln_scope_begin();
  bool unknown = false;
  for (int i = 0; i < n_in; i++) {
    kiln_model_value v;
    if (kiln_model_input(m, i, &v) != KILN_OK || !v.name || !v.name[0]) abort();
    int64_t shape[KILN_MAX_DIMS];
    for (int d = 0; d < v.ndim; d++) {
      unknown = unknown || v.shape[d] < 0;
      shape[d] = v.shape[d] < 0 ? 3 : v.shape[d];
    }
    in[i] = kiln_full(v.dtype, v.ndim, shape, 1);
  }
  /* At new sizes the graph is built again, and an op that fixed a size
   * refuses, saying why; at the declared sizes the run must start. */
  int ran = n_out;
  if (kiln_model_run(m, n_in, in, out) != KILN_OK) {
    if (!unknown || kiln_last_error()[0] == '\0') abort();
    ran = 0;
  }
  for (int k = 0; k < ran; k++) {
    kiln_model_value v;
    if (kiln_model_output(m, k, &v) != KILN_OK || kiln_tensor_dtype(out[k]) != v.dtype ||
        kiln_tensor_ndim(out[k]) != v.ndim)
      abort();
    for (int d = 0; d < v.ndim; d++)
      if (v.shape[d] >= 0 && kiln_tensor_dim(out[k], d) != v.shape[d]) abort();
    /* A kernel may still fail on these values (an index out of range),
     * and must then say why. */
    if (kiln_wait_to_read(out[k]) != KILN_OK && kiln_tensor_error(out[k])[0] == '\0') abort();
  }
  kiln_scope_end();
  kiln_model_stats s = kiln_model_get_stats(m);
  if (s.parameters != 4 || s.nodes < 0 || s.arena_bytes < 0) abort();
  for (int i = 0; i < kiln_model_num_op_kinds(m); i++) {
    const char *op;
    int count;
    if (kiln_model_op_count(m, i, &op, &count) != KILN_OK || count < 1) abort();
  }
  kiln_model_free(m);
  free(in);
  free(out);
  return 0;
}
