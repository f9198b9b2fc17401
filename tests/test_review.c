/* Regression tests for the findings of an independent review: each failed
 * on the code as reviewed and names the bug it exposed (now fixed).
 * Expected values come from numpy/torch (commands in the comments), not from
 * kiln. */
#include <stdio.h>
#include <string.h>

#include "testutil.h"

/* Was a bug: src/tensor/tensor.c contiguous_strides (via tensor_new) multiplies the
 * non-zero dims of a shape without an overflow check, and
 * tensor_checked_numel accepts any shape with a zero dim because the element
 * count is 0. So kiln_zeros of [0, 2^32, 2^32] computes the stride of dim 0
 * as 2^32 * 2^32: signed overflow (UBSan aborts the sanitizer build at
 * tensor.c:27), and the release build hands out a tensor whose strides have
 * wrapped. numpy refuses the shape:
 *   /usr/bin/python3 -c "import numpy as np; np.zeros((0,2**32,2**32),np.float32)"
 *   -> ValueError: array is too big; `arr.size * arr.dtype.itemsize` is larger
 *      than the maximum possible size.
 * Expected: a failed tensor with KILN_ERR_OVERFLOW naming the shape. */
static void zero_size_shape_with_overflowing_strides_fails(void **state) {
  (void)state;
  const int64_t big = (int64_t)1 << 32;
  kiln_tensor *t = tu_track(kiln_zeros(KILN_F32, 3, TU_SHAPE(0, big, big)));
  TU_FAILS(t, KILN_ERR_OVERFLOW, "[0, 4294967296, 4294967296]");
}

/* Was a bug: src/ops/layout.c squeeze_infer reads x->shape[only] after
 * kiln_op_axis accepted axis 0 for a 0-d tensor (as torch does), so it reads
 * a dim the tensor does not have and fails with the false message
 * "squeeze: axis 0 has size 0, not 1". kiln_op_axis follows torch for 0-d
 * tensors, and torch squeezes a 0-d tensor along dim 0 to itself:
 *   /usr/bin/python3 -c "import torch; t=torch.tensor(3.).squeeze(0); print(t, t.dim())"
 *   -> tensor(3.) 0 */
static void squeeze_0d_axis_0_is_identity(void **state) {
  (void)state;
  kiln_tensor *x = tu_track(kiln_full(KILN_F32, 0, NULL, 3.0));
  kiln_tensor *s = tu_track(kiln_squeeze(x, 0));
  TU_OK(s);
  assert_int_equal(kiln_tensor_ndim(s), 0);
  double v = 0;
  assert_int_equal(kiln_tensor_item(s, &v), KILN_OK);
  assert_true(v == 3.0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(zero_size_shape_with_overflowing_strides_fails, tu_release_tracked),
      cmocka_unit_test_teardown(squeeze_0d_axis_0_is_identity, tu_release_tracked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
