/* kiln's main job, the d2l chapter "Computational Performance" in one
 * program (`make demo`):
 *
 *   1. imperative: LeNet's ops run as they are called, and any value can be
 *      printed;
 *   2. one epoch of training, eager;
 *   3. hybridize: the same block traced once and compiled, one more epoch;
 *   4. export: the compiled model to NAME.kiln.json and NAME.safetensors;
 *   5. describe the export and run it with the kiln command, no block
 *      code, on the test set, and check its accuracy is the one measured
 *      in process.
 *
 * It prints a table of both epochs (seconds, loss, test accuracy) and
 * writes the loss curve (CSV and SVG). Data: Fashion-MNIST from Debian's
 * dataset-fashion-mnist; without it, a synthetic task of the same shapes,
 * saying so.
 *
 *   demo [--out DIR] [--kiln PATH-TO-KILN-COMMAND] [--limit N] */
#include <errno.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kiln.h"

#ifndef KILN_TOOL
#define KILN_TOOL "kiln" /* from PATH */
#endif

extern char **environ;

enum { BATCH = 256, MAX_BATCHES = 1024 };

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int fail(const char *what) {
  fprintf(stderr, "demo: %s: %s\n", what, kiln_last_error());
  return 1;
}

/* d2l's LeNet with ReLU and max-pooling; the first layers' input sizes
 * are left to the first forward. */
static kiln_block *lenet(void) {
  kiln_block *net = kiln_nn_sequential();
  kiln_conv2d_layer_params c1 = kiln_conv2d_layer_params_default(6, 5, 5), c2 = kiln_conv2d_layer_params_default(16, 5, 5);
  c1.conv.padding[0] = c1.conv.padding[1] = 2;
  c1.activation = c2.activation = KILN_ACT_RELU;
  kiln_pool2d_params pool = kiln_pool2d_params_default(2, 2);
  kiln_block_add_child(net, NULL, kiln_nn_conv2d(&c1));
  kiln_block_add_child(net, NULL, kiln_nn_max_pool2d(&pool));
  kiln_block_add_child(net, NULL, kiln_nn_conv2d(&c2));
  kiln_block_add_child(net, NULL, kiln_nn_max_pool2d(&pool));
  kiln_block_add_child(net, NULL, kiln_nn_dense(120, KILN_ACT_RELU));
  kiln_block_add_child(net, NULL, kiln_nn_dense(84, KILN_ACT_RELU));
  kiln_block_add_child(net, NULL, kiln_nn_dense(10, KILN_ACT_NONE));
  return net;
}

/* ------------------------------------------------------------ data */

typedef struct {
  kiln_tensor *train_x, *train_y, *test_x, *test_y; /* float32 [N, 1, 28, 28] in [0, 1]; uint8 labels */
  bool synthetic;
} dataset;

/* Fashion-MNIST scaled to [0, 1] once, as PyTorch's loaders hold it. */
static kiln_status load_fashion_mnist(dataset *d, int64_t limit) {
  kiln_tensor *tx, *ty, *vx, *vy;
  kiln_status st = kiln_fashion_mnist_load(NULL, true, &tx, &ty);
  if (st == KILN_OK && (st = kiln_fashion_mnist_load(NULL, false, &vx, &vy)) != KILN_OK) {
    kiln_tensor_release(tx);
    kiln_tensor_release(ty);
  }
  if (st != KILN_OK) return st;
  kiln_scope_begin();
  if (limit > 0 && limit < kiln_tensor_dim(tx, 0)) {
    kiln_tensor *sx = kiln_slice(tx, 0, 0, limit, 1), *sy = kiln_keep(kiln_slice(ty, 0, 0, limit, 1));
    kiln_tensor_release(ty);
    ty = sy;
    kiln_tensor *old = tx;
    tx = kiln_keep(sx);
    kiln_tensor_release(old);
  }
  int64_t n = kiln_tensor_dim(tx, 0), m = kiln_tensor_dim(vx, 0);
  d->train_x = kiln_keep(kiln_mul_scalar(kiln_reshape(kiln_cast(tx, KILN_F32), 4, (int64_t[]){n, 1, 28, 28}), 1.0 / 255));
  d->test_x = kiln_keep(kiln_mul_scalar(kiln_reshape(kiln_cast(vx, KILN_F32), 4, (int64_t[]){m, 1, 28, 28}), 1.0 / 255));
  kiln_scope_end();
  kiln_tensor_release(tx);
  kiln_tensor_release(vx);
  d->train_y = ty;
  d->test_y = vy;
  return kiln_tensor_status(d->test_x) != KILN_OK ? kiln_tensor_status(d->test_x) : kiln_tensor_status(d->train_x);
}

/* Ten classes, each a random 28x28 pattern, seen through noise: learnable
 * in an epoch, with the dataset's shapes and dtypes. */
static kiln_status make_synthetic(dataset *d, int64_t train_n, int64_t test_n) {
  kiln_scope_begin();
  kiln_tensor *patterns = kiln_cast(kiln_greater(kiln_random_uniform(NULL, 0, 1, KILN_F32, 4, (int64_t[]){10, 1, 28, 28}),
                                                kiln_full(KILN_F32, 0, NULL, 0.5)),
                                   KILN_F32); /* black and white */
  kiln_tensor **xs[2] = {&d->train_x, &d->test_x}, **ys[2] = {&d->train_y, &d->test_y};
  int64_t ns[2] = {train_n, test_n};
  for (int k = 0; k < 2; k++) {
    kiln_tensor *label = kiln_floor(kiln_random_uniform(NULL, 0, 10, KILN_F32, 1, &ns[k]));
    kiln_tensor *noise = kiln_random_normal(NULL, 0, 0.3, KILN_F32, 4, (int64_t[]){ns[k], 1, 28, 28});
    *xs[k] = kiln_keep(kiln_clip(kiln_add(kiln_take(patterns, kiln_cast(label, KILN_I64), 0), noise), 0, 1));
    *ys[k] = kiln_keep(kiln_cast(label, KILN_U8));
  }
  kiln_scope_end();
  d->synthetic = true;
  return kiln_tensor_status(d->train_x) != KILN_OK ? kiln_tensor_status(d->train_x) : kiln_tensor_status(d->test_y);
}

/* ------------------------------------------------------------ training */

typedef struct {
  double seconds, loss, test_acc;
  int batches;
  double batch_loss[MAX_BATCHES];
} epoch_result;

static double metric_value(kiln_metric *m) {
  double v = NAN;
  kiln_metric_get(m, &v, NULL);
  return v;
}

static double evaluate(kiln_block *net, const dataset *d) {
  kiln_loader *test = kiln_loader_new(d->test_x, d->test_y, 1000, false, 0, KILN_LAST_BATCH_KEEP);
  kiln_metric *acc = kiln_metric_new(KILN_METRIC_ACCURACY);
  kiln_tensor *x, *y;
  while (test && acc && kiln_loader_next(test, &x, &y) == KILN_OK) {
    kiln_scope_begin();
    kiln_metric_update(acc, kiln_block_call(net, x), y);
    kiln_tensor_release(x);
    kiln_tensor_release(y);
    kiln_scope_end();
  }
  double v = acc ? metric_value(acc) : NAN;
  kiln_metric_free(acc);
  kiln_loader_free(test);
  return v;
}

/* One epoch; each batch's loss is read after the epoch (reading it at
 * once would wait for the batch and keep the engine from running ahead). */
static kiln_status train_epoch(kiln_block *net, kiln_trainer *trainer, kiln_loader *train, const char *mode, epoch_result *r) {
  kiln_tensor *losses[MAX_BATCHES] = {0};
  kiln_tensor *x, *y;
  kiln_status st;
  int64_t total = kiln_loader_num_batches(train);
  bool tty = isatty(2);
  double t0 = now();
  r->batches = 0;
  while ((st = kiln_loader_next(train, &x, &y)) == KILN_OK && r->batches < MAX_BATCHES) {
    kiln_scope_begin();
    kiln_record_begin(true);
    kiln_tensor *loss = kiln_softmax_cross_entropy(kiln_block_call(net, x), y);
    kiln_record_end();
    st = kiln_backward(loss, NULL, false);
    if (st == KILN_OK) st = kiln_trainer_step(trainer, 1); /* the loss is the batch mean already */
    losses[r->batches++] = kiln_keep(loss);
    kiln_tensor_release(x);
    kiln_tensor_release(y);
    kiln_scope_end();
    if (st != KILN_OK) break;
    if (tty && (r->batches % 10 == 0 || r->batches == total)) {
      int width = 30, fill = (int)(width * r->batches / (total ? total : 1));
      fprintf(stderr, "\r  %-10s [", mode);
      for (int i = 0; i < width; i++) fputc(i < fill ? '=' : i == fill ? '>' : ' ', stderr);
      fprintf(stderr, "] %d/%lld batches, %.1f s", r->batches, (long long)total, now() - t0);
    }
  }
  if (st == KILN_ERR_OUT_OF_RANGE) st = KILN_OK; /* the loader's end of epoch */
  if (st == KILN_OK) st = kiln_waitall();
  r->seconds = now() - t0;
  if (tty) fprintf(stderr, "\r%*s\r", 80, "");
  double sum = 0;
  for (int i = 0; i < r->batches; i++) {
    if (st == KILN_OK) st = kiln_tensor_item(losses[i], &r->batch_loss[i]);
    sum += r->batch_loss[i];
    kiln_tensor_release(losses[i]);
  }
  r->loss = r->batches ? sum / r->batches : NAN;
  return st;
}

/* The per-batch loss of both epochs, as CSV and as an SVG plot, the
 * hybridized epoch in its own colour. */
static void write_curve(const char *dir, const epoch_result *r, int epochs) {
  char path[1024];
  snprintf(path, sizeof path, "%s/loss.csv", dir);
  FILE *f = fopen(path, "w");
  if (f) {
    fprintf(f, "epoch,batch,loss\n");
    for (int e = 0; e < epochs; e++)
      for (int b = 0; b < r[e].batches; b++) fprintf(f, "%d,%d,%.6f\n", e + 1, b + 1, r[e].batch_loss[b]);
    fclose(f);
  }
  snprintf(path, sizeof path, "%s/loss.svg", dir);
  if (!(f = fopen(path, "w"))) return;
  const int w = 640, h = 360, left = 60, right = 20, top = 20, bottom = 50;
  int n = 0;
  double ymax = 0;
  for (int e = 0; e < epochs; e++)
    for (int b = 0; b < r[e].batches; b++) n++, ymax = fmax(ymax, r[e].batch_loss[b]);
  ymax = ymax > 0 ? ymax : 1;
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
             "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", w, h);
  fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", left, h - bottom, w - right, h - bottom);
  fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", left, top, left, h - bottom);
  fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">batch</text>\n", (left + w - right) / 2, h - 15);
  for (int k = 0; k <= 4; k++)
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.2f</text>\n", left - 5,
            h - bottom - (h - top - bottom) * k / 4 + 4, ymax * k / 4);
  static const char *colors[2] = {"#1f77b4", "#d62728"}, *names[2] = {"eager", "hybridized"};
  int i = 0;
  for (int e = 0; e < epochs; e++) {
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", colors[e % 2]);
    for (int b = 0; b < r[e].batches; b++, i++)
      fprintf(f, "%.1f,%.1f ", left + (double)(w - left - right) * i / (n > 1 ? n - 1 : 1),
              h - bottom - (double)(h - top - bottom) * r[e].batch_loss[b] / ymax);
    fprintf(f, "\"/>\n<text x=\"%d\" y=\"%d\" fill=\"%s\">epoch %d, %s</text>\n", w - right - 140, top + 15 * (e + 1),
            colors[e % 2], e + 1, names[e % 2]);
  }
  fprintf(f, "</svg>\n");
  fclose(f);
}

/* ------------------------------------------------------------ the export, run by the kiln command */

static int run_command(char *const *argv) {
  printf("  $");
  for (int i = 0; argv[i]; i++) printf(" %s", argv[i]);
  printf("\n");
  fflush(stdout);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
  if (rc != 0) {
    fprintf(stderr, "demo: cannot run %s: %s\n", argv[0], strerror(rc));
    return -1;
  }
  int status;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The accuracy of logits [N, 10] against uint8 labels. */
static double accuracy_of(kiln_tensor *logits, kiln_tensor *labels) {
  kiln_metric *acc = kiln_metric_new(KILN_METRIC_ACCURACY);
  double v = NAN;
  if (acc && kiln_metric_update(acc, logits, labels) == KILN_OK) v = metric_value(acc);
  kiln_metric_free(acc);
  return v;
}

int main(int argc, char **argv) {
  const char *out = "demo_out", *tool = KILN_TOOL;
  int64_t limit = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
    else if (!strcmp(argv[i], "--kiln") && i + 1 < argc) tool = argv[++i];
    else if (!strcmp(argv[i], "--limit") && i + 1 < argc) limit = atoll(argv[++i]);
    else {
      fprintf(stderr, "usage: %s [--out DIR] [--kiln PATH] [--limit N]\n", argv[0]);
      return 2;
    }
  }
  if (mkdir(out, 0777) != 0 && errno != EEXIST) {
    fprintf(stderr, "demo: cannot create %s: %s\n", out, strerror(errno));
    return 1;
  }
  double start = now();
  kiln_seed(0);
  printf("kiln demo: d2l \"Computational Performance\" in one program\n");
  dataset d = {0};
  if (load_fashion_mnist(&d, limit) != KILN_OK) {
    printf("Fashion-MNIST is not here (%s).\nUsing a synthetic task of the same shapes instead: 10 noisy patterns.\n",
           kiln_last_error());
    if (make_synthetic(&d, limit > 0 ? limit : 20000, 2000) != KILN_OK) return fail("synthetic data");
  }
  printf("data: %s, %lld training and %lld test images\n", d.synthetic ? "synthetic" : "Fashion-MNIST",
         (long long)kiln_tensor_dim(d.train_x, 0), (long long)kiln_tensor_dim(d.test_x, 0));
  printf("model: LeNet (conv 5x5x6, max-pool, conv 5x5x16, max-pool, dense 120, 84, 10), SGD lr 0.3, batch %d\n", BATCH);

  kiln_block *net = lenet();
  if (kiln_block_initialize(net, NULL, false) != KILN_OK) return fail("model");
  kiln_optimizer_params op = kiln_optimizer_params_default(KILN_OPT_SGD);
  op.lr = 0.3;
  kiln_trainer *trainer = kiln_trainer_new(net, &op);
  kiln_loader *train = kiln_loader_new(d.train_x, d.train_y, BATCH, true, 1, KILN_LAST_BATCH_KEEP);
  if (!trainer || !train) return fail("trainer");

  printf("\n== 1. imperative: each op runs as it is called; any value can be printed\n");
  kiln_scope_begin();
  kiln_tensor *first = kiln_slice(d.train_x, 0, 0, 2, 1);
  kiln_tensor *conv = kiln_block_call(kiln_block_child(net, 0), first);
  printf("  conv1 on two images: %s, channel 0 of image 0, row 14, columns 8 to 15:\n  ", kiln_tensor_status(conv) == KILN_OK ? "ok" : "failed");
  kiln_tensor_print(kiln_slice(kiln_slice(kiln_slice(kiln_slice(conv, 0, 0, 1, 1), 1, 0, 1, 1), 2, 14, 15, 1), 3, 8, 16, 1),
                    stdout);
  printf("  logits of image 0 before training:\n  ");
  kiln_tensor_print(kiln_slice(kiln_block_call(net, first), 0, 0, 1, 1), stdout);
  kiln_scope_end();

  epoch_result *r = calloc(2, sizeof *r);
  if (!r) return 1;
  printf("\n== 2. one epoch, eager\n");
  if (train_epoch(net, trainer, train, "eager", &r[0]) != KILN_OK) return fail("training");
  r[0].test_acc = evaluate(net, &d);

  printf("\n== 3. hybridize: the same block, traced once per input shape and compiled; one more epoch\n");
  if (kiln_block_hybridize(net, NULL) != KILN_OK) return fail("hybridize");
  kiln_loader_reset(train);
  if (train_epoch(net, trainer, train, "hybridized", &r[1]) != KILN_OK) return fail("training");
  r[1].test_acc = evaluate(net, &d);
  printf("  trace log:\n");
  for (const char *line = kiln_block_trace_log(net); *line;) {
    const char *end = strchr(line, '\n');
    int len = end ? (int)(end - line) : (int)strlen(line);
    printf("    %.*s\n", len, line);
    line += len + (end != NULL);
  }

  printf("\n  %-6s %-11s %9s %11s %10s\n", "epoch", "mode", "seconds", "train loss", "test acc");
  for (int e = 0; e < 2; e++)
    printf("  %-6d %-11s %9.2f %11.4f %10.4f\n", e + 1, e ? "hybridized" : "eager", r[e].seconds, r[e].loss, r[e].test_acc);
  printf("  hybridized epoch / eager epoch: %.2f\n", r[1].seconds / r[0].seconds);
  write_curve(out, r, 2);
  printf("  loss curve: %s/loss.svg (and .csv)\n", out);

  printf("\n== 4. export: the compiled model, any batch size\n");
  char prefix[1024], input[1100], output[1100];
  snprintf(prefix, sizeof prefix, "%s/lenet", out);
  kiln_export_options eo = {.dynamic_batch = true};
  if (kiln_block_export_ex(net, prefix, &eo) != KILN_OK) return fail("export");
  printf("  %s.kiln.json, %s.safetensors\n", prefix, prefix);

  printf("\n== 5. run the export with the kiln command, no block code, on the test set\n");
  snprintf(input, sizeof input, "%s/test_images.npy", out);
  snprintf(output, sizeof output, "%s/test_logits.npy", out);
  if (kiln_save_npy(d.test_x, input) != KILN_OK) return fail("saving the test images");
  char *info[] = {(char *)tool, "info", prefix, NULL};
  int rc = run_command(info);
  if (rc != 0) {
    fprintf(stderr, "demo: %s info exited with %d\n", tool, rc);
    return 1;
  }
  char *run[] = {(char *)tool, "run", prefix, "--input", input, "--output", output, NULL};
  rc = run_command(run);
  if (rc != 0) {
    fprintf(stderr, "demo: %s run exited with %d\n", tool, rc);
    return 1;
  }
  kiln_scope_begin();
  kiln_tensor *logits = kiln_load_npy(output);
  double exported = accuracy_of(logits, d.test_y);
  kiln_scope_end();
  bool same = exported == r[1].test_acc;
  printf("  test accuracy of the exported model: %.4f; in process: %.4f: %s\n", exported, r[1].test_acc,
         same ? "the same" : "DIFFERENT");

  printf("\ndone in %.0f s\n", now() - start);
  free(r);
  kiln_loader_free(train);
  kiln_trainer_free(trainer);
  kiln_block_release(net);
  kiln_tensor_release(d.train_x);
  kiln_tensor_release(d.train_y);
  kiln_tensor_release(d.test_x);
  kiln_tensor_release(d.test_y);
  return same ? 0 : 1;
}
