/* Trains the MLP 784-256-10 (ReLU) or LeNet (d2l's, with ReLU and
 * max-pooling) on Fashion-MNIST from Debian's dataset-fashion-mnist package,
 * eagerly: autograd, softmax cross-entropy, SGD, the loader preparing
 * batches on the engine. Prints per-epoch train loss and accuracy and test
 * accuracy, a progress bar on stderr when it is a terminal, and writes the
 * curve as CSV and as an SVG plot.
 *
 *   train_fashion_mnist [--model mlp|lenet] [--epochs N] [--batch B] [--lr LR] [--limit N] [--out PREFIX]
 *                       [--save FILE.safetensors] [--hybridize] [--devices N] [--kvstore local|mpi]
 *
 * --hybridize compiles the model (a forward plan for evaluation; for
 * training steps, which autograd records, a forward plan that keeps what
 * backward needs and a backward plan) and prints its trace log.
 *
 * --devices N trains data-parallel on cpu(0..N-1) (d2l 13.5-13.6): one
 * replica per device, each batch split across them, gradients summed
 * through a key-value store. --kvstore mpi does the same across the
 * processes of an MPI job (`mpirun -np 2 train_fashion_mnist --kvstore
 * mpi`): each process takes its share of every global batch, in the same
 * shuffled order, so the steps are those of one process with the same
 * batch. Rank 0 prints (its share's training metrics) and writes files. */
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
  const char *out, *save;
  bool hybridize;
  int devices;
  const char *kvstore;
} options;

enum { MAX_REPLICAS = 8 };

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int fail(const char *what) {
  fprintf(stderr, "train_fashion_mnist: %s: %s\n", what, kiln_last_error());
  return 1;
}

/* The models, as Gluon would write them: sizes of the first layers'
 * inputs are left to the first forward. */
static kiln_block *make_model(bool lenet) {
  kiln_block *net = kiln_nn_sequential();
  if (!lenet) {
    kiln_block_add_child(net, NULL, kiln_nn_dense(256, KILN_ACT_RELU));
    kiln_block_add_child(net, NULL, kiln_nn_dense(10, KILN_ACT_NONE));
  } else {
    kiln_conv2d_layer_params c1 = kiln_conv2d_layer_params_default(6, 5, 5), c2 = kiln_conv2d_layer_params_default(16, 5, 5);
    c1.conv.padding[0] = c1.conv.padding[1] = 2;
    c1.activation = c2.activation = KILN_ACT_RELU;
    kiln_pool2d_params pool = kiln_pool2d_params_default(2, 2);
    kiln_block_add_child(net, NULL, kiln_nn_conv2d(&c1));       /* [B, 6, 28, 28] */
    kiln_block_add_child(net, NULL, kiln_nn_max_pool2d(&pool)); /* [B, 6, 14, 14] */
    kiln_block_add_child(net, NULL, kiln_nn_conv2d(&c2));       /* [B, 16, 10, 10] */
    kiln_block_add_child(net, NULL, kiln_nn_max_pool2d(&pool)); /* [B, 16, 5, 5] */
    kiln_block_add_child(net, NULL, kiln_nn_dense(120, KILN_ACT_RELU));
    kiln_block_add_child(net, NULL, kiln_nn_dense(84, KILN_ACT_RELU));
    kiln_block_add_child(net, NULL, kiln_nn_dense(10, KILN_ACT_NONE));
  }
  return net;
}

/* One data-parallel step: this process's share of the global batch, split
 * across its devices. Each replica's loss is summed over its samples, so
 * with the gradients summed over replicas and processes and divided by
 * the global batch the update is the one-process one, whatever the
 * shares' sizes. */
static kiln_status parallel_step(kiln_parallel_trainer *t, int n, kiln_block **replicas, const kiln_device *devices,
                                 int rank, int ranks, kiln_tensor *x, kiln_tensor *y, kiln_metric *loss_metric,
                                 kiln_metric *acc_metric, int64_t *samples) {
  int64_t batch = kiln_tensor_dim(y, 0), lo = batch * rank / ranks, hi = batch * (rank + 1) / ranks;
  if (hi - lo < n) {
    fprintf(stderr, "train_fashion_mnist: a batch of %lld leaves %lld samples to this process's %d devices\n",
            (long long)batch, (long long)(hi - lo), n);
    exit(1);
  }
  kiln_tensor *xs[MAX_REPLICAS], *ys[MAX_REPLICAS], *logits[MAX_REPLICAS], *losses[MAX_REPLICAS];
  kiln_status st = kiln_split_and_load(kiln_slice(x, 0, lo, hi, 1), n, devices, xs);
  if (st == KILN_OK) st = kiln_split_and_load(kiln_slice(y, 0, lo, hi, 1), n, devices, ys);
  if (st != KILN_OK) return st;
  kiln_record_begin(true);
  for (int d = 0; d < n; d++) {
    logits[d] = kiln_block_call(replicas[d], xs[d]);
    losses[d] = kiln_softmax_cross_entropy(logits[d], ys[d]);
  }
  kiln_tensor *summed[MAX_REPLICAS];
  for (int d = 0; d < n; d++) summed[d] = kiln_mul_scalar(losses[d], (double)kiln_tensor_dim(ys[d], 0));
  kiln_record_end();
  for (int d = 0; d < n && st == KILN_OK; d++) st = kiln_backward(summed[d], NULL, false);
  if (st == KILN_OK) st = kiln_parallel_trainer_step(t, (double)batch);
  /* Metrics live on cpu(0): the replicas' values come over. */
  for (int d = 0; d < n && st == KILN_OK; d++) {
    kiln_tensor *labels = kiln_to_device(ys[d], kiln_cpu(0));
    kiln_metric_update(loss_metric, kiln_to_device(losses[d], kiln_cpu(0)), labels);
    kiln_metric_update(acc_metric, kiln_to_device(logits[d], kiln_cpu(0)), labels);
  }
  *samples += hi - lo;
  return st;
}

static double metric_value(kiln_metric *m) {
  double v = NAN;
  kiln_metric_get(m, &v, NULL);
  return v;
}

static void progress(int epoch, int64_t done, int64_t total, int64_t samples, double seconds, kiln_metric *loss,
                     kiln_metric *acc) {
  int width = 30, fill = total ? (int)(width * done / total) : width;
  fprintf(stderr, "\repoch %d [", epoch);
  for (int i = 0; i < width; i++) fputc(i < fill ? '=' : i == fill ? '>' : ' ', stderr);
  fprintf(stderr, "] %lld/%lld  %.0f samples/s  loss %.4f  acc %.4f ", (long long)done, (long long)total,
          (double)samples / (seconds > 0 ? seconds : 1), metric_value(loss), metric_value(acc));
}

static double evaluate(kiln_block *net, kiln_loader *test) {
  kiln_metric *acc = kiln_metric_new(KILN_METRIC_ACCURACY);
  kiln_tensor *x, *y;
  kiln_loader_reset(test);
  while (kiln_loader_next(test, &x, &y) == KILN_OK) {
    kiln_scope_begin();
    kiln_metric_update(acc, kiln_block_call(net, x), y);
    kiln_tensor_release(x);
    kiln_tensor_release(y);
    kiln_scope_end();
  }
  double v = metric_value(acc);
  kiln_metric_free(acc);
  return v;
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
  options o = {false, 3, 256, 0, -1, NULL, NULL, false, 1, NULL};
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
    else if (!strcmp(argv[i], "--save") && i + 1 < argc) o.save = argv[++i];
    else if (!strcmp(argv[i], "--hybridize")) o.hybridize = true;
    else if (!strcmp(argv[i], "--devices") && i + 1 < argc) o.devices = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--kvstore") && i + 1 < argc) o.kvstore = argv[++i];
    else {
      fprintf(stderr,
              "usage: %s [--model mlp|lenet] [--epochs N] [--batch B] [--lr LR] [--limit N] [--out PREFIX] [--save FILE] "
              "[--hybridize] [--devices N] [--kvstore local|mpi]\n",
              argv[0]);
      return 2;
    }
  }
  if (o.devices < 1 || o.devices > MAX_REPLICAS) {
    fprintf(stderr, "train_fashion_mnist: --devices must be 1 to %d\n", MAX_REPLICAS);
    return 2;
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
  /* Scaled to [0, 1] floats once, as PyTorch's DataLoaders hold them, so
   * each batch is a gather rather than a conversion. */
  kiln_scope_begin();
  kiln_tensor *scaled = kiln_keep(kiln_mul_scalar(kiln_cast(train_x, KILN_F32), 1.0 / 255));
  kiln_scope_end();
  kiln_tensor_release(train_x);
  train_x = scaled;
  kiln_loader *train = kiln_loader_new(train_x, train_y, o.batch, true, 1, KILN_LAST_BATCH_KEEP);
  kiln_loader *test = kiln_loader_new(test_x, test_y, 1000, false, 0, KILN_LAST_BATCH_KEEP);
  if (!train || !test) return fail("loader");

  kiln_optimizer_params op = kiln_optimizer_params_default(KILN_OPT_SGD);
  op.lr = o.lr;
  /* Data parallel: a replica per device, its parameters made there (the
   * first forward fixes their shapes and draws them; the trainer then
   * gives every replica, and every process, replica 0's of rank 0). */
  bool parallel = o.devices > 1 || o.kvstore;
  kiln_kvstore *kv = NULL;
  if (parallel && !(kv = kiln_kvstore_new(o.kvstore ? o.kvstore : "local"))) return fail("kvstore");
  int rank = kiln_kvstore_rank(kv), ranks = kiln_kvstore_size(kv);
  kiln_block *replicas[MAX_REPLICAS];
  kiln_device devices[MAX_REPLICAS];
  for (int d = 0; d < o.devices; d++) {
    devices[d] = kiln_cpu(d);
    kiln_set_device(devices[d]);
    replicas[d] = make_model(o.lenet);
    if (kiln_block_initialize(replicas[d], NULL, false) != KILN_OK) return fail("model"); /* Xavier uniform */
    if (parallel) {
      int64_t one[4] = {1, 1, kiln_tensor_dim(train_x, 1), kiln_tensor_dim(train_x, 2)};
      kiln_scope_begin();
      kiln_status st = kiln_tensor_status(kiln_block_call(replicas[d], kiln_zeros(KILN_F32, 4, one)));
      kiln_scope_end();
      if (st != KILN_OK) return fail("model");
    }
    if (o.hybridize && kiln_block_hybridize(replicas[d], NULL) != KILN_OK) return fail("hybridize");
  }
  kiln_set_device(kiln_cpu(0));
  kiln_block *net = replicas[0];
  kiln_trainer *trainer = parallel ? NULL : kiln_trainer_new(net, &op);
  kiln_parallel_trainer *ptrainer = parallel ? kiln_parallel_trainer_new(o.devices, replicas, &op, kv) : NULL;
  kiln_metric *loss_metric = kiln_metric_new(KILN_METRIC_MEAN_LOSS), *acc_metric = kiln_metric_new(KILN_METRIC_ACCURACY);
  if ((!trainer && !ptrainer) || !loss_metric || !acc_metric) return fail("trainer");
  if (rank != 0) freopen("/dev/null", "w", stdout); /* rank 0 speaks for the job */

  bool tty = isatty(2);
  double(*curve)[3] = calloc((size_t)o.epochs, sizeof *curve);
  printf("%s, SGD lr %g, batch %lld, %lld training samples", o.lenet ? "LeNet" : "MLP 784-256-10", o.lr,
         (long long)o.batch, (long long)kiln_tensor_dim(train_x, 0));
  if (parallel) printf(", %d device%s x %d process%s (kvstore %s)", o.devices, o.devices > 1 ? "s" : "", ranks,
                       ranks > 1 ? "es" : "", o.kvstore ? o.kvstore : "local");
  printf("\n");
  printf("%5s %10s %10s %10s %9s %12s\n", "epoch", "loss", "train acc", "test acc", "seconds", "samples/s");
  for (int epoch = 1; epoch <= o.epochs; epoch++) {
    if (epoch > 1) kiln_loader_reset(train);
    kiln_metric_reset(loss_metric);
    kiln_metric_reset(acc_metric);
    kiln_tensor *x, *y;
    int64_t batches = kiln_loader_num_batches(train), done = 0, samples = 0;
    double t0 = now();
    kiln_status st;
    while ((st = kiln_loader_next(train, &x, &y)) == KILN_OK) {
      kiln_scope_begin();
      if (!parallel) {
        kiln_record_begin(true);
        kiln_tensor *logits = kiln_block_call(net, x);
        kiln_tensor *loss = kiln_softmax_cross_entropy(logits, y);
        kiln_record_end();
        if (kiln_backward(loss, NULL, false) != KILN_OK) return fail("backward");
        kiln_trainer_step(trainer, 1); /* the loss is already the batch mean */
        kiln_metric_update(loss_metric, loss, y);
        kiln_metric_update(acc_metric, logits, y);
        samples += kiln_tensor_dim(y, 0);
      } else if (parallel_step(ptrainer, o.devices, replicas, devices, rank, ranks, x, y, loss_metric, acc_metric,
                               &samples) != KILN_OK) {
        return fail("training step");
      }
      kiln_tensor_release(x);
      kiln_tensor_release(y);
      kiln_scope_end();
      done++;
      if (tty && (done % 20 == 0 || done == batches))
        progress(epoch, done, batches, samples, now() - t0, loss_metric, acc_metric);
    }
    if (st != KILN_ERR_OUT_OF_RANGE) return fail("loader");
    double train_loss = metric_value(loss_metric), train_acc = metric_value(acc_metric);
    double seconds = now() - t0;
    if (kiln_waitall() != KILN_OK) return fail("training");
    double test_acc = evaluate(net, test);
    if (tty) fprintf(stderr, "\r%*s\r", 100, "");
    printf("%5d %10.4f %10.4f %10.4f %9.2f %12.0f\n", epoch, train_loss, train_acc, test_acc, seconds,
           (double)samples / seconds);
    fflush(stdout);
    curve[epoch - 1][0] = train_loss, curve[epoch - 1][1] = train_acc, curve[epoch - 1][2] = test_acc;
  }
  if (rank == 0) {
    write_plot(o.out, o.epochs, curve);
    printf("curve: %s.csv, %s.svg\n", o.out, o.out);
  }
  if (o.hybridize) printf("trace log:\n%s", kiln_block_trace_log(net));
  if (o.save && rank == 0) {
    if (kiln_block_save_parameters(net, o.save) != KILN_OK) return fail("saving the parameters");
    printf("parameters: %s\n", o.save);
  }
  free(curve);
  kiln_metric_free(loss_metric);
  kiln_metric_free(acc_metric);
  kiln_trainer_free(trainer);
  kiln_parallel_trainer_free(ptrainer);
  for (int d = 0; d < o.devices; d++) kiln_block_release(replicas[d]);
  kiln_kvstore_free(kv);
  kiln_loader_free(train);
  kiln_loader_free(test);
  kiln_tensor_release(train_x);
  kiln_tensor_release(train_y);
  kiln_tensor_release(test_x);
  kiln_tensor_release(test_y);
  return 0;
}
