/* The autograd tape (see kiln.h). Dispatch records each op whose inputs
 * take part in differentiation while a record scope is open; backward walks
 * the tape in reverse and calls each op's gradient function, which is
 * written with registry ops (src/ops/gradients.c). */
#ifndef KILN_AUTOGRAD_H
#define KILN_AUTOGRAD_H

#include "ops/op.h"
#include "tensor/tensor.h"

/* What a gradient function gets: the op's saved inputs and outputs, the
 * gradient of each output (never NULL: zeros for an output no path from
 * the head reached, which out_reached says, so a function may skip its
 * terms), which inputs need a gradient; it
 * sets in_grad[i] (shaped like input i) for those, with tensors that belong
 * to the caller's scope (backward runs in one). */
typedef struct {
  const kiln_op_def *def;
  const kiln_attr_value *attrs;
  int n_in, n_out;
  kiln_tensor *const *in;
  kiln_tensor *const *out;
  kiln_tensor *const *out_grad;
  const bool *out_reached;
  const bool *need;
  kiln_tensor **in_grad;
  void *ctx; /* autograd_record_custom's context; NULL for ops */
} kiln_grad_call;

typedef kiln_status (*kiln_grad_fn)(kiln_grad_call *g);

/* The gradient function of an op, or NULL when it has none. */
kiln_grad_fn kiln_op_grad(kiln_op_id id);

/* True when an op on these inputs must be recorded. */
bool autograd_wants(int n_in, kiln_tensor *const *in);
/* Records a successful op; on failure to record, marks nothing and the
 * outputs simply do not take part (backward will say the path is cut). */
void autograd_record(kiln_op_id id, const kiln_attr_value *attrs, int n_in, kiln_tensor *const *in, int n_out,
                     kiln_tensor *const *out);

/* Records a computation that is not one op (a hybridized block's plan):
 * def names it in messages, fn computes its input gradients, with ctx in
 * the call; ctx_free(ctx) runs when the node goes. False when it could not
 * be recorded (out of memory: the outputs then do not take part). */
bool autograd_record_custom(const kiln_op_def *def, kiln_grad_fn fn, void *ctx, void (*ctx_free)(void *), int n_in,
                            kiln_tensor *const *in, int n_out, kiln_tensor *const *out);

#endif
