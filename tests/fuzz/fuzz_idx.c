/* libFuzzer target for the IDX reader (plain and gzip): any bytes must give
 * either a tensor that can be read back and printed, or a status with a
 * message, never a crash, a leak or undefined behaviour (the build adds ASan
 * and UBSan). A tensor that loads is also run through a loader when it can
 * be one's images, so the gather sees shapes the fuzzer makes up. */
#include <stdint.h>
#include <stdlib.h>

#include "io/idx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_tensor *t = NULL;
  if (idx_load_memory(data, size, "fuzz input", &t) != KILN_OK) {
    if (t || kiln_last_error()[0] == '\0') abort(); /* a failure must say why and return nothing */
    return 0;
  }
  size_t bytes = (size_t)kiln_tensor_numel(t) * kiln_dtype_size(kiln_tensor_dtype(t));
  void *copy = malloc(bytes ? bytes : 1);
  if (kiln_tensor_copy_to(t, copy, bytes) != KILN_OK) abort();
  char text[256];
  kiln_tensor_format(t, text, sizeof text, NULL);
  free(copy);
  kiln_dtype dt = kiln_tensor_dtype(t);
  if ((dt == KILN_U8 || dt == KILN_F32 || dt == KILN_F64) && kiln_tensor_numel(t) <= (1 << 16) &&
      kiln_tensor_dim(t, 0) <= (1 << 16)) {
    kiln_tensor *labels = kiln_zeros(KILN_I64, 1, (const int64_t[]){kiln_tensor_dim(t, 0)});
    kiln_loader *l = kiln_loader_new(t, labels, 1 + (int64_t)(size % 97), true, size, KILN_LAST_BATCH_KEEP);
    /* A loader may refuse (a batch too large to represent), saying why. */
    if (!l && kiln_last_error()[0] == '\0') abort();
    kiln_tensor *x, *y;
    while (l && kiln_loader_next(l, &x, &y) == KILN_OK) {
      if (kiln_wait_to_read(x) != KILN_OK || kiln_wait_to_read(y) != KILN_OK) abort();
      kiln_tensor_release(x);
      kiln_tensor_release(y);
    }
    kiln_loader_free(l);
    kiln_tensor_release(labels);
  }
  kiln_tensor_release(t);
  return 0;
}
