/* Losses as compositions of registry ops, so autograd differentiates them
 * with the ops' own gradients. */
#include "imperative/dispatch.h"

/* The mean over all but dim 0 of each sample, then over the batch: for
 * equal-sized samples that is the mean of every element. */
static kiln_tensor *batch_mean(kiln_tensor *per_element) { return kiln_mean(per_element, 0, NULL, false); }

static kiln_tensor *checked(const char *fn, kiln_tensor *a, kiln_tensor *b) {
  if (!a || !b) {
    return kiln_failed(KILN_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, a ? "label" : "prediction");
  }
  return NULL;
}

kiln_tensor *kiln_l2_loss(kiln_tensor *pred, kiln_tensor *label) {
  kiln_tensor *bad = checked("kiln_l2_loss", pred, label);
  if (bad) return bad;
  kiln_scope_begin();
  kiln_tensor *r = kiln_keep(batch_mean(kiln_mul_scalar(kiln_square(kiln_sub(pred, label)), 0.5)));
  kiln_scope_end();
  return r;
}

kiln_tensor *kiln_l1_loss(kiln_tensor *pred, kiln_tensor *label) {
  kiln_tensor *bad = checked("kiln_l1_loss", pred, label);
  if (bad) return bad;
  kiln_scope_begin();
  kiln_tensor *r = kiln_keep(batch_mean(kiln_abs(kiln_sub(pred, label))));
  kiln_scope_end();
  return r;
}

kiln_tensor *kiln_bce_with_logits_loss(kiln_tensor *logits, kiln_tensor *label) {
  kiln_tensor *bad = checked("kiln_bce_with_logits_loss", logits, label);
  if (bad) return bad;
  kiln_scope_begin();
  kiln_tensor *r = kiln_keep(batch_mean(kiln_sub(kiln_softplus(logits), kiln_mul(logits, label))));
  kiln_scope_end();
  return r;
}
