/* libFuzzer target for the ONNX importer: the input is the bytes of a
 * .onnx file. Any bytes must give either a model or a status with a
 * message and no model, never a crash, a leak or undefined behaviour (the
 * build adds ASan and UBSan). A model that loads is run once on inputs of
 * its declared dtypes and shapes (3 at an unknown dim), and its outputs
 * must have the dtypes and the known dims it declares. The importer's size
 * limit keeps each input's memory and time small. Seeds: the malformed
 * corpus (tests/fixtures/bad_onnx) and a few conformance models, which
 * `make fuzz` copies from libonnx-testdata. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "io/onnx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_model *m = NULL;
  if (onnx_load_memory(data, size, "fuzz input", NULL, (int64_t)1 << 20, &m) != KILN_OK) {
    if (m || kiln_last_error()[0] == '\0') abort(); /* a failure must say why and return nothing */
    return 0;
  }
  int n_in = kiln_model_num_inputs(m), n_out = kiln_model_num_outputs(m);
  if (!m || n_in < 0 || n_out < 1) abort();
  kiln_tensor **in = calloc((size_t)n_in + 1, sizeof *in), **out = calloc((size_t)n_out, sizeof *out);
  if (!in || !out) abort();
  kiln_scope_begin();
  bool unknown = false;
  int64_t elements = 0;
  for (int i = 0; i < n_in; i++) {
    kiln_model_value v;
    if (kiln_model_input(m, i, &v) != KILN_OK || !v.name) abort();
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
   * refuses, saying why; at the declared sizes the run must start. Inputs
   * whose unknown dims make them large are not run. */
  int ran = elements <= (int64_t)1 << 20 ? n_out : 0;
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
  kiln_waitall();
  kiln_model_free(m);
  free(in);
  free(out);
  return 0;
}
