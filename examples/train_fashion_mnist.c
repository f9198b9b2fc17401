/* Trains the MLP 784-256-10 (ReLU) or LeNet (d2l's, with ReLU and
 * max-pooling) on Fashion-MNIST from Debian's dataset-fashion-mnist package,
 * eagerly: autograd, softmax cross-entropy, SGD, the loader preparing
 * batches on the engine. Prints per-epoch train loss and accuracy and test
 * accuracy, a progress bar on stderr when it is a terminal, and writes the
 * curve as CSV and as an SVG plot.
 *
 *   train_fashion_mnist [--model mlp|lenet] [--epochs N] [--batch B] [--lr LR] [--limit N] [--out PREFIX] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kiln.h"

typedef struct {
  bool lenet;
  int epochs;
  int64_t batch, limit;
  double lr;
  const char *out;
} options;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int fail(const char *what) {
  fprintf(stderr, "train_fashion_mnist: %s: %s\n", what, kiln_last_error());
  return 1;
}

/* Xavier uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)). */
static kiln_tensor *xavier(int ndim, const int64_t *shape, int64_t fan_in, int64_t fan_out) {
  double a = sqrt(6.0 / (double)(fan_in + fan_out));
  return kiln_random_uniform(NULL, -a, a, KILN_F32, ndim, shape);
}

static kiln_tensor *dense_weight(int64_t out, int64_t in) { return xavier(2, (int64_t[]){out, in}, in, out); }
static kiln_tensor *conv_weight(int64_t out, int64_t in, int64_t k) {
  return xavier(4, (int64_t[]){out, in, k, k}, in * k * k, out * k * k);
}
static kiln_tensor *bias(int64_t n) { return kiln_zeros(KILN_F32, 1, (int64_t[]){n}); }

enum { MAX_PARAMS = 10 };

typedef struct {
  bool lenet;
  int n;
  kiln_tensor *p[MAX_PARAMS];
} model;

static model make_model(bool lenet) {
  model m = {.lenet = lenet};
  if (lenet) {
    kiln_tensor *p[] = {conv_weight(6, 1, 5), bias(6),  conv_weight(16, 6, 5), bias(16), dense_weight(120, 400),
                        bias(120),            dense_weight(84, 120), bias(84), dense_weight(10, 84), bias(10)};
    m.n = 10;
    memcpy(m.p, p, sizeof p);
  } else {
    kiln_tensor *p[] = {dense_weight(256, 784), bias(256), dense_weight(10, 256), bias(10)};
    m.n = 4;
    memcpy(m.p, p, sizeof p);
  }
  return m;
}

/* x: [B, 1, 28, 28] -> logits [B, 10]. */
static kiln_tensor *forward(const model *m, kiln_tensor *x) {
  int64_t b = kiln_tensor_dim(x, 0);
  kiln_tensor *const *p = m->p;
  if (!m->lenet) {
    kiln_tensor *flat = kiln_reshape(x, 2, (int64_t[]){b, 784});
    return kiln_linear(kiln_relu(kiln_linear(flat, p[0], p[1])), p[2], p[3]);
  }
  kiln_conv2d_params pad2 = kiln_conv2d_params_default();
  pad2.padding[0] = pad2.padding[1] = 2;
  kiln_pool2d_params pool = kiln_pool2d_params_default(2, 2);
  kiln_tensor *h = kiln_max_pool2d(kiln_relu(kiln_conv2d(x, p[0], p[1], &pad2)), &pool); /* [B, 6, 14, 14] */
  h = kiln_max_pool2d(kiln_relu(kiln_conv2d(h, p[2], p[3], NULL)), &pool);             /* [B, 16, 5, 5] */
  h = kiln_reshape(h, 2, (int64_t[]){b, 400});
  h = kiln_relu(kiln_linear(h, p[4], p[5]));
  h = kiln_relu(kiln_linear(h, p[6], p[7]));
  return kiln_linear(h, p[8], p[9]);
}

/* Correct predictions in a batch, as a float32 scalar tensor. */
static kiln_tensor *correct(kiln_tensor *logits, kiln_tensor *y) {
  return kiln_sum(kiln_cast(kiln_equal(kiln_argmax(logits, 1, false), y), KILN_F32), 0, NULL, false);
}

/* acc += t, keeping acc outside the current scope. */
static void accumulate(kiln_tensor **acc, kiln_tensor *t) {
  kiln_tensor *sum = kiln_keep(kiln_add(*acc, t));
  kiln_tensor_release(*acc);
  *acc = sum;
}

static double value(kiln_tensor *t) {
  double v = NAN;
  kiln_tensor_item(t, &v);
  return v;
}

static void progress(int epoch, int64_t done, int64_t total, int64_t samples, double seconds, kiln_tensor *loss_sum,
                     kiln_tensor *right) {
  int width = 30, fill = total ? (int)(width * done / total) : width;
  fprintf(stderr, "\repoch %d [", epoch);
  for (int i = 0; i < width; i++) fputc(i < fill ? '=' : i == fill ? '>' : ' ', stderr);
  fprintf(stderr, "] %lld/%lld  %.0f samples/s  loss %.4f  acc %.4f ", (long long)done, (long long)total,
          (double)samples / (seconds > 0 ? seconds : 1), value(loss_sum) / (double)(done ? done : 1),
          value(right) / (double)(samples ? samples : 1));
}

static double evaluate(const model *m, kiln_loader *test) {
  kiln_tensor *right = kiln_zeros(KILN_F32, 0, NULL), *x, *y;
  int64_t n = 0;
  kiln_loader_reset(test);
  while (kiln_loader_next(test, &x, &y) == KILN_OK) {
    kiln_scope_begin();
    n += kiln_tensor_dim(y, 0);
    accumulate(&right, correct(forward(m, x), y));
    kiln_tensor_release(x);
    kiln_tensor_release(y);
    kiln_scope_end();
  }
  double acc = value(right) / (double)(n ? n : 1);
  kiln_tensor_release(right);
  return acc;
}

static void write_plot(const char *prefix, int epochs, const double (*curve)[3]) {
  char path[1024];
  snprintf(path, sizeof path, "%s.csv", prefix);
  FILE *f = fopen(path, "w");
  if (f) {
    fprintf(f, "epoch,train_loss,train_acc,test_acc\n");
    for (int e = 0; e < epochs; e++) fprintf(f, "%d,%.6f,%.6f,%.6f\n", e + 1, curve[e][0], curve[e][1], curve[e][2]);
    fclose(f);
  }
  snprintf(path, sizeof path, "%s.svg", prefix);
  f = fopen(path, "w");
  if (!f) return;
  /* One panel, epochs on x; loss and the accuracies share the y axis (0 to
   * max(1, loss)). */
  const int w = 640, h = 400, left = 60, right = 20, top = 20, bottom = 50;
  double ymax = 1;
  for (int e = 0; e < epochs; e++) ymax = curve[e][0] > ymax ? curve[e][0] : ymax;
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
             "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", w, h);
  fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", left, h - bottom, w - right, h - bottom);
  fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", left, top, left, h - bottom);
  fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">epoch</text>\n", (left + w - right) / 2, h - 15);
  for (int k = 0; k <= 4; k++) {
    double v = ymax * k / 4;
    int y = h - bottom - (int)((h - top - bottom) * k / 4);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.2f</text>\n", left - 5, y + 4, v);
  }
  static const char *names[3] = {"train loss", "train acc", "test acc"}, *colors[3] = {"#d62728", "#1f77b4", "#2ca02c"};
  for (int s = 0; s < 3; s++) {
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colors[s]);
    for (int e = 0; e < epochs; e++) {
      double x = left + (double)(w - left - right) * (epochs > 1 ? (double)e / (epochs - 1) : 0.5);
      double y = h - bottom - (double)(h - top - bottom) * curve[e][s] / ymax;
      fprintf(f, "%.1f,%.1f ", x, y);
    }
    fprintf(f, "\"/>\n<text x=\"%d\" y=\"%d\" fill=\"%s\">%s</text>\n", w - right - 90, top + 15 * (s + 1), colors[s],
            names[s]);
  }
  fprintf(f, "</svg>\n");
  fclose(f);
}

int main(int argc, char **argv) {
  options o = {false, 3, 256, 0, -1, NULL};
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--model") && i + 1 < argc) {
      const char *name = argv[++i];
      if (strcmp(name, "mlp") && strcmp(name, "lenet")) {
        fprintf(stderr, "train_fashion_mnist: --model is mlp or lenet, not %s\n", name);
        return 2;
      }
      o.lenet = !strcmp(name, "lenet");
    } else if (!strcmp(argv[i], "--epochs") && i + 1 < argc) o.epochs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--batch") && i + 1 < argc) o.batch = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--lr") && i + 1 < argc) o.lr = atof(argv[++i]);
    else if (!strcmp(argv[i], "--limit") && i + 1 < argc) o.limit = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--out") && i + 1 < argc) o.out = argv[++i];
    else {
      fprintf(stderr, "usage: %s [--model mlp|lenet] [--epochs N] [--batch B] [--lr LR] [--limit N] [--out PREFIX]\n",
              argv[0]);
      return 2;
    }
  }
  if (o.lr < 0) o.lr = o.lenet ? 0.3 : 0.1;
  if (!o.out) o.out = o.lenet ? "fashion_mnist_lenet" : "fashion_mnist_mlp";
  if (o.epochs < 1 || o.epochs > 1000 || o.batch < 1) {
    fprintf(stderr, "train_fashion_mnist: --epochs must be 1 to 1000 and --batch positive\n");
    return 2;
  }
  kiln_seed(0);
  kiln_tensor *train_x, *train_y, *test_x, *test_y;
  if (kiln_fashion_mnist_load(NULL, true, &train_x, &train_y) != KILN_OK) return fail("training set");
  if (kiln_fashion_mnist_load(NULL, false, &test_x, &test_y) != KILN_OK) return fail("test set");
  if (o.limit > 0 && o.limit < kiln_tensor_dim(train_x, 0)) {
    kiln_tensor *sx = kiln_slice(train_x, 0, 0, o.limit, 1), *sy = kiln_slice(train_y, 0, 0, o.limit, 1);
    kiln_tensor_release(train_x);
    kiln_tensor_release(train_y);
    train_x = sx, train_y = sy;
  }
  kiln_loader *train = kiln_loader_new(train_x, train_y, o.batch, true, 1, KILN_LAST_BATCH_KEEP);
  kiln_loader *test = kiln_loader_new(test_x, test_y, 1000, false, 0, KILN_LAST_BATCH_KEEP);
  if (!train || !test) return fail("loader");

  model m = make_model(o.lenet);
  for (int i = 0; i < m.n; i++)
    if (kiln_attach_grad(m.p[i], KILN_GRAD_WRITE) != KILN_OK) return fail("attach_grad");
  kiln_optimizer_params op = kiln_optimizer_params_default(KILN_OPT_SGD);
  op.lr = o.lr;
  kiln_optimizer *sgd = kiln_optimizer_new(&op, m.n, m.p);
  if (!sgd) return fail("optimizer");

  bool tty = isatty(2);
  double(*curve)[3] = calloc((size_t)o.epochs, sizeof *curve);
  printf("%s, SGD lr %g, batch %lld, %lld training samples\n", o.lenet ? "LeNet" : "MLP 784-256-10", o.lr,
         (long long)o.batch,
         (long long)kiln_tensor_dim(train_x, 0));
  printf("%5s %10s %10s %10s %9s %12s\n", "epoch", "loss", "train acc", "test acc", "seconds", "samples/s");
  for (int epoch = 1; epoch <= o.epochs; epoch++) {
    if (epoch > 1) kiln_loader_reset(train);
    kiln_tensor *loss_sum = kiln_zeros(KILN_F32, 0, NULL), *right = kiln_zeros(KILN_F32, 0, NULL), *x, *y;
    int64_t batches = kiln_loader_num_batches(train), done = 0, samples = 0;
    double t0 = now();
    kiln_status st;
    while ((st = kiln_loader_next(train, &x, &y)) == KILN_OK) {
      kiln_scope_begin();
      kiln_record_begin(true);
      kiln_tensor *logits = forward(&m, x);
      kiln_tensor *loss = kiln_softmax_cross_entropy(logits, y);
      kiln_record_end();
      if (kiln_backward(loss, NULL, false) != KILN_OK) return fail("backward");
      kiln_optimizer_step(sgd, 1); /* the loss is already the batch mean */
      accumulate(&loss_sum, loss);
      accumulate(&right, correct(logits, y));
      samples += kiln_tensor_dim(y, 0);
      kiln_tensor_release(x);
      kiln_tensor_release(y);
      kiln_scope_end();
      done++;
      if (tty && (done % 20 == 0 || done == batches)) progress(epoch, done, batches, samples, now() - t0, loss_sum, right);
    }
    if (st != KILN_ERR_OUT_OF_RANGE) return fail("loader");
    double train_loss = value(loss_sum) / (double)(done ? done : 1), train_acc = value(right) / (double)samples;
    double seconds = now() - t0;
    if (kiln_waitall() != KILN_OK) return fail("training");
    double test_acc = evaluate(&m, test);
    if (tty) fprintf(stderr, "\r%*s\r", 100, "");
    printf("%5d %10.4f %10.4f %10.4f %9.2f %12.0f\n", epoch, train_loss, train_acc, test_acc, seconds,
           (double)samples / seconds);
    fflush(stdout);
    curve[epoch - 1][0] = train_loss, curve[epoch - 1][1] = train_acc, curve[epoch - 1][2] = test_acc;
    kiln_tensor_release(loss_sum);
    kiln_tensor_release(right);
  }
  write_plot(o.out, o.epochs, curve);
  printf("curve: %s.csv, %s.svg\n", o.out, o.out);
  free(curve);
  kiln_optimizer_free(sgd);
  kiln_loader_free(train);
  kiln_loader_free(test);
  for (int i = 0; i < m.n; i++) kiln_tensor_release(m.p[i]);
  kiln_tensor_release(train_x);
  kiln_tensor_release(train_y);
  kiln_tensor_release(test_x);
  kiln_tensor_release(test_y);
  return 0;
}
