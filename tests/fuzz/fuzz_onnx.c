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

#include "fuzz_run.h"
#include "io/onnx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_model *m = NULL;
  if (onnx_load_memory(data, size, "fuzz input", NULL, (int64_t)1 << 20, &m) != KILN_OK) {
    if (m || kiln_last_error()[0] == '\0') abort(); /* a failure must say why and return nothing */
    return 0;
  }
  fuzz_run_model(m, false, (int64_t)1 << 20);
  kiln_waitall();
  kiln_model_free(m);
  return 0;
}
