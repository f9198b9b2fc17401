/* The training smoke test: the MLP 784-256-10 trained eagerly (autograd,
 * SGD lr 0.1, batch 64, the loader) on the first 2 000 Fashion-MNIST
 * training images must reach 0.70 accuracy on the first 1 000 test images
 * after 10 epochs (it reaches 0.764, the same in threaded and naive mode;
 * chance is 0.10, and a broken gradient or update stays far below).
 * And the layers together: a small CNN of blocks (Conv2D, BatchNorm,
 * Activation, MaxPool2D, Flatten, Dropout, Dense) trained by the trainer
 * with Adam and a cosine schedule, measured by the accuracy metric, must
 * reach 0.75 on the same data after 3 epochs (it reaches 0.823).
 * Skipped, saying so, when Debian's dataset-fashion-mnist is not installed
 * (CI installs it). */
#include <math.h>
#include <stdio.h>

#include "testutil.h"

enum { EPOCHS = 10 };

static kiln_tensor *forward(kiln_tensor *const *p, kiln_tensor *x) {
  kiln_tensor *flat = kiln_reshape(x, 2, (int64_t[]){kiln_tensor_dim(x, 0), 784});
  return kiln_linear(kiln_relu(kiln_linear(flat, p[0], p[1])), p[2], p[3]);
}

static void mlp_learns(void **state) {
  (void)state;
  kiln_tensor *images, *labels, *test_images, *test_labels;
  if (kiln_fashion_mnist_load(NULL, true, &images, &labels) != KILN_OK) {
    fprintf(stderr, "skipped: %s\n", kiln_last_error());
    skip();
  }
  assert_int_equal(kiln_fashion_mnist_load(NULL, false, &test_images, &test_labels), KILN_OK);
  kiln_scope_begin();
  kiln_tensor *x = kiln_slice(images, 0, 0, 2000, 1), *y = kiln_slice(labels, 0, 0, 2000, 1);
  kiln_tensor *tx = kiln_slice(test_images, 0, 0, 1000, 1), *ty = kiln_slice(test_labels, 0, 0, 1000, 1);
  kiln_loader *train = kiln_loader_new(x, y, 64, true, 7, KILN_LAST_BATCH_KEEP);
  kiln_loader *test = kiln_loader_new(tx, ty, 1000, false, 0, KILN_LAST_BATCH_KEEP);
  assert_non_null(train);
  assert_non_null(test);
  kiln_seed(3);
  double a1 = sqrt(6.0 / (784 + 256)), a2 = sqrt(6.0 / (256 + 10));
  kiln_tensor *p[4] = {kiln_keep(kiln_random_uniform(NULL, -a1, a1, KILN_F32, 2, (int64_t[]){256, 784})),
                       kiln_keep(kiln_zeros(KILN_F32, 1, (int64_t[]){256})),
                       kiln_keep(kiln_random_uniform(NULL, -a2, a2, KILN_F32, 2, (int64_t[]){10, 256})),
                       kiln_keep(kiln_zeros(KILN_F32, 1, (int64_t[]){10}))};
  kiln_scope_end();
  for (int i = 0; i < 4; i++) assert_int_equal(kiln_attach_grad(p[i], KILN_GRAD_WRITE), KILN_OK);
  kiln_optimizer_params op = kiln_optimizer_params_default(KILN_OPT_SGD);
  op.lr = 0.1;
  kiln_optimizer *sgd = kiln_optimizer_new(&op, 4, p);
  assert_non_null(sgd);
  for (int epoch = 0; epoch < EPOCHS; epoch++) {
    kiln_tensor *bx, *by;
    if (epoch) kiln_loader_reset(train);
    while (kiln_loader_next(train, &bx, &by) == KILN_OK) {
      kiln_scope_begin();
      kiln_record_begin(true);
      kiln_tensor *loss = kiln_softmax_cross_entropy(forward(p, bx), by);
      kiln_record_end();
      assert_int_equal(kiln_backward(loss, NULL, false), KILN_OK);
      assert_int_equal(kiln_optimizer_step(sgd, 1), KILN_OK);
      kiln_tensor_release(bx);
      kiln_tensor_release(by);
      kiln_scope_end();
    }
  }
  kiln_tensor *bx, *by;
  assert_int_equal(kiln_loader_next(test, &bx, &by), KILN_OK);
  kiln_scope_begin();
  double right = 0;
  kiln_tensor *hits = kiln_sum(kiln_cast(kiln_equal(kiln_argmax(forward(p, bx), 1, false), by), KILN_F32), 0, NULL, false);
  assert_int_equal(kiln_tensor_item(hits, &right), KILN_OK);
  kiln_scope_end();
  fprintf(stderr, "test accuracy after %d epochs on 2 000 samples: %.3f\n", EPOCHS, right / 1000);
  assert_true(right / 1000 >= 0.70);
  kiln_tensor_release(bx);
  kiln_tensor_release(by);
  kiln_optimizer_free(sgd);
  kiln_loader_free(train);
  kiln_loader_free(test);
  for (int i = 0; i < 4; i++) kiln_tensor_release(p[i]);
  kiln_tensor_release(images);
  kiln_tensor_release(labels);
  kiln_tensor_release(test_images);
  kiln_tensor_release(test_labels);
}

static void cnn_of_blocks_learns(void **state) {
  (void)state;
  kiln_tensor *images, *labels, *test_images, *test_labels;
  if (kiln_fashion_mnist_load(NULL, true, &images, &labels) != KILN_OK) {
    fprintf(stderr, "skipped: %s\n", kiln_last_error());
    skip();
  }
  assert_int_equal(kiln_fashion_mnist_load(NULL, false, &test_images, &test_labels), KILN_OK);
  kiln_scope_begin();
  kiln_loader *train = kiln_loader_new(kiln_slice(images, 0, 0, 2000, 1), kiln_slice(labels, 0, 0, 2000, 1), 64, true, 7,
                                       KILN_LAST_BATCH_KEEP);
  kiln_loader *test = kiln_loader_new(kiln_slice(test_images, 0, 0, 1000, 1), kiln_slice(test_labels, 0, 0, 1000, 1),
                                      250, false, 0, KILN_LAST_BATCH_KEEP);
  kiln_scope_end();
  assert_non_null(train);
  assert_non_null(test);
  kiln_seed(4);
  kiln_block *net = kiln_nn_sequential();
  kiln_conv2d_layer_params cp = kiln_conv2d_layer_params_default(8, 5, 5);
  cp.conv.padding[0] = cp.conv.padding[1] = 2;
  cp.use_bias = false; /* BatchNorm's beta is the bias */
  kiln_pool2d_params pool = kiln_pool2d_params_default(2, 2);
  kiln_block_add_child(net, NULL, kiln_nn_conv2d(&cp));
  kiln_block_add_child(net, NULL, kiln_nn_batch_norm(0, 0.9, 1e-5));
  kiln_block_add_child(net, NULL, kiln_nn_activation(KILN_ACT_RELU));
  kiln_block_add_child(net, NULL, kiln_nn_max_pool2d(&pool));
  kiln_block_add_child(net, NULL, kiln_nn_flatten());
  kiln_block_add_child(net, NULL, kiln_nn_dropout(0.2));
  assert_int_equal(kiln_block_add_child(net, NULL, kiln_nn_dense(10, KILN_ACT_NONE)), KILN_OK);
  kiln_init kaiming = kiln_init_kaiming(true, 0);
  assert_int_equal(kiln_block_initialize(net, &kaiming, false), KILN_OK);
  kiln_optimizer_params op = kiln_optimizer_params_default(KILN_OPT_ADAM);
  op.lr = 0.005;
  kiln_trainer *trainer = kiln_trainer_new(net, &op);
  const int epochs = 3;
  kiln_lr_schedule cosine = {.kind = KILN_LR_COSINE, .total_steps = epochs * kiln_loader_num_batches(train),
                             .final_lr = 0.0005};
  assert_int_equal(kiln_trainer_set_schedule(trainer, &cosine), KILN_OK);
  for (int epoch = 0; epoch < epochs; epoch++) {
    kiln_tensor *bx, *by;
    if (epoch) kiln_loader_reset(train);
    while (kiln_loader_next(train, &bx, &by) == KILN_OK) {
      kiln_scope_begin();
      kiln_record_begin(true);
      kiln_tensor *loss = kiln_softmax_cross_entropy(kiln_block_call(net, bx), by);
      kiln_record_end();
      assert_int_equal(kiln_backward(loss, NULL, false), KILN_OK);
      assert_int_equal(kiln_trainer_step(trainer, 1), KILN_OK);
      kiln_tensor_release(bx);
      kiln_tensor_release(by);
      kiln_scope_end();
    }
  }
  kiln_metric *acc = kiln_metric_new(KILN_METRIC_ACCURACY);
  kiln_tensor *bx, *by;
  while (kiln_loader_next(test, &bx, &by) == KILN_OK) {
    kiln_scope_begin();
    assert_int_equal(kiln_metric_update(acc, kiln_block_call(net, bx), by), KILN_OK);
    kiln_tensor_release(bx);
    kiln_tensor_release(by);
    kiln_scope_end();
  }
  double accuracy;
  int64_t counted;
  assert_int_equal(kiln_metric_get(acc, &accuracy, &counted), KILN_OK);
  fprintf(stderr, "CNN of blocks: test accuracy after %d epochs on 2 000 samples: %.3f\n", epochs, accuracy);
  assert_int_equal(counted, 1000);
  assert_true(accuracy >= 0.75);
  kiln_metric_free(acc);
  kiln_trainer_free(trainer);
  kiln_block_release(net);
  kiln_loader_free(train);
  kiln_loader_free(test);
  kiln_tensor_release(images);
  kiln_tensor_release(labels);
  kiln_tensor_release(test_images);
  kiln_tensor_release(test_labels);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(mlp_learns), cmocka_unit_test(cnn_of_blocks_learns)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
