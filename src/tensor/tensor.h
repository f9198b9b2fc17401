/* Tensor layer: refcounted storage and strided views of it.
 *
 * A tensor is a view (dtype, shape, strides in elements, offset in elements)
 * of a storage. Views share the storage and hold a reference to it. A failed
 * tensor has no storage: it carries a status and a message instead, so errors
 * travel with values (see docs/design.md). */
#ifndef KILN_TENSOR_H
#define KILN_TENSOR_H

#include <stdatomic.h>

#include "base/base.h"
#include "kernels/view.h"

/* A storage's values are written and read by engine work: its variable
 * orders that work, and the storage is freed by the engine after the last
 * of it. */
typedef struct kiln_storage {
  atomic_long refs;
  kiln_engine *engine;
  kiln_engine_var *var;
  int device; /* index in the device table (src/device) */
  int queue;  /* the device's engine queue: where work on the storage runs */
  void *data;
  size_t nbytes;    /* of the block (header and data when inline), for kiln_free_block */
  bool inline_data; /* data follows the header in the same allocation */
  /* Memory kiln did not allocate (kiln_tensor_from_external): freeing the
   * storage calls release(release_ctx) instead of freeing data. */
  void (*release)(void *ctx);
  void *release_ctx;
} kiln_storage;

struct kiln_tensor {
  atomic_long refs;
  bool immortal; /* the preallocated out-of-memory tensor */
  kiln_dtype dtype;
  int ndim;
  int64_t shape[KILN_MAX_DIMS];
  int64_t strides[KILN_MAX_DIMS];
  int64_t offset;
  kiln_storage *storage; /* NULL when failed */
  kiln_status status;
  char *error; /* owned; NULL when ok */
  void *ag;    /* the autograd entry (src/imperative/autograd.c), or NULL */
  void *sym;   /* symbolic: a value of a graph being built (src/graph), with
                  shape and dtype but no storage; NULL for concrete tensors */
};

/* Frees a tensor's autograd entry; set by the autograd module, which sits
 * above this layer. */
extern void (*tensor_ag_free)(void *entry);
/* Frees a symbolic tensor's graph reference, and names the op that made
 * it (for the message of a read that cannot happen); set by src/graph. */
extern void (*tensor_sym_free)(void *sym);
extern const char *(*tensor_sym_origin)(const void *sym);

/* A symbolic tensor: shape, dtype and strides, no storage; takes over sym. */
kiln_tensor *tensor_new_symbolic(kiln_dtype dt, int ndim, const int64_t *shape, const int64_t *strides, void *sym);

/* Element count of a shape, or a failure naming op when a dim is negative or
 * the count (times the element size) overflows. */
kiln_status tensor_checked_numel(const char *op, kiln_dtype dt, int ndim, const int64_t *shape, int64_t *numel);

/* A contiguous tensor with uninitialised storage on the thread's current
 * device, or on device (an index of the device table); a failed tensor on
 * error. */
kiln_tensor *tensor_new(kiln_dtype dt, int ndim, const int64_t *shape);
kiln_tensor *tensor_new_on(int device, kiln_dtype dt, int ndim, const int64_t *shape);
/* Makes fresh storage a device's: one reference, the device's engine queue
 * and a new variable there. KILN_ERR_OUT_OF_MEMORY, or the device's
 * failure to start (message in kiln_last_error). */
kiln_status storage_bind(kiln_storage *s, int device);
/* Pushes work on the tensor's device (see kiln_engine_push). */
kiln_status tensor_push(const kiln_tensor *on, kiln_engine_fn fn, void (*done)(void *data), void *data,
                        kiln_engine_var *const *reads, int n_reads, kiln_engine_var *const *writes, int n_writes,
                        const char *name, int priority);
/* A failed tensor carrying status and message (copied). Never NULL. */
kiln_tensor *tensor_new_failed(kiln_status status, const char *message);
/* The preallocated, never-freed tensor that carries an out-of-memory
 * failure when nothing else can be allocated. */
kiln_tensor *tensor_out_of_memory(void);
/* A failed tensor carrying the failure of src. */
kiln_tensor *tensor_new_failed_from(const kiln_tensor *src);
/* A view of base's storage. */
kiln_tensor *tensor_new_view(const kiln_tensor *base, int ndim, const int64_t *shape, const int64_t *strides,
                             int64_t offset);

/* Registers t with this thread's innermost scope, if any; returns t. Every
 * handle given to the user passes through here. */
kiln_tensor *tensor_autorelease(kiln_tensor *t);

static inline bool tensor_failed(const kiln_tensor *t) { return t->status != KILN_OK; }
static inline void *tensor_data(const kiln_tensor *t) {
  return (char *)t->storage->data + t->offset * (int64_t)kiln_dtype_size(t->dtype);
}
kk_view tensor_view_of(const kiln_tensor *t);
/* Waits for t's pending writes; returns its failure, and its message in
 * *message (valid while t lives) when message is not NULL. Leaves
 * kiln_last_error alone. */
kiln_status tensor_wait(const kiln_tensor *t, const char **message);
void contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);

/* The per-thread default generator and the counter reservation used by the
 * random ops (src/tensor/random.c). */
uint64_t generator_seed(kiln_generator *g);
uint64_t generator_reserve(kiln_generator *g, uint64_t blocks);

#endif
