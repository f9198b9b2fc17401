/* Metrics: running sums kept as float64 tensors updated by engine ops, so
 * a training loop never waits on them; the sample count is known from
 * shapes at each update. */
#include <math.h>

#include "nn/nn.h"
#include "base/base.h"
#include "imperative/dispatch.h"

struct kiln_metric {
  kiln_metric_kind kind;
  kiln_tensor *sum; /* owned, 0-d float64; NULL before the first update */
  int64_t samples;
};

kiln_metric *kiln_metric_new(kiln_metric_kind kind) {
  if (kind != KILN_METRIC_ACCURACY && kind != KILN_METRIC_MEAN_LOSS) {
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_metric_new: %d is not a kiln_metric_kind", (int)kind);
    return NULL;
  }
  kiln_metric *m = kiln_calloc(1, sizeof *m);
  if (!m) kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_metric_new: out of memory");
  else m->kind = kind;
  return m;
}

void kiln_metric_reset(kiln_metric *m) {
  if (!m) return;
  kiln_tensor_release(m->sum);
  m->sum = NULL;
  m->samples = 0;
}

void kiln_metric_free(kiln_metric *m) {
  kiln_metric_reset(m);
  kiln_free(m);
}

static bool is_integer(kiln_dtype dt) { return dt == KILN_I32 || dt == KILN_I64 || dt == KILN_U8; }

/* What this batch adds to the sum, and how many samples it counts. */
static kiln_tensor *batch_sum(const kiln_metric *m, kiln_tensor *pred, kiln_tensor *labels, int64_t *samples) {
  if (m->kind == KILN_METRIC_MEAN_LOSS) {
    if (kiln_tensor_ndim(pred) == 0) {
      *samples = labels ? (kiln_tensor_ndim(labels) ? kiln_tensor_dim(labels, 0) : 1) : 1;
      return kiln_mul_scalar(kiln_cast(pred, KILN_F64), (double)*samples);
    }
    *samples = kiln_tensor_numel(pred);
    return kiln_sum(kiln_cast(pred, KILN_F64), 0, NULL, false);
  }
  if (!labels || kiln_tensor_ndim(labels) != 1 || !is_integer(kiln_tensor_dtype(labels)))
    return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "accuracy: labels must be integer [N]");
  int nd = kiln_tensor_ndim(pred);
  if ((nd != 1 && nd != 2) || kiln_tensor_dim(pred, 0) != kiln_tensor_dim(labels, 0))
    return kiln_failed(KILN_ERR_SHAPE, "accuracy: predictions must be scores [N, C] or classes [N] for %lld labels",
                       (long long)kiln_tensor_dim(labels, 0));
  kiln_tensor *classes = nd == 2 ? kiln_argmax(pred, 1, false) : kiln_cast(pred, KILN_I64);
  *samples = kiln_tensor_dim(labels, 0);
  kiln_tensor *right = kiln_equal(classes, kiln_cast(labels, KILN_I64));
  return kiln_sum(kiln_cast(right, KILN_F64), 0, NULL, false);
}

kiln_status kiln_metric_update(kiln_metric *m, kiln_tensor *pred, kiln_tensor *labels) {
  if (!m || !pred) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_metric_update: %s is NULL", m ? "pred" : "metric");
  if (kiln_tensor_failed(pred)) return kiln_errorf(kiln_tensor_status(pred), "kiln_metric_update: %s", kiln_tensor_error(pred));
  if (labels && kiln_tensor_failed(labels))
    return kiln_errorf(kiln_tensor_status(labels), "kiln_metric_update: %s", kiln_tensor_error(labels));
  kiln_scope_begin();
  kiln_pause_begin();
  int64_t samples = 0;
  kiln_tensor *add = batch_sum(m, pred, labels, &samples);
  kiln_tensor *sum = m->sum ? kiln_add(m->sum, add) : add;
  kiln_status st = kiln_tensor_failed(sum) ? kiln_tensor_status(sum) : KILN_OK;
  if (st == KILN_OK) {
    kiln_tensor_release(m->sum);
    m->sum = kiln_tensor_retain(sum);
    m->samples += samples;
  } else {
    kiln_errorf(st, "kiln_metric_update: %s", kiln_tensor_error(sum));
  }
  kiln_pause_end();
  kiln_scope_end();
  return st;
}

kiln_status kiln_metric_get(kiln_metric *m, double *value, int64_t *samples) {
  if (!m) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_metric_get: metric is NULL");
  double sum = 0;
  kiln_status st = m->sum ? kiln_tensor_item(m->sum, &sum) : KILN_OK;
  if (value) *value = st == KILN_OK && m->samples ? sum / (double)m->samples : NAN;
  if (samples) *samples = m->samples;
  return st;
}
