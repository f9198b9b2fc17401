/* Registered with WILL_FAIL: a comparison of a deliberately wrong result must
 * fail this program, proving the comparisons can fail at all. */
#include "testutil.h"

static void wrong_result_fails(void **state) {
  (void)state;
  kiln_tensor *a = kiln_full(KILN_F32, 1, (int64_t[]){4}, 1.0);
  kiln_tensor *b = kiln_add_scalar(a, 1.0); /* 2, not 1.5 */
  double expect[4] = {1.5, 1.5, 1.5, 1.5};
  assert_true(tu_close_values("deliberately wrong", b, expect, 4, 1e-6, 1e-6));
  kiln_tensor_release(a);
  kiln_tensor_release(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(wrong_result_fails)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
