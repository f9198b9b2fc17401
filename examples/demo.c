/* kiln's main job, for now: eager ops, run as they are called, with every
 * intermediate value printable. Later issues grow this into train ->
 * hybridize -> export -> run the export. */
#include <stdio.h>

#include "kiln.h"

static int check(const kiln_tensor *t) {
  if (kiln_tensor_status(t) == KILN_OK) return 0;
  fprintf(stderr, "demo: %s\n", kiln_tensor_error(t));
  return 1;
}

int main(void) {
  kiln_scope_begin();
  kiln_seed(42);

  printf("== creation\n");
  kiln_tensor *a = kiln_arange(0, 6, 1, KILN_F32);
  kiln_tensor *m = kiln_reshape(a, 2, (int64_t[]){2, 3});
  kiln_tensor_print(m, stdout);
  kiln_tensor_print(kiln_eye(3, 3, KILN_F32), stdout);

  printf("== elementwise with broadcasting: m * [10, 20, 30] + 1\n");
  kiln_tensor *row = kiln_from_data(KILN_F32, 1, (int64_t[]){3}, (float[]){10, 20, 30});
  kiln_tensor *y = kiln_add_scalar(kiln_mul(m, row), 1);
  kiln_tensor_print(y, stdout);

  printf("== views: transpose and a stepped slice share storage\n");
  kiln_tensor *t = kiln_transpose(y, 0, 1);
  kiln_tensor_print(t, stdout);
  kiln_tensor_print(kiln_slice(t, 0, 0, KILN_END, 2), stdout);

  printf("== reductions\n");
  kiln_tensor_print(kiln_sum(y, 1, (int[]){0}, false), stdout);
  kiln_tensor_print(kiln_mean(y, 0, NULL, false), stdout);
  kiln_tensor_print(kiln_argmax(y, 1, false), stdout);

  printf("== a dense layer: relu(x . W^T + b) then softmax\n");
  kiln_tensor *x = kiln_random_normal(NULL, 0, 1, KILN_F32, 2, (int64_t[]){4, 8});
  kiln_tensor *w = kiln_random_uniform(NULL, -0.5, 0.5, KILN_F32, 2, (int64_t[]){3, 8});
  kiln_tensor *b = kiln_zeros(KILN_F32, 1, (int64_t[]){3});
  kiln_tensor *probs = kiln_softmax(kiln_relu(kiln_linear(x, w, b)), -1);
  kiln_tensor_print(probs, stdout);
  kiln_tensor *labels = kiln_from_data(KILN_I64, 1, (int64_t[]){4}, (int64_t[]){0, 1, 2, 1});
  kiln_tensor *loss = kiln_softmax_cross_entropy(kiln_linear(x, w, b), labels);
  double value;
  if (kiln_tensor_item(loss, &value) == KILN_OK) printf("cross-entropy loss: %.6f\n", value);

  printf("== a convolution and a pool on a 1x1x6x6 image\n");
  kiln_tensor *img = kiln_reshape(kiln_arange(0, 36, 1, KILN_F32), 4, (int64_t[]){1, 1, 6, 6});
  kiln_tensor *k = kiln_full(KILN_F32, 4, (int64_t[]){1, 1, 3, 3}, 1.0 / 9);
  kiln_tensor *conv = kiln_conv2d(img, k, NULL, NULL);
  kiln_tensor_print(conv, stdout);
  kiln_pool2d_params pool = kiln_pool2d_params_default(2, 2);
  kiln_tensor_print(kiln_max_pool2d(conv, &pool), stdout);

  printf("== errors travel with values: [2,3] + [4] fails, and so does what uses it\n");
  kiln_tensor *bad = kiln_add(m, kiln_ones(KILN_F32, 1, (int64_t[]){4}));
  kiln_tensor *worse = kiln_exp(bad);
  printf("status: %s\nmessage: %s\n", kiln_status_name(kiln_tensor_status(worse)), kiln_tensor_error(worse));

  int rc = check(y) | check(probs) | check(loss) | check(conv);
  kiln_scope_end();
  return rc;
}
