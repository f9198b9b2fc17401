/* Models PyTorch 1.13 exported (tests/fixtures/onnx_torch/make.py: d2l's MLP,
 * LeNet and a small residual CNN, each at opsets 14 and 17 with a dynamic
 * batch), loaded with kiln_model_load and run at batches 1 and 5 on one
 * model, against the outputs PyTorch computed for the same inputs.
 *
 * The residual CNN flattens with x.view(x.size(0), -1), which the exporter
 * writes as Shape, Gather, Unsqueeze, Concat and Reshape on the dynamic
 * batch: it loads only because the importer follows that shape to a
 * reshape that keeps dim 0, and a batch fixed at load would fail at 5.
 *
 * Tolerance: float32 throughout, the same products summed in other orders
 * (OpenBLAS and kiln's convolution against PyTorch's kernels), over at most
 * 512 terms per dot product through at most 9 layers. Outputs are below 1
 * in magnitude; the largest difference seen is 1.2e-7. rtol 1e-5 with atol
 * 1e-6 leaves room for another BLAS's summation order, and is far below
 * what a wrong op gives (a BatchNorm on batch statistics, a skipped bias or
 * activation: 1e-2 and more). */
#include <stdio.h>
#include <string.h>

#include "testutil.h"

static const struct {
  const char *name;
  int batch_norms; /* the BatchNormalization nodes the file keeps (eval mode: running statistics) */
} models[] = {{"mlp", 0}, {"lenet", 0}, {"resnet", 6}};

static const int opsets[] = {14, 17};

static void matches_pytorch(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
    for (size_t o = 0; o < sizeof opsets / sizeof opsets[0]; o++) {
      char path[1024], label[128];
      snprintf(path, sizeof path, "%s/onnx_torch/%s_op%d.onnx", KILN_FIXTURE_DIR, models[i].name, opsets[o]);
      kiln_model *m = kiln_model_load(path);
      if (!m) fail_msg("%s", kiln_last_error());
      kiln_model_value v;
      assert_int_equal(kiln_model_input(m, 0, &v), KILN_OK);
      assert_int_equal(v.shape[0], -1); /* the batch stays dynamic */
      assert_int_equal(kiln_model_output(m, 0, &v), KILN_OK);
      assert_int_equal(v.shape[0], -1);
      int bn = 0;
      for (int k = 0; k < kiln_model_num_op_kinds(m); k++) {
        const char *op;
        int count;
        assert_int_equal(kiln_model_op_count(m, k, &op, &count), KILN_OK);
        if (strcmp(op, "batch_norm") == 0) bn = count;
      }
      assert_int_equal(bn, models[i].batch_norms);
      /* 5 after 1: the plan built at one batch is rebuilt at the other. */
      for (int b = 1; b <= 5; b += 4) {
        kiln_scope_begin();
        char name[64];
        snprintf(name, sizeof name, "onnx_torch/%s_x%d", models[i].name, b);
        kiln_tensor *x = tu_fixture(name), *y;
        snprintf(name, sizeof name, "onnx_torch/%s_y%d", models[i].name, b);
        kiln_tensor *want = tu_fixture(name);
        if (kiln_model_run(m, 1, &x, &y) != KILN_OK) fail_msg("%s batch %d: %s", path, b, kiln_last_error());
        snprintf(label, sizeof label, "%s_op%d batch %d", models[i].name, opsets[o], b);
        assert_true(tu_close(label, y, want, 1e-5, 1e-6));
        kiln_scope_end();
      }
      kiln_model_free(m);
    }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(matches_pytorch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
