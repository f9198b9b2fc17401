/* Eager dispatch: check the inputs, infer the outputs, allocate them (or
 * alias them, for view ops) and run the kernel. Every public op function is a
 * thin wrapper over kiln_dispatch. */
#ifndef KILN_DISPATCH_H
#define KILN_DISPATCH_H

#include "ops/op.h"
#include "tensor/tensor.h"

/* Runs op id on in[0..n_in) (NULL entries are errors, except that trailing
 * optional inputs are simply omitted by passing a smaller n_in). attrs holds
 * def->n_attrs values, or is NULL for the defaults. Writes the outputs to
 * out[0..n_out) (n_out must equal the op's output count); each is a new
 * handle, autoreleased into the current scope, carrying any failure. Returns
 * the op's status. */
kiln_status kiln_dispatch(kiln_op_id id, int n_in, kiln_tensor *const *in, const kiln_attr_value *attrs, int n_out,
                          kiln_tensor **out);
/* The same, but the outputs belong to the caller even inside a scope: for
 * intermediates that a public function creates and releases itself. */
kiln_status kiln_dispatch_owned(kiln_op_id id, int n_in, kiln_tensor *const *in, const kiln_attr_value *attrs,
                                int n_out, kiln_tensor **out);
/* The same for single-output ops. */
kiln_tensor *kiln_dispatch1(kiln_op_id id, int n_in, kiln_tensor *const *in, const kiln_attr_value *attrs);

/* A failed tensor for a public function's usage error: records the message
 * (kiln_last_error) and returns it carried by a new handle, autoreleased
 * like every op's result. */
kiln_tensor *kiln_failed(kiln_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A contiguous tensor of zeros shaped and typed like t, owned by the caller
 * whatever scope is open (for buffers kiln keeps: gradients, optimiser
 * state). */
kiln_tensor *kiln_zeros_like_owned(const kiln_tensor *t);

/* Set by src/graph when it is first used: ops given a symbolic input, or
 * called while a trace is active, are recorded into a graph instead of
 * running (the graph layer sits above this one, so it installs itself).
 * Dispatch has checked and inferred the call; desc are its outputs. */
extern bool (*dispatch_graph_wants)(int n_in, kiln_tensor *const *in);
extern kiln_status (*dispatch_graph_record)(kiln_op_id id, int n_in, kiln_tensor *const *in,
                                            const kiln_attr_value *attrs, int n_out, const kiln_out_desc *desc,
                                            kiln_tensor **out);

/* A contiguous copy of t (valid, concrete) on device (src/device's
 * index), pushed on the copy queue (transfer.c, with kiln_to_device);
 * owned by the caller; a failed tensor on error. */
kiln_tensor *transfer_owned(kiln_tensor *t, int device);

/* Fills vals with the defaults of op id's attributes. */
void kiln_attrs_default(kiln_op_id id, kiln_attr_value *vals);

/* For attribute lists: copies n ints (n <= KILN_MAX_ATTR_INTS is checked by
 * the caller's op through inference). */
void kiln_attr_set_ints(kiln_attr_value *v, int n, const int64_t *ints);

#endif
