/* libFuzzer target for the safetensors loader: any bytes must give either
 * named tensors that can be read back and printed, or a status with a
 * message and empty outputs, never a crash, a leak or undefined behaviour
 * (the build adds ASan and UBSan). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int n = -1;
  char **names = NULL;
  kiln_tensor **tensors = NULL;
  if (safetensors_load_memory(data, size, "fuzz input", &n, &names, &tensors) != KILN_OK) {
    /* a failure must say why and return nothing */
    if (n != 0 || names || tensors || kiln_last_error()[0] == '\0') abort();
    return 0;
  }
  if (n < 0 || !names || !tensors) abort();
  size_t total = 0;
  for (int i = 0; i < n; i++) {
    kiln_tensor *t = tensors[i];
    if (!names[i] || !names[i][0] || !kiln_tensor_is_contiguous(t)) abort();
    for (int j = 0; j < i; j++)
      if (strcmp(names[i], names[j]) == 0) abort(); /* duplicates are refused */
    size_t bytes = (size_t)kiln_tensor_numel(t) * kiln_dtype_size(kiln_tensor_dtype(t));
    total += bytes;
    void *copy = malloc(bytes ? bytes : 1);
    if (kiln_tensor_copy_to(t, copy, bytes) != KILN_OK) abort();
    if (kiln_tensor_dtype(t) == KILN_BOOL)
      for (size_t k = 0; k < bytes; k++)
        if (((unsigned char *)copy)[k] > 1) abort();
    char text[256];
    kiln_tensor_format(t, text, sizeof text, NULL);
    free(copy);
  }
  if (total > size) abort(); /* the data came from the input, so it cannot outgrow it */
  kiln_named_tensors_free(n, names, tensors);
  return 0;
}
