/* What the model fuzzers (fuzz_model, fuzz_onnx) check of a model that
 * loaded: it runs once on inputs of its declared dtypes and shapes (3 at
 * an unknown dim), and its outputs have the dtypes and the known dims it
 * declares. Any broken promise aborts, which libFuzzer reports. */
#ifndef KILN_FUZZ_RUN_H
#define KILN_FUZZ_RUN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "kiln.h"

/* named: every input must have a non-empty name (the native format's
 * rule). Inputs whose unknown dims make them over max_elements in all are
 * built but not run. */
static inline void fuzz_run_model(kiln_model *m, bool named, int64_t max_elements) {
  int n_in = kiln_model_num_inputs(m), n_out = kiln_model_num_outputs(m);
  if (!m || n_in < 0 || n_out < 1) abort();
  kiln_tensor **in = calloc((size_t)n_in + 1, sizeof *in), **out = calloc((size_t)n_out, sizeof *out);
  if (!in || !out) abort();
  kiln_scope_begin();
  bool unknown = false;
  int64_t elements = 0;
  for (int i = 0; i < n_in; i++) {
    kiln_model_value v;
    if (kiln_model_input(m, i, &v) != KILN_OK || !v.name || (named && !v.name[0])) abort();
    int64_t shape[KILN_MAX_DIMS], numel = 1;
    for (int d = 0; d < v.ndim; d++) {
      unknown = unknown || v.shape[d] < 0;
      shape[d] = v.shape[d] < 0 ? 3 : v.shape[d];
      numel = numel > (int64_t)1 << 20 || shape[d] > (int64_t)1 << 20 ? (int64_t)1 << 40 : numel * shape[d];
    }
    elements += numel;
    in[i] = kiln_full(v.dtype, v.ndim, shape, 1);
  }
  /* At new sizes the graph is built again, and an op that fixed a size
   * refuses, saying why; at the declared sizes the run must start. */
  int ran = elements <= max_elements ? n_out : 0;
  if (ran && kiln_model_run(m, n_in, in, out) != KILN_OK) {
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
  free(in);
  free(out);
}

#endif
