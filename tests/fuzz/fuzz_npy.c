/* libFuzzer target for the .npy loader: any bytes must give either a tensor
 * that can be read back and printed, or a status with a message, never a
 * crash, a leak or undefined behaviour (the build adds ASan and UBSan). */
#include <stdint.h>
#include <stdlib.h>

#include "io/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_tensor *t = NULL;
  if (npy_load_memory(data, size, "fuzz input", &t) != KILN_OK) {
    if (t || kiln_last_error()[0] == '\0') abort(); /* a failure must say why and return nothing */
    return 0;
  }
  size_t bytes = (size_t)kiln_tensor_numel(t) * kiln_dtype_size(kiln_tensor_dtype(t));
  void *copy = malloc(bytes ? bytes : 1);
  if (kiln_tensor_copy_to(t, copy, bytes) != KILN_OK) abort();
  char text[256];
  kiln_tensor_format(t, text, sizeof text, NULL);
  free(copy);
  kiln_tensor_release(t);
  return 0;
}
