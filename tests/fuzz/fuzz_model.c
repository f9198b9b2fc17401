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

#include "fuzz_run.h"
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
  fuzz_run_model(m, true, INT64_MAX); /* the loader's size limit bounds the inputs */
  kiln_model_stats s = kiln_model_get_stats(m);
  if (s.parameters != 4 || s.nodes < 0 || s.arena_bytes < 0) abort();
  for (int i = 0; i < kiln_model_num_op_kinds(m); i++) {
    const char *op;
    int count;
    if (kiln_model_op_count(m, i, &op, &count) != KILN_OK || count < 1) abort();
  }
  kiln_model_free(m);
  return 0;
}
