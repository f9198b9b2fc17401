/* kiln: a deep-learning runtime in C11.
 *
 * This header is the whole public API. Every object with a lifetime is an
 * opaque handle. Ops return a new tensor handle that is never NULL: when an op
 * fails, the handle it returns carries the failure (kiln_tensor_status and
 * kiln_tensor_error), ops given a failed input pass the failure on without
 * running, and the read that reaches it returns the status. Everything that is
 * not a value-producing op returns kiln_status; its message is then available
 * from kiln_last_error() on the same thread. The library never aborts, exits
 * or prints on bad input.
 *
 * Ownership: a tensor returned by an op or a constructor belongs to the
 * caller, who releases it with kiln_tensor_release, unless a scope is open on
 * the calling thread (kiln_scope_begin), in which case the scope releases it
 * at kiln_scope_end; kiln_keep moves a handle out to the enclosing scope (or to
 * the caller when no scope encloses it). Handles may be shared between threads;
 * the reference count is atomic. Scopes are per thread.
 *
 * Threads: every function may be called from any thread, except
 * kiln_set_allocator, which must be called before others run. kiln runs
 * large kernels on its own pool of KILN_NUM_THREADS threads (default: one
 * per CPU) and sets OpenBLAS to one thread when it loads, so the two do not
 * compete for cores; a program that calls OpenBLAS itself may raise that.
 */
#ifndef KILN_H
#define KILN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(KILN_STATIC_DEFINE)
#define KILN_API
#elif defined(KILN_BUILDING)
#define KILN_API __attribute__((visibility("default")))
#else
#define KILN_API
#endif

/* ---------------------------------------------------------------- status */

/* One list, from which the enum, kiln_status_name and kiln_status_str come. */
#define KILN_STATUS_LIST(X)                                                          \
  X(KILN_OK, "ok")                                                                   \
  X(KILN_ERR_INVALID_ARGUMENT, "invalid argument")                                   \
  X(KILN_ERR_SHAPE, "shape mismatch")                                                \
  X(KILN_ERR_DTYPE, "unsupported dtype")                                             \
  X(KILN_ERR_OUT_OF_RANGE, "value out of range")                                     \
  X(KILN_ERR_OVERFLOW, "size overflow")                                              \
  X(KILN_ERR_OUT_OF_MEMORY, "out of memory")                                         \
  X(KILN_ERR_UNSUPPORTED, "unsupported")                                             \
  X(KILN_ERR_IO, "input/output error")                                               \
  X(KILN_ERR_CORRUPT, "corrupt or malformed data")                                   \
  X(KILN_ERR_INTERNAL, "internal error")

typedef enum {
#define KILN_STATUS_ENUM_(name, text) name,
  KILN_STATUS_LIST(KILN_STATUS_ENUM_)
#undef KILN_STATUS_ENUM_
  KILN_STATUS_COUNT
} kiln_status;

/* "KILN_ERR_SHAPE" for KILN_ERR_SHAPE; "unknown status" outside the list. */
KILN_API const char *kiln_status_name(kiln_status s);
/* A short human sentence fragment: "shape mismatch". */
KILN_API const char *kiln_status_str(kiln_status s);
/* The message of the last failing call on this thread ("" if none). Valid
 * until the next kiln call on this thread. */
KILN_API const char *kiln_last_error(void);
/* The status that message came with: what a call that returns NULL on
 * failure (kiln_model_load, kiln_graph_compile) failed with. */
KILN_API kiln_status kiln_last_status(void);
/* The library's version, "MAJOR.MINOR.PATCH": the one linked, which a
 * program's headers may not match. */
KILN_API const char *kiln_version(void);

/* Allocation goes through one hook so tests can inject failures. Passing NULL
 * restores the default (aligned malloc). Not thread-safe against concurrent
 * allocation: call kiln_waitall() first, so no pushed work is still
 * allocating or freeing, and set it before using kiln from other threads.
 * The engine's own bookkeeping (pooled op records and variables) does not
 * go through the hook. */
typedef void *(*kiln_alloc_fn)(size_t size, size_t align, void *user);
typedef void (*kiln_free_fn)(void *ptr, void *user);
KILN_API void kiln_set_allocator(kiln_alloc_fn alloc, kiln_free_fn free_fn, void *user);
/* Freed tensor buffers are kept in small bounded caches (at most 512 MiB,
 * and 8 MiB of buffers up to 4 KiB) for reuse by the next tensor of the
 * same size; this returns them to the system. Thread-safe. */
KILN_API void kiln_release_cached_memory(void);

/* ---------------------------------------------------------------- dtypes */

typedef enum {
  KILN_F32 = 0, /* the compute type */
  KILN_F64,
  KILN_I32,
  KILN_I64,
  KILN_U8,
  KILN_BOOL, /* one byte, 0 or 1 */
  KILN_DTYPE_COUNT
} kiln_dtype;

KILN_API const char *kiln_dtype_name(kiln_dtype dt); /* "float32", ... */
KILN_API size_t kiln_dtype_size(kiln_dtype dt);      /* 0 if not a dtype */

#define KILN_MAX_DIMS 8

/* ---------------------------------------------------------------- tensors */

typedef struct kiln_tensor kiln_tensor;

KILN_API kiln_tensor *kiln_tensor_retain(kiln_tensor *t);
KILN_API void kiln_tensor_release(kiln_tensor *t); /* NULL does nothing */

/* Accessors. On a failed tensor, shape queries return what was inferred
 * before the failure, possibly ndim 0. kiln_tensor_status and
 * kiln_tensor_error wait for the ops that write t, so they also report a
 * failure inside an asynchronous kernel. */
KILN_API kiln_status kiln_tensor_status(const kiln_tensor *t);
KILN_API const char *kiln_tensor_error(const kiln_tensor *t); /* "" when ok */
/* True when the call that made t failed (a shape, dtype or argument error
 * found at the call), or t is NULL. Never waits: code between ops (a
 * block's forward) checks this and stays asynchronous. */
KILN_API bool kiln_tensor_failed(const kiln_tensor *t);
KILN_API kiln_dtype kiln_tensor_dtype(const kiln_tensor *t);
KILN_API int kiln_tensor_ndim(const kiln_tensor *t);
KILN_API int64_t kiln_tensor_dim(const kiln_tensor *t, int axis); /* negative axes count from the end */
KILN_API const int64_t *kiln_tensor_shape(const kiln_tensor *t);
KILN_API const int64_t *kiln_tensor_strides(const kiln_tensor *t); /* in elements */
KILN_API int64_t kiln_tensor_numel(const kiln_tensor *t);
KILN_API bool kiln_tensor_is_contiguous(const kiln_tensor *t);

/* Copies the elements, in row-major order of the logical shape, into buf,
 * which must hold numel * dtype size bytes. Fails with the tensor's own status
 * when it carries a failure. */
KILN_API kiln_status kiln_tensor_copy_to(const kiln_tensor *t, void *buf, size_t buf_bytes);
/* The single element of a tensor with one element, converted to double. */
KILN_API kiln_status kiln_tensor_item(const kiln_tensor *t, double *out);
/* The address of t's element [0, ..., 0] (kiln_tensor_strides give the
 * rest, in elements; they may be negative or zero), after waiting for the
 * ops pushed so far that write t, so the values there are final until more
 * work on t is pushed. The memory stays valid while the caller holds a
 * reference to t. Reading is safe at once; to write through the address,
 * first wait for the ops that read t as well (kiln_waitall), and push no
 * op on t while writing. Fails with t's own status when it carries a
 * failure (*data is then NULL), and for symbolic tensors. Thread-safe. */
KILN_API kiln_status kiln_tensor_data(const kiln_tensor *t, void **data);

/* numpy-like text: "array([[1., 2.],\n       [3., 4.]], dtype=float32)".
 * Large tensors are summarised with "..." as numpy does. kiln_tensor_format
 * writes at most cap bytes (always NUL-terminated when cap > 0) and stores the
 * full length in *needed when needed is not NULL. A failed tensor formats as
 * "<error: message>". */
KILN_API kiln_status kiln_tensor_format(const kiln_tensor *t, char *buf, size_t cap, size_t *needed);
KILN_API kiln_status kiln_tensor_print(const kiln_tensor *t, FILE *out);

/* ---------------------------------------------------------------- scopes */

/* Open a scope on this thread: handles created until the matching
 * kiln_scope_end are released by it. Scopes nest. */
KILN_API kiln_status kiln_scope_begin(void);
KILN_API kiln_status kiln_scope_end(void);
/* Keep t alive past the innermost scope: it moves to the enclosing scope, or,
 * when none, to the caller, who then releases it. Returns t. */
KILN_API kiln_tensor *kiln_keep(kiln_tensor *t);

/* ---------------------------------------------------------------- creation */

KILN_API kiln_tensor *kiln_zeros(kiln_dtype dt, int ndim, const int64_t *shape);
KILN_API kiln_tensor *kiln_ones(kiln_dtype dt, int ndim, const int64_t *shape);
KILN_API kiln_tensor *kiln_full(kiln_dtype dt, int ndim, const int64_t *shape, double value);
/* [start, stop) by step, like numpy.arange. */
KILN_API kiln_tensor *kiln_arange(double start, double stop, double step, kiln_dtype dt);
/* num points from start to stop inclusive, like numpy.linspace. */
KILN_API kiln_tensor *kiln_linspace(double start, double stop, int64_t num, kiln_dtype dt);
/* n x m with ones on the diagonal. */
KILN_API kiln_tensor *kiln_eye(int64_t n, int64_t m, kiln_dtype dt);
/* Copies numel * dtype size bytes from data (row-major). */
KILN_API kiln_tensor *kiln_from_data(kiln_dtype dt, int ndim, const int64_t *shape, const void *data);
/* A tensor over memory kiln does not own, without a copy (numpy's and
 * DLPack's memory from the Python module). strides are in elements, may be
 * negative or zero, and NULL means row-major; data must be aligned to the
 * dtype's size. kiln reads and writes the memory in place (an op's output
 * is always new kiln memory; kiln_assign and the Python module's item
 * assignment write into it). The tensor lives on the calling thread's
 * current device. When its last reference goes, release(ctx) is called
 * exactly once, after every op already pushed on it, possibly on an engine
 * worker thread and with kiln's locks not held; release may be NULL when
 * the caller keeps the memory alive by other means. On failure (a failed
 * tensor: a bad dtype, shape or stride, NULL or misaligned data, out of
 * memory) release is never called and the memory stays the caller's. */
KILN_API kiln_tensor *kiln_tensor_from_external(kiln_dtype dt, int ndim, const int64_t *shape, const int64_t *strides,
                                                void *data, void (*release)(void *ctx), void *ctx);
/* A contiguous copy of any tensor or view. */
KILN_API kiln_tensor *kiln_contiguous(kiln_tensor *t);
KILN_API kiln_tensor *kiln_copy(kiln_tensor *t);
/* Writes src (broadcast to dst's shape, same dtype) into dst's elements in
 * place, as an engine op ordered after the work already pushed on both: how
 * parameters are loaded and running statistics updated. Not recorded by
 * autograd: do not overwrite a value a recorded op still needs. */
KILN_API kiln_status kiln_assign(kiln_tensor *dst, kiln_tensor *src);

/* Random numbers come from a counter-based generator (Philox-4x32-10): each
 * call reserves a block of counters from the generator at call time, and
 * element i of the result depends only on the seed, that block and i. So
 * results do not depend on thread counts, and threads that each own a
 * generator get the same numbers whatever the interleaving. A generator may be
 * shared between threads (the reservation is atomic), but then the order of
 * calls decides who gets which block. gen == NULL uses this thread's default
 * generator, seeded by kiln_seed (seed 0 until then). */
typedef struct kiln_generator kiln_generator;
KILN_API kiln_generator *kiln_generator_new(uint64_t seed);
KILN_API void kiln_generator_free(kiln_generator *g);
KILN_API void kiln_seed(uint64_t seed); /* resets this thread's default generator */

KILN_API kiln_tensor *kiln_random_uniform(kiln_generator *gen, double low, double high, kiln_dtype dt,
                                          int ndim, const int64_t *shape);
KILN_API kiln_tensor *kiln_random_normal(kiln_generator *gen, double mean, double stddev, kiln_dtype dt,
                                         int ndim, const int64_t *shape);
/* 1 with probability p, else 0. */
KILN_API kiln_tensor *kiln_random_bernoulli(kiln_generator *gen, double p, kiln_dtype dt, int ndim,
                                            const int64_t *shape);

/* ---------------------------------------------------------------- views */

/* These share storage with their input; no data moves, except kiln_reshape
 * of a non-contiguous tensor, which copies (as torch.reshape does). One entry
 * of a reshape's shape may be -1: it is inferred. An entry -2 is the input's
 * dim in the same place (ONNX's 0): in a graph with unknown dims it stays
 * that dim at every size, where a number would fix it. */
KILN_API kiln_tensor *kiln_reshape(kiln_tensor *x, int ndim, const int64_t *shape);
KILN_API kiln_tensor *kiln_transpose(kiln_tensor *x, int axis0, int axis1);
KILN_API kiln_tensor *kiln_permute(kiln_tensor *x, int ndim, const int *axes);
/* x[start:stop:step] along axis, with numpy's rules for negative and
 * out-of-range bounds; step may be negative, not zero. KILN_END stands for
 * an omitted bound (Python's None) at either end: x[::-1] is
 * kiln_slice(x, 0, KILN_END, KILN_END, -1). */
#define KILN_END INT64_MAX
KILN_API kiln_tensor *kiln_slice(kiln_tensor *x, int axis, int64_t start, int64_t stop, int64_t step);
KILN_API kiln_tensor *kiln_broadcast_to(kiln_tensor *x, int ndim, const int64_t *shape);
/* axis = KILN_ALL_AXES squeezes every size-1 dim. */
#define KILN_ALL_AXES INT32_MIN
KILN_API kiln_tensor *kiln_squeeze(kiln_tensor *x, int axis);
KILN_API kiln_tensor *kiln_expand_dims(kiln_tensor *x, int axis);

/* ---------------------------------------------------------------- elementwise */

/* Unary ops take float32 or float64 (neg, abs, square, sign also integers)
 * and keep the dtype. */
KILN_API kiln_tensor *kiln_neg(kiln_tensor *x);
KILN_API kiln_tensor *kiln_abs(kiln_tensor *x);
KILN_API kiln_tensor *kiln_exp(kiln_tensor *x);
KILN_API kiln_tensor *kiln_log(kiln_tensor *x);
KILN_API kiln_tensor *kiln_sqrt(kiln_tensor *x);
KILN_API kiln_tensor *kiln_rsqrt(kiln_tensor *x);
KILN_API kiln_tensor *kiln_square(kiln_tensor *x);
KILN_API kiln_tensor *kiln_sin(kiln_tensor *x);
KILN_API kiln_tensor *kiln_cos(kiln_tensor *x);
KILN_API kiln_tensor *kiln_tanh(kiln_tensor *x);
KILN_API kiln_tensor *kiln_sigmoid(kiln_tensor *x);
KILN_API kiln_tensor *kiln_relu(kiln_tensor *x);
KILN_API kiln_tensor *kiln_leaky_relu(kiln_tensor *x, double slope);
KILN_API kiln_tensor *kiln_gelu(kiln_tensor *x); /* exact (erf) form */
KILN_API kiln_tensor *kiln_softplus(kiln_tensor *x);
KILN_API kiln_tensor *kiln_erf(kiln_tensor *x);
KILN_API kiln_tensor *kiln_sign(kiln_tensor *x);
KILN_API kiln_tensor *kiln_floor(kiln_tensor *x);
KILN_API kiln_tensor *kiln_ceil(kiln_tensor *x);
KILN_API kiln_tensor *kiln_round(kiln_tensor *x); /* half to even, as numpy */
KILN_API kiln_tensor *kiln_clip(kiln_tensor *x, double lo, double hi);

/* Binary ops broadcast as NumPy does. Arithmetic takes any numeric dtype and
 * both operands must have the same dtype (cast first otherwise); div of
 * integers truncates toward zero and fails on division by zero. Comparisons
 * return bool. Logical ops take any dtype (nonzero is true) and return bool.
 * The _scalar forms compute x op s with s converted to x's dtype. */
KILN_API kiln_tensor *kiln_add(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_sub(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_mul(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_div(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_pow(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_maximum(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_minimum(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_equal(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_not_equal(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_less(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_less_equal(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_greater(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_greater_equal(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_logical_and(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_logical_or(kiln_tensor *a, kiln_tensor *b);
KILN_API kiln_tensor *kiln_logical_not(kiln_tensor *x);
/* cond ? a : b, all three broadcast together; cond of any dtype. */
KILN_API kiln_tensor *kiln_where(kiln_tensor *cond, kiln_tensor *a, kiln_tensor *b);

KILN_API kiln_tensor *kiln_add_scalar(kiln_tensor *x, double s);
KILN_API kiln_tensor *kiln_sub_scalar(kiln_tensor *x, double s);
KILN_API kiln_tensor *kiln_mul_scalar(kiln_tensor *x, double s);
KILN_API kiln_tensor *kiln_div_scalar(kiln_tensor *x, double s);
KILN_API kiln_tensor *kiln_pow_scalar(kiln_tensor *x, double s);
KILN_API kiln_tensor *kiln_maximum_scalar(kiln_tensor *x, double s);
KILN_API kiln_tensor *kiln_minimum_scalar(kiln_tensor *x, double s);

/* ---------------------------------------------------------------- reductions */

/* Over the n axes listed (negative counts from the end; n == 0 means every
 * axis), keeping them as size 1 when keepdims. Sums of float32 accumulate in
 * double in a fixed order, so results are reproducible bit for bit. */
KILN_API kiln_tensor *kiln_sum(kiln_tensor *x, int n, const int *axes, bool keepdims);
KILN_API kiln_tensor *kiln_mean(kiln_tensor *x, int n, const int *axes, bool keepdims);
KILN_API kiln_tensor *kiln_max(kiln_tensor *x, int n, const int *axes, bool keepdims);
KILN_API kiln_tensor *kiln_min(kiln_tensor *x, int n, const int *axes, bool keepdims);
KILN_API kiln_tensor *kiln_prod(kiln_tensor *x, int n, const int *axes, bool keepdims);
/* Population variance (ddof 0) unless ddof says otherwise. */
KILN_API kiln_tensor *kiln_var(kiln_tensor *x, int n, const int *axes, bool keepdims, int ddof);
KILN_API kiln_tensor *kiln_logsumexp(kiln_tensor *x, int n, const int *axes, bool keepdims);
/* int64 index of the first extreme along axis; axis = KILN_ALL_AXES gives the
 * index into the flattened tensor. */
KILN_API kiln_tensor *kiln_argmax(kiln_tensor *x, int axis, bool keepdims);
KILN_API kiln_tensor *kiln_argmin(kiln_tensor *x, int axis, bool keepdims);

/* ---------------------------------------------------------------- linear algebra */

/* numpy.matmul: 1-D operands are promoted and the added dim removed; batch
 * dims broadcast. float32 and float64. */
KILN_API kiln_tensor *kiln_matmul(kiln_tensor *a, kiln_tensor *b);
/* x[..., in] . w[out, in]^T + bias[out]; bias may be NULL. */
KILN_API kiln_tensor *kiln_linear(kiln_tensor *x, kiln_tensor *w, kiln_tensor *bias);
typedef enum {
  KILN_ACT_NONE = 0,
  KILN_ACT_RELU,
  KILN_ACT_SIGMOID,
  KILN_ACT_TANH,
  KILN_ACT_SOFTPLUS,
  KILN_ACT_GELU,
} kiln_activation;
/* act(kiln_linear(x, w, bias)) in one op, the activation applied as the
 * GEMM writes its output (none, relu, sigmoid or tanh: those whose
 * gradient follows from the output). Dense layers use it. */
KILN_API kiln_tensor *kiln_linear_act(kiln_tensor *x, kiln_tensor *w, kiln_tensor *bias, kiln_activation activation);

/* ---------------------------------------------------------------- shape and indexing */

KILN_API kiln_tensor *kiln_concat(int n, kiln_tensor *const *xs, int axis);
KILN_API kiln_tensor *kiln_stack(int n, kiln_tensor *const *xs, int axis);
/* Splits x along axis into n parts of the given sizes (which sum to the
 * axis length). Writes n handles to out; each carries any failure. */
KILN_API kiln_status kiln_split(kiln_tensor *x, int axis, int n, const int64_t *sizes, kiln_tensor **out);
/* Elements of x along axis at integer indices (int32 or int64, any shape):
 * out.shape = x.shape[:axis] + indices.shape + x.shape[axis+1:]. Negative
 * indices count from the end; one out of range fails the op. */
KILN_API kiln_tensor *kiln_take(kiln_tensor *x, kiln_tensor *indices, int axis);
/* torch.gather: out[i][j] = x[i][index[i][j]] along axis (same ndim), except
 * that negative indices count from the end, as in ONNX GatherElements. */
KILN_API kiln_tensor *kiln_gather(kiln_tensor *x, int axis, kiln_tensor *index);
/* indices (integer, any shape) -> float32 of shape indices.shape + [depth]. */
KILN_API kiln_tensor *kiln_one_hot(kiln_tensor *indices, int64_t depth, kiln_dtype dt);
/* pads[2*i], pads[2*i+1] are the elements added before and after axis i. */
KILN_API kiln_tensor *kiln_pad(kiln_tensor *x, int n_pads, const int64_t *pads, double value);
KILN_API kiln_tensor *kiln_cast(kiln_tensor *x, kiln_dtype dt);

/* ---------------------------------------------------------------- neural-network ops */

KILN_API kiln_tensor *kiln_softmax(kiln_tensor *x, int axis);
KILN_API kiln_tensor *kiln_log_softmax(kiln_tensor *x, int axis);
/* Mean over the batch of -log softmax(logits)[label]; logits [N, C], labels
 * [N] int32/int64 in [0, C). Returns a scalar (0-d) float tensor. */
KILN_API kiln_tensor *kiln_softmax_cross_entropy(kiln_tensor *logits, kiln_tensor *labels);

typedef struct {
  int64_t stride[2];
  int64_t padding[2];
  int64_t dilation[2];
  int64_t groups;
} kiln_conv2d_params;
KILN_API kiln_conv2d_params kiln_conv2d_params_default(void); /* stride 1, padding 0, dilation 1, groups 1 */
/* x [N, C, H, W], w [O, C/groups, KH, KW], bias [O] or NULL. */
KILN_API kiln_tensor *kiln_conv2d(kiln_tensor *x, kiln_tensor *w, kiln_tensor *bias, const kiln_conv2d_params *p);

typedef struct {
  int64_t kernel[2];
  int64_t stride[2]; /* 0 means equal to the kernel */
  int64_t padding[2];
  bool count_include_pad; /* avg_pool2d only; default false */
} kiln_pool2d_params;
KILN_API kiln_pool2d_params kiln_pool2d_params_default(int64_t kh, int64_t kw);
KILN_API kiln_tensor *kiln_max_pool2d(kiln_tensor *x, const kiln_pool2d_params *p);
KILN_API kiln_tensor *kiln_avg_pool2d(kiln_tensor *x, const kiln_pool2d_params *p);

/* Inference: normalises x [N, C, ...] with the given running statistics.
 * Training statistics: kiln_batch_norm_train normalises with the batch's own
 * mean and (biased) variance over every axis but 1, and writes them to
 * *batch_mean and *batch_var (each [C]; the variance unbiased, as running
 * statistics want it) when those pointers are not NULL. */
KILN_API kiln_tensor *kiln_batch_norm(kiln_tensor *x, kiln_tensor *gamma, kiln_tensor *beta, kiln_tensor *running_mean,
                                      kiln_tensor *running_var, double eps);
KILN_API kiln_tensor *kiln_batch_norm_train(kiln_tensor *x, kiln_tensor *gamma, kiln_tensor *beta, double eps,
                                            kiln_tensor **batch_mean, kiln_tensor **batch_var);
/* Zeroes each element with probability p and scales the rest by 1/(1-p). */
KILN_API kiln_tensor *kiln_dropout(kiln_generator *gen, kiln_tensor *x, double p);

/* ---------------------------------------------------------------- engine */

/* The dependency engine (MXNet's threaded engine): work is pushed with the
 * variables it reads and writes and the push returns at once; work on one
 * variable runs in push order, reads together, a write alone; independent
 * work runs in parallel on the engine's workers. Every eager op is pushed to
 * the default engine: an op returns its output handle (shape and dtype
 * known) before the values exist, and reading a value waits for it.
 *
 * A pushed function that fails (returns a status other than KILN_OK, with a
 * message from the thread's kiln_last_error) marks the variables it writes as
 * failed; work that reads a failed variable is skipped and passes the failure
 * on. kiln_engine_wait_var returns a variable's failure; wait_all returns the
 * first failure not yet returned by any wait, with the count of others, so no
 * failure is lost or reported twice. The engine works normally afterwards.
 * All functions are thread-safe. */
typedef struct kiln_engine kiln_engine;
typedef struct kiln_engine_var kiln_engine_var;

typedef enum {
  KILN_ENGINE_THREADED = 0, /* worker threads run pushed work */
  KILN_ENGINE_NAIVE,        /* the pushing thread runs it at once, for debugging */
} kiln_engine_mode;

typedef struct {
  kiln_engine_mode mode;
  int workers; /* engine worker threads (threaded mode); 0 = the default split */
  int threads; /* the whole thread budget: workers plus intra-op helpers; 0 = one per CPU */
} kiln_engine_params;
/* mode from KILN_ENGINE ("naive" or "threaded"), threads from
 * KILN_NUM_THREADS, workers from KILN_ENGINE_WORKERS, else the defaults. */
KILN_API kiln_engine_params kiln_engine_params_default(void);

KILN_API kiln_engine *kiln_engine_new(const kiln_engine_params *p); /* NULL + kiln_last_error on failure */
/* Waits for all pushed work, then frees the engine. Variables still alive
 * are freed with it. NULL does nothing. */
KILN_API void kiln_engine_free(kiln_engine *e);
/* The engine the eager API uses, created on first use from
 * kiln_engine_params_default(). */
KILN_API kiln_engine *kiln_default_engine(void);

KILN_API kiln_engine_var *kiln_engine_new_var(kiln_engine *e);
/* The variable goes away after the work already pushed on it; on_delete(data)
 * (may be NULL) runs then, on a worker. No work may be pushed on it after. */
KILN_API kiln_status kiln_engine_delete_var(kiln_engine *e, kiln_engine_var *v, void (*on_delete)(void *data), void *data);

typedef kiln_status (*kiln_engine_fn)(void *data);
/* Runs fn(data) once every earlier push on the same variables allows: reads
 * after the writes before them, a write after every read and write before it.
 * done(data) (may be NULL) runs after fn, or instead of it when fn is
 * skipped because a read variable failed; it is the place to free data.
 * Higher priority runs first among ready work. name (static storage) names
 * the work in errors and the profiler. Fails only on bad arguments or out of
 * memory, and then runs neither fn nor done. */
KILN_API kiln_status kiln_engine_push(kiln_engine *e, kiln_engine_fn fn, void (*done)(void *data), void *data,
                                      kiln_engine_var *const *reads, int n_reads, kiln_engine_var *const *writes, int n_writes,
                                      const char *name, int priority);
/* Waits until the work pushed so far that writes v has run; returns v's
 * failure, if any (its message from kiln_last_error). */
KILN_API kiln_status kiln_engine_wait_var(kiln_engine *e, kiln_engine_var *v);
KILN_API kiln_status kiln_engine_wait_all(kiln_engine *e);

/* Records every op the engine runs (name, worker, push, start and end
 * times) until called again; then, or when the engine is freed, writes them
 * to path as Chrome trace-event JSON, which Perfetto (ui.perfetto.dev) and
 * chrome://tracing open (docs/profiler.md). path NULL stops and writes.
 * KILN_PROFILE=path records the default engine from its start to the exit
 * of the process. */
KILN_API kiln_status kiln_engine_profile(kiln_engine *e, const char *path);

/* The barriers of the eager API: wait for t's value (returns its failure,
 * if any), and for everything pushed to the default engine. */
KILN_API kiln_status kiln_wait_to_read(const kiln_tensor *t);
KILN_API kiln_status kiln_waitall(void);

/* ---------------------------------------------------------------- devices */

/* A device is where a tensor's storage lives and where the ops on it run
 * (d2l 13.3-13.5, MXNet's contexts). Each device has its own engine
 * workers (a ready queue of the default engine, so dependencies still cross
 * devices) and its own allocator accounting. cpu(0) is the default and uses
 * the default engine's workers; cpu(1..KILN_MAX_DEVICES-1) each start one
 * worker of their own at first use. An op runs on the device of its
 * inputs, which must all be on one device (else KILN_ERR_INVALID_ARGUMENT
 * naming both); an op without tensor inputs (zeros, from_data, random)
 * creates on the thread's current device. kiln_to_device is the one way
 * between devices: an engine op on a copy queue of its own, so copies
 * overlap the devices' computation. docs/devices.md has the interface an
 * accelerator backend would implement. */
typedef enum { KILN_DEVICE_CPU = 0 } kiln_device_type;
typedef struct {
  kiln_device_type type;
  int id;
} kiln_device;
#define KILN_MAX_DEVICES 16
KILN_API kiln_device kiln_cpu(int id);
/* Sets the calling thread's device for ops without tensor inputs;
 * KILN_ERR_INVALID_ARGUMENT for a device kiln does not have (the current
 * device is then unchanged). */
KILN_API kiln_status kiln_set_device(kiln_device d);
KILN_API kiln_device kiln_current_device(void);
/* The device of t's storage (cpu(0) for NULL, failed or symbolic tensors). */
KILN_API kiln_device kiln_tensor_device(const kiln_tensor *t);
KILN_API bool kiln_device_equal(kiln_device a, kiln_device b);
/* "cpu(1)" into buf (always terminated); returns buf. */
KILN_API const char *kiln_device_name(kiln_device d, char *buf, size_t cap);
/* A contiguous copy of t on d, pushed as an engine op (a new handle even
 * when t is already on d). Not differentiated: while autograd records, a
 * t that needs a gradient fails with KILN_ERR_UNSUPPORTED. */
KILN_API kiln_tensor *kiln_to_device(kiln_tensor *t, kiln_device d);
/* Bytes of tensor storage d holds now and at most since the process
 * started (or since kiln_device_reset_peak). */
KILN_API kiln_status kiln_device_memory(kiln_device d, int64_t *in_use, int64_t *peak);
KILN_API kiln_status kiln_device_reset_peak(kiln_device d);

/* ---------------------------------------------------------------- autograd */

/* Reverse-mode differentiation on a tape, as MXNet's autograd: mark the
 * tensors to differentiate with kiln_attach_grad, run ops between
 * kiln_record_begin and kiln_record_end, then kiln_backward from the result.
 * Gradients are computed with the registry's own ops (so they run on the
 * engine like any op) and land in each marked tensor's gradient buffer:
 * overwritten by every backward (KILN_GRAD_WRITE) or added to
 * (KILN_GRAD_ADD). Recording state is per thread. */
typedef enum { KILN_GRAD_NULL = 0, KILN_GRAD_WRITE, KILN_GRAD_ADD } kiln_grad_req;

/* Gives t a zero gradient buffer of its shape (float32 or float64 only).
 * KILN_GRAD_NULL detaches t from differentiation. */
KILN_API kiln_status kiln_attach_grad(kiln_tensor *t, kiln_grad_req req);
/* t's gradient buffer (borrowed: valid while t lives and until the next
 * kiln_attach_grad on it), or NULL when t has none. */
KILN_API kiln_tensor *kiln_grad(const kiln_tensor *t);

/* Ops inside a record scope build the tape; training says whether layers
 * like dropout and batch norm behave as in training (kiln_is_training).
 * Scopes nest; kiln_pause_begin/end open a scope that records nothing (the
 * no-grad scope). */
KILN_API kiln_status kiln_record_begin(bool training);
KILN_API kiln_status kiln_record_end(void);
KILN_API kiln_status kiln_pause_begin(void);
KILN_API kiln_status kiln_pause_end(void);
KILN_API bool kiln_is_recording(void);
KILN_API bool kiln_is_training(void);

/* Backpropagates from head: with head_grad NULL, head must have one element
 * and its gradient is 1. Unless retain_graph, the tape behind head is freed
 * (a second backward through it fails with a message saying so). Fails,
 * naming the op, when the path to a marked tensor goes through an op that
 * has no gradient. */
KILN_API kiln_status kiln_backward(kiln_tensor *head, kiln_tensor *head_grad, bool retain_graph);

/* ---------------------------------------------------------------- losses and optimisers */

/* Losses: the mean over the batch (dim 0) of a per-sample loss, itself the
 * mean over the sample's other elements, as Gluon's losses (a scalar, 0-d).
 * Differentiable through autograd. l2 is 0.5 (pred - label)^2; l1 is
 * |pred - label|; binary cross-entropy takes logits and 0/1 (or soft)
 * labels, computed stably as softplus(x) - x z. The softmax cross-entropy
 * with integer labels is kiln_softmax_cross_entropy. */
KILN_API kiln_tensor *kiln_l2_loss(kiln_tensor *pred, kiln_tensor *label);
KILN_API kiln_tensor *kiln_l1_loss(kiln_tensor *pred, kiln_tensor *label);
KILN_API kiln_tensor *kiln_bce_with_logits_loss(kiln_tensor *logits, kiln_tensor *label);

typedef enum { KILN_OPT_SGD = 0, KILN_OPT_ADAM, KILN_OPT_ADAMW } kiln_optimizer_kind;
typedef struct {
  kiln_optimizer_kind kind;
  double lr;
  double momentum;     /* SGD */
  bool nesterov;       /* SGD with momentum */
  double weight_decay; /* SGD and Adam: added to the gradient (L2); AdamW: decoupled */
  double beta1, beta2, eps; /* Adam, AdamW */
} kiln_optimizer_params;
/* lr 0.01 (SGD) or 0.001 (Adam), momentum 0, betas 0.9 and 0.999, eps 1e-8,
 * weight decay 0 (0.01 for AdamW): PyTorch's defaults. */
KILN_API kiln_optimizer_params kiln_optimizer_params_default(kiln_optimizer_kind kind);

/* A trainer over n parameters, each with a gradient buffer
 * (kiln_attach_grad). It keeps its own references to them. Updates are
 * engine ops that write the parameters in place, PyTorch's update rules. */
typedef struct kiln_optimizer kiln_optimizer;
KILN_API kiln_optimizer *kiln_optimizer_new(const kiln_optimizer_params *p, int n, kiln_tensor *const *params);
KILN_API void kiln_optimizer_free(kiln_optimizer *o);
/* One update of every parameter, with each gradient divided by batch_size
 * (Gluon's Trainer.step: losses summed over the batch). */
KILN_API kiln_status kiln_optimizer_step(kiln_optimizer *o, double batch_size);
KILN_API kiln_status kiln_optimizer_set_lr(kiln_optimizer *o, double lr);

/* ---------------------------------------------------------------- symbolic graphs */

/* The chapter's three steps: define, compile, run. A graph's inputs are
 * symbolic tensors (a shape and dtype, no values); the ordinary op
 * functions given a symbolic tensor append a node to its graph instead of
 * computing, with shapes and dtypes checked at the call exactly as eagerly.
 * Concrete tensors an op uses (parameters) are bound by reference: a run
 * reads their values at the time. Reading a symbolic tensor's value fails,
 * naming the op that made it. */
typedef struct kiln_graph kiln_graph;
typedef struct kiln_plan kiln_plan;

KILN_API kiln_graph *kiln_graph_new(void);
KILN_API kiln_graph *kiln_graph_retain(kiln_graph *g);
KILN_API void kiln_graph_release(kiln_graph *g); /* symbolic tensors keep their graph alive */
/* An input named name (unique in g); the plan's inputs are in this order.
 * A dim of -1 is unknown: the graph is built with 1 there, and a run with
 * another size rebuilds the graph for it (each op's checks and inference
 * again, so an op that fixed the size when it was built fails, named)
 * and compiles it once for later runs of that size. */
KILN_API kiln_tensor *kiln_graph_input(kiln_graph *g, const char *name, kiln_dtype dt, int ndim, const int64_t *shape);

/* The passes, each on by default; KILN_DISABLE_PASSES (a list of the
 * names: simplify, cse, fold, dce, fuse, parallel, memory) turns them off in
 * kiln_compile_options_default. */
typedef struct {
  bool simplify;          /* x*1, x+0, double transpose, reshape chains */
  bool cse;               /* one computation of identical (op, inputs, attributes) */
  bool fold;              /* ops on constants computed at compile time */
  bool dce;               /* only what the outputs need */
  bool fuse;              /* elementwise chains as one loop; activations into the GEMM before them */
  bool parallel;          /* independent heavy branches as engine ops of their own, run in parallel */
  bool plan_memory;       /* arena buffers reused after their last reader */
  bool reference_kernels; /* run the reference kernels (for checking) */
  bool verify;            /* check the plan after the passes (always in debug builds) */
} kiln_compile_options;
KILN_API kiln_compile_options kiln_compile_options_default(void);

typedef struct {
  int nodes_before, steps;
  int simplified, merged, folded;
  int fused;    /* steps folded into a fused loop or a GEMM's epilogue */
  int segments; /* engine ops per run: 1, or the branches that run in parallel */
  int in_place; /* elementwise steps writing over an input that dies there */
  int64_t arena_bytes, unplanned_bytes;
} kiln_plan_stats;

/* A plan computing outputs (values of g) from g's inputs. NULL +
 * kiln_last_error on failure. The plan holds the graph and the bound
 * tensors. */
KILN_API kiln_plan *kiln_graph_compile(kiln_graph *g, int n_out, kiln_tensor *const *outputs,
                                       const kiln_compile_options *options);
/* Runs the plan on concrete inputs (each with its input's dtype and shape)
 * as one engine op, and returns at once; outputs[k] are new tensors in the
 * open scope. Runs of one plan are ordered (they share its arena). */
KILN_API kiln_status kiln_plan_run(kiln_plan *p, int n_in, kiln_tensor *const *inputs, kiln_tensor **outputs);
/* Drops the caller's plan; runs in flight keep it until they finish. NULL
 * does nothing. */
KILN_API void kiln_plan_free(kiln_plan *p);
KILN_API kiln_plan_stats kiln_plan_get_stats(const kiln_plan *p);
/* Check mode: runs the graph as traced, node by node, eagerly, and the
 * plan's steps one at a time on the same inputs (in the calling thread,
 * after the plan's earlier runs), comparing every step's outputs with the
 * eager value of the node they stand for (|compiled - eager| <= atol + rtol
 * |eager|, NaN equal to NaN). KILN_OK when all agree; else
 * KILN_ERR_CORRUPT with a message naming the first step and node that
 * differ, the element and both values. A random op draws the same
 * counters on both sides. */
KILN_API kiln_status kiln_plan_check(kiln_plan *p, int n_in, kiln_tensor *const *inputs, double rtol, double atol);
KILN_API int kiln_plan_num_inputs(const kiln_plan *p);
/* The graph as built (every node) and the plan (its steps, values and
 * arena placement), as text or Graphviz dot. */
KILN_API kiln_status kiln_graph_dump(const kiln_graph *g, FILE *out, bool dot);
KILN_API kiln_status kiln_plan_dump(const kiln_plan *p, FILE *out, bool dot);

/* ---------------------------------------------------------------- blocks and layers */

/* A block is parameters + children + a forward function, as a Gluon Block:
 * layers are blocks, and so is a whole model. Blocks are refcounted; a
 * constructor returns one reference, and kiln_block_add_child takes it over,
 * so a model is built without a release per layer. A block is used by one
 * thread at a time. */
typedef struct kiln_block kiln_block;

/* The forward function: self's output from its n inputs, computed with the
 * ordinary ops (so it runs eagerly, records on the tape, and can be traced).
 * It reaches its parameters with kiln_block_param / kiln_block_param_for,
 * its children with kiln_block_child, its own data with kiln_block_user.
 * Returns a tensor (failed on error), as every op does. */
typedef kiln_tensor *(*kiln_forward_fn)(kiln_block *self, int n, kiln_tensor *const *inputs);

/* type names the kind of block in messages ("Dense", "MyNet"); user is
 * given back by kiln_block_user and freed with free_user (may be NULL) when
 * the block goes. NULL + kiln_last_error on failure. */
KILN_API kiln_block *kiln_block_new(const char *type, kiln_forward_fn forward, void *user, void (*free_user)(void *));
KILN_API kiln_block *kiln_block_retain(kiln_block *b);
KILN_API void kiln_block_release(kiln_block *b); /* NULL does nothing */
KILN_API void *kiln_block_user(const kiln_block *b);
KILN_API const char *kiln_block_type(const kiln_block *b);

/* Adds child under name (NULL: its index among b's children, "0", "1", ...,
 * as a sequential container names them), taking over the caller's reference
 * to child, also on failure. A NULL child (a constructor that failed) fails
 * here with the constructor's message, so building a model is checked once,
 * at the end. Names are non-empty, without '.', and unique within b. */
KILN_API kiln_status kiln_block_add_child(kiln_block *b, const char *name, kiln_block *child);
KILN_API int kiln_block_num_children(const kiln_block *b);
/* The i-th child, or the one named name (borrowed); NULL if none. */
KILN_API kiln_block *kiln_block_child(const kiln_block *b, int i);
KILN_API kiln_block *kiln_block_child_named(const kiln_block *b, const char *name);

/* Initialisers. Fans are PyTorch's: for a shape [out, in, k...], fan_in is
 * in * prod(k) and fan_out out * prod(k). */
typedef enum {
  KILN_INIT_CONSTANT = 1,   /* a */
  KILN_INIT_UNIFORM,        /* U(a, b) */
  KILN_INIT_NORMAL,         /* N(mean a, std b) */
  KILN_INIT_XAVIER_UNIFORM, /* U(-r, r), r = a sqrt(6 / (fan_in + fan_out)); a is the gain */
  KILN_INIT_XAVIER_NORMAL,  /* N(0, a sqrt(2 / (fan_in + fan_out))) */
  KILN_INIT_KAIMING_UNIFORM, /* U(-r, r), r = sqrt(6 / ((1 + a^2) fan_in)); a: leaky slope after (0: ReLU) */
  KILN_INIT_KAIMING_NORMAL,  /* N(0, sqrt(2 / ((1 + a^2) fan_in))) */
} kiln_init_kind;
typedef struct {
  kiln_init_kind kind;
  double a, b;
} kiln_init;
KILN_API kiln_init kiln_init_constant(double value);
KILN_API kiln_init kiln_init_uniform(double low, double high);
KILN_API kiln_init kiln_init_normal(double mean, double stddev);
KILN_API kiln_init kiln_init_xavier(bool uniform, double gain);
KILN_API kiln_init kiln_init_kaiming(bool uniform, double negative_slope);

/* Declares parameter name of b: dtype float32 or float64 (any dtype when req
 * is KILN_GRAD_NULL: state such as running statistics), shape with 0 for a
 * dim unknown until the first forward fixes it (deferred shape inference),
 * init NULL for the initialiser kiln_block_initialize gives (layers give
 * biases zeros), req how its gradient is kept. The data exists once the
 * shape is known and the block initialised. */
KILN_API kiln_status kiln_block_add_param(kiln_block *b, const char *name, kiln_dtype dt, int ndim,
                                          const int64_t *shape, const kiln_init *init, kiln_grad_req req);
/* Initialises every parameter of b and its children that has none yet (all
 * of them when force), with its own initialiser or else init (NULL: Xavier
 * uniform); those whose shape is still unknown are initialised when the
 * first forward fixes it. Draws from this thread's default generator
 * (kiln_seed). */
KILN_API kiln_status kiln_block_initialize(kiln_block *b, const kiln_init *init, bool force);
/* In a forward function: parameter name's data (borrowed, valid while b
 * lives), failed when it does not exist or is not initialised. */
KILN_API kiln_tensor *kiln_block_param(kiln_block *b, const char *name);
/* The same, giving the shape the input implies: the first call fixes the
 * unknown dims and initialises the data; every call checks the known dims,
 * failing with both shapes named. */
KILN_API kiln_tensor *kiln_block_param_for(kiln_block *b, const char *name, int ndim, const int64_t *shape);

/* Runs b's forward on x (or on n inputs). The result belongs to the open
 * scope, like an op's. */
KILN_API kiln_tensor *kiln_block_call(kiln_block *b, kiln_tensor *x);
KILN_API kiln_tensor *kiln_block_call_n(kiln_block *b, int n, kiln_tensor *const *inputs);

/* Every parameter of b and its children, depth first, own parameters
 * before children's, named by path ("0.weight", "features.3.bias"); a block
 * reachable twice is listed once. The names belong to the list, the
 * tensors are borrowed from the blocks. Fails, naming it, if a parameter
 * has no data yet (not initialised, or its shape still unknown). */
typedef struct {
  int n;
  char **names;
  kiln_tensor **tensors;
} kiln_param_list;
KILN_API kiln_status kiln_block_collect_params(kiln_block *b, kiln_param_list *out);
KILN_API void kiln_param_list_free(kiln_param_list *l);
/* Writes every parameter to a safetensors file under those names
 * (atomically), and reads them back: every parameter of b must be in the
 * file with its dtype and shape (a still unknown shape is taken from the
 * file) and the file must hold nothing else; everything is checked before
 * any value is written, so a failed load changes nothing. */
KILN_API kiln_status kiln_block_save_parameters(kiln_block *b, const char *path);
KILN_API kiln_status kiln_block_load_parameters(kiln_block *b, const char *path);
/* Converts every float parameter of b and its children (data and declared
 * dtype) to dt, float32 or float64, as Gluon's Block.cast; do it before a
 * trainer takes the parameters. */
KILN_API kiln_status kiln_block_cast(kiln_block *b, kiln_dtype dt);
/* Prints b's tree, one line per block with its parameters' shapes. */
KILN_API kiln_status kiln_block_print(kiln_block *b, FILE *out);

/* Hybridization. After kiln_block_hybridize (which applies to the children
 * too), the first call of b with an input signature (dtypes, shapes,
 * training flag) runs forward with symbolic inputs, compiles the graph it
 * builds (kiln_graph_compile) and caches the plan; later calls with that
 * signature run the plan. Side effects of forward (a printf) happen only
 * while tracing, as in d2l's chapter. The cache holds cache_capacity
 * plans (least recently used goes); kiln_block_trace_log says when and why
 * each trace happened. A block that cannot be traced (it reads values, or
 * calls C code that needs them) is marked with kiln_block_set_traceable;
 * a hybridized ancestor then runs its own forward imperatively and its
 * other hybridized children still run plans. While autograd records, a
 * call runs a forward plan that also keeps what the gradient needs, and
 * records one tape node whose backward is a compiled plan; a forward with
 * random ops (dropout) or state updated in place (BatchNorm in training)
 * runs imperatively when recorded, and the log says so. */
typedef struct {
  bool active; /* false: back to imperative */
  int cache_capacity;
  kiln_compile_options compile;
  /* Check mode: every call also runs kiln_plan_check (rtol 1e-5, atol
   * 1e-6) and fails with its report when a step differs. */
  bool check;
} kiln_hybridize_options;
/* Active, 8 plans, the default passes, check mode when KILN_CHECK_HYBRID=1. */
KILN_API kiln_hybridize_options kiln_hybridize_options_default(void);
KILN_API kiln_status kiln_block_hybridize(kiln_block *b, const kiln_hybridize_options *options);
KILN_API kiln_status kiln_block_set_traceable(kiln_block *b, bool traceable);
/* One line per trace: "trace 2 (input 0 is float32 [16, 784], was float32
 * [256, 784]): 9 nodes -> 5 steps, arena 20480 bytes". "" before any. */
KILN_API const char *kiln_block_trace_log(const kiln_block *b);

/* Layers (Gluon's nn). */
/* Calls the children in order, each on the previous one's output. */
KILN_API kiln_block *kiln_nn_sequential(void);
/* y = act(x w^T + b), weight [units, in_units], bias [units]. flatten: x is
 * [N, ...] flattened to [N, in_units]; else the last axis is in_units.
 * in_units 0: inferred on the first call. */
typedef struct {
  int64_t units, in_units;
  kiln_activation activation;
  bool use_bias, flatten;
} kiln_dense_params;
KILN_API kiln_dense_params kiln_dense_params_default(int64_t units); /* bias, flatten, in_units 0, no activation */
KILN_API kiln_block *kiln_nn_dense(int64_t units, kiln_activation activation);
KILN_API kiln_block *kiln_nn_dense_ex(const kiln_dense_params *p);
/* weight [channels, in_channels / groups, kh, kw], bias [channels]. */
typedef struct {
  int64_t channels, in_channels; /* in_channels 0: inferred on the first call */
  int64_t kernel[2];
  kiln_conv2d_params conv;
  kiln_activation activation;
  bool use_bias;
} kiln_conv2d_layer_params;
KILN_API kiln_conv2d_layer_params kiln_conv2d_layer_params_default(int64_t channels, int64_t kh, int64_t kw);
KILN_API kiln_block *kiln_nn_conv2d(const kiln_conv2d_layer_params *p);
KILN_API kiln_block *kiln_nn_max_pool2d(const kiln_pool2d_params *p);
KILN_API kiln_block *kiln_nn_avg_pool2d(const kiln_pool2d_params *p);
/* [N, C, H, W] -> [N, C, 1, 1]. */
KILN_API kiln_block *kiln_nn_global_avg_pool2d(void);
/* [N, ...] -> [N, prod(...)]. */
KILN_API kiln_block *kiln_nn_flatten(void);
/* Dropout with probability p while training (kiln_is_training), the
 * identity otherwise; masks from this thread's default generator. */
KILN_API kiln_block *kiln_nn_dropout(double p);
/* Over axis 1: gamma, beta (trained), running_mean, running_var (not);
 * in training the batch's statistics normalise and the running ones move as
 * running = momentum running + (1 - momentum) batch; otherwise the running
 * ones normalise. in_channels 0: inferred. Gluon's defaults: momentum 0.9,
 * eps 1e-5. */
KILN_API kiln_block *kiln_nn_batch_norm(int64_t in_channels, double momentum, double eps);
KILN_API kiln_block *kiln_nn_activation(kiln_activation activation);
/* act(x), the function the layers use. */
KILN_API kiln_tensor *kiln_activate(kiln_tensor *x, kiln_activation activation);

/* ---------------------------------------------------------------- training */

/* Learning-rate schedules over the update count t (0 for the first step),
 * as Gluon's schedulers: STEP multiplies by factor every step_size updates;
 * COSINE goes from the base rate to final_lr along half a cosine over
 * total_steps updates and stays there. Both may start with warmup_steps
 * updates rising linearly from warmup_begin_lr to the base rate. */
typedef enum { KILN_LR_CONSTANT = 0, KILN_LR_STEP, KILN_LR_COSINE } kiln_lr_schedule_kind;
typedef struct {
  kiln_lr_schedule_kind kind;
  int64_t step_size;   /* STEP */
  double factor;       /* STEP */
  int64_t total_steps; /* COSINE: updates until final_lr, warmup included */
  double final_lr;     /* COSINE */
  int64_t warmup_steps;
  double warmup_begin_lr;
} kiln_lr_schedule;
/* The rate at update t for base rate base_lr; NAN for an invalid schedule. */
KILN_API double kiln_lr_schedule_at(const kiln_lr_schedule *s, double base_lr, int64_t t);

/* A trainer steps every parameter of a block that has a gradient (its
 * parameters are collected at the first step, when their shapes are known),
 * with the optimiser's rules and the schedule's rate. */
typedef struct kiln_trainer kiln_trainer;
KILN_API kiln_trainer *kiln_trainer_new(kiln_block *b, const kiln_optimizer_params *p);
KILN_API void kiln_trainer_free(kiln_trainer *t);
/* schedule NULL: the constant base rate. */
KILN_API kiln_status kiln_trainer_set_schedule(kiln_trainer *t, const kiln_lr_schedule *schedule);
/* One update, gradients divided by batch_size (1 when the loss is already
 * the batch mean, as kiln's losses are). */
KILN_API kiln_status kiln_trainer_step(kiln_trainer *t, double batch_size);
/* The rate the next step will use. */
KILN_API double kiln_trainer_lr(const kiln_trainer *t);

/* Metrics accumulate on the engine (no wait per batch); get waits. ACCURACY:
 * update(scores [N, C] or class ids [N], labels [N] integer). MEAN_LOSS:
 * update(loss, labels): the mean per sample, a 0-d batch-mean loss weighing
 * as labels' dim 0 samples (1 when labels is NULL), a loss with N values as
 * N samples. */
typedef enum { KILN_METRIC_ACCURACY = 0, KILN_METRIC_MEAN_LOSS } kiln_metric_kind;
typedef struct kiln_metric kiln_metric;
KILN_API kiln_metric *kiln_metric_new(kiln_metric_kind kind);
KILN_API void kiln_metric_free(kiln_metric *m);
KILN_API kiln_status kiln_metric_update(kiln_metric *m, kiln_tensor *pred, kiln_tensor *labels);
/* The value so far (NAN before any sample) and the samples counted. */
KILN_API kiln_status kiln_metric_get(kiln_metric *m, double *value, int64_t *samples);
KILN_API void kiln_metric_reset(kiln_metric *m);

/* ---------------------------------------------------------------- key-value store, data parallelism */

/* A key-value store (d2l 13.7, MXNet's KVStore): values are initialised
 * per key, pushed from several devices (and processes) and summed, and
 * pulled back to each device. Every push and pull is engine work and
 * returns at once: a gradient is summed as soon as backward has computed
 * it, on the copy queue, while backward goes on computing earlier layers'.
 * Higher priority runs first among ready work (give early layers the
 * highest: the next forward needs them first).
 *
 * Kinds: "local", devices of this process; "mpi", also summed across the
 * processes of an MPI job (Open MPI; rank and size from the launcher):
 * the keys of one push are packed into buckets (KILN_KVSTORE_BUCKET_BYTES,
 * default 4 MiB) and each bucket is one allreduce. Every process must push
 * the same keys in the same order (collectives match by order). A
 * collective that makes no progress for the timeout (KILN_KVSTORE_TIMEOUT
 * seconds, default 120) fails with KILN_ERR_IO, naming the keys: a rank
 * died or stopped; the values it wrote carry the failure, so the wait that
 * finds it returns it. Without MPI at build time "mpi" is
 * KILN_ERR_UNSUPPORTED. */
typedef struct kiln_kvstore kiln_kvstore;
KILN_API kiln_kvstore *kiln_kvstore_new(const char *kind); /* NULL + kiln_last_error on failure */
/* Waits for the store's work; an "mpi" store ends MPI if it started it. */
KILN_API void kiln_kvstore_free(kiln_kvstore *kv);
KILN_API int kiln_kvstore_rank(const kiln_kvstore *kv); /* 0 for local */
KILN_API int kiln_kvstore_size(const kiln_kvstore *kv); /* processes: 1 for local */
/* Ends every process of the job at once (MPI_Abort with code) after a
 * failure the program cannot recover from; for "local" it returns. */
KILN_API void kiln_kvstore_abort(kiln_kvstore *kv, int code);
/* The store keeps a copy of value (float32 or float64, any shape) under
 * key (0 <= key < 1 << 20, each once). "mpi": rank 0's value, sent to every
 * process, so replicas start equal. */
KILN_API kiln_status kiln_kvstore_init(kiln_kvstore *kv, int key, kiln_tensor *value);
/* Run by push with the sum of the pushed values (merged) and the stored
 * value, on the pushing thread, to update stored with ops (pushed, as any
 * op): an optimiser in the store. Without one, push stores the sum. */
typedef kiln_status (*kiln_kvstore_updater)(int key, kiln_tensor *merged, kiln_tensor *stored, void *user);
KILN_API kiln_status kiln_kvstore_set_updater(kiln_kvstore *kv, kiln_kvstore_updater updater, void *user);
/* values[k * n_values + d] is device d's value of keys[k]: each the stored
 * dtype and shape, on any device. */
KILN_API kiln_status kiln_kvstore_push(kiln_kvstore *kv, int n_keys, const int *keys, int n_values,
                                       kiln_tensor *const *values, int priority);
/* Writes the stored value of keys[k] into each outs[k * n_outs + d]
 * (contiguous, the stored dtype and shape, on any device), in place. */
KILN_API kiln_status kiln_kvstore_pull(kiln_kvstore *kv, int n_keys, const int *keys, int n_outs,
                                       kiln_tensor *const *outs, int priority);

/* d2l's split_and_load: n consecutive slices of batch along dim 0 (sizes
 * differing by at most one, the larger first), slice d copied to
 * devices[d]. Into out[0..n), each a new handle in the open scope. */
KILN_API kiln_status kiln_split_and_load(kiln_tensor *batch, int n, const kiln_device *devices, kiln_tensor **out);

/* Data-parallel training (d2l 13.5-13.6): one replica of the model per
 * device (built and initialised by the caller with that device current, so
 * their parameters live there), each fed its slice of the batch. new
 * makes every replica's parameters equal to replica 0's (across processes
 * too, through an "mpi" kv: rank 0's); step sums the gradients of all
 * replicas (and processes) through kv, pushing each parameter's as one
 * key, and updates every replica with the same sum. Gradients are divided
 * by batch_size: give the global batch when each replica's loss is summed
 * over its samples, as here the replicas see batches of different sizes.
 * kv NULL: a "local" store of its own. Parameters must be initialised,
 * with their shapes known (run a forward first for deferred shapes). */
typedef struct kiln_parallel_trainer kiln_parallel_trainer;
KILN_API kiln_parallel_trainer *kiln_parallel_trainer_new(int n, kiln_block *const *replicas,
                                                          const kiln_optimizer_params *p, kiln_kvstore *kv);
KILN_API void kiln_parallel_trainer_free(kiln_parallel_trainer *t);
KILN_API kiln_status kiln_parallel_trainer_step(kiln_parallel_trainer *t, double batch_size);

/* ---------------------------------------------------------------- kernels */

/* Every op has an optimised kernel and a plain reference kernel. Ops created
 * by this thread after kiln_use_reference_kernels(true) run the reference;
 * tests use it to compare the two. Returns the previous setting. */
KILN_API bool kiln_use_reference_kernels(bool on);

/* ---------------------------------------------------------------- native models */

/* A hybridized block taken out of C: kiln_block_export writes the graph of
 * its compiled plan and its parameters, and kiln_model_load runs them with
 * no block code (the format is in docs/format.md).
 *
 * kiln_block_export writes PREFIX.kiln.json (the graph: inputs, nodes,
 * outputs, parameter names, dtypes and shapes) and PREFIX.safetensors (the
 * parameter values, which any safetensors reader opens), each atomically
 * (temporary file, flush, fsync, rename); the safetensors file is written
 * first, so a failure leaves the JSON as it was, but the pair as a whole is
 * not replaced atomically. It exports the plan of b's most recently used
 * inference call (neither training nor recording), with the nodes its
 * output depends on; parameters keep their names (kiln_block_collect_params),
 * other tensors the trace captured are stored as "const.N". Input shapes
 * are those of that call; a file may also declare an input dim unknown
 * (-1), and the model then runs at any size there that its ops allow.
 * Fails (KILN_ERR_INVALID_ARGUMENT) when b is not hybridized or has made
 * no inference call yet, and with the status of whatever else fails (a
 * parameter without data, KILN_ERR_IO). */
KILN_API kiln_status kiln_block_export(kiln_block *b, const char *path_prefix);
typedef struct {
  /* Write dim 0 of every input as unknown (-1), so the model runs at any
   * batch size. Checked first: the graph must hold at two other batch
   * sizes and give every output that batch as its dim 0, else the export
   * fails naming the node or output that fixes the batch. */
  bool dynamic_batch;
} kiln_export_options;
KILN_API kiln_status kiln_block_export_ex(kiln_block *b, const char *path_prefix, const kiln_export_options *options);

/* A loaded model: a compiled plan over the graph of a .kiln.json file and
 * the tensors of its .safetensors file. Compiled with the default compile
 * options, so a model exported from a block hybridized with the defaults
 * is the same plan, and gives the same bits. */
typedef struct kiln_model kiln_model;

/* Reads PREFIX.kiln.json and PREFIX.safetensors. Every field is checked
 * before use: the format name and version, the JSON's structure and types
 * (unknown and duplicate keys are errors), op names, their number of
 * inputs, attribute names, types and list lengths, dtypes and shapes
 * (dims, element counts), node references (only to earlier nodes and
 * existing outputs, so the graph is acyclic), duplicate names, and the
 * parameters against the safetensors file (each one there with its dtype
 * and shape, nothing else there). Each op's own inference then checks the
 * shapes and dtypes it is given. On failure returns NULL and the message
 * (kiln_last_error) names the file and the field or node at fault:
 * KILN_ERR_IO (a file cannot be read), KILN_ERR_CORRUPT (malformed),
 * KILN_ERR_UNSUPPORTED (a newer format version, an op or dtype this kiln
 * lacks, more dims than KILN_MAX_DIMS), KILN_ERR_OVERFLOW, an op's status
 * (KILN_ERR_SHAPE, ...) for a node it rejects, KILN_ERR_OUT_OF_MEMORY. Must
 * not be called while a trace is active on the thread. Thread-safe. A
 * path ending in ".onnx" is read as an ONNX model instead (kiln_onnx_load,
 * below). */
KILN_API kiln_model *kiln_model_load(const char *path_prefix);
/* Frees m; runs in flight finish first. NULL does nothing. */
KILN_API void kiln_model_free(kiln_model *m);
/* Runs m on n_in concrete inputs (the model's inputs in order, each with
 * its dtype and shape, any size at an unknown dim: the first run at new
 * sizes builds and compiles the graph for them, as kiln_plan_run does) and
 * writes its outputs to out[0, outputs): new tensors in the open scope,
 * computed asynchronously as kiln_plan_run's. Runs of one model are
 * ordered (they share its memory); any thread may start one. Fails with
 * KILN_ERR_INVALID_ARGUMENT or KILN_ERR_SHAPE, naming the input (or the
 * node that cannot take a new size), and then sets no output. */
KILN_API kiln_status kiln_model_run(kiln_model *m, int n_in, kiln_tensor *const *in, kiln_tensor **out);

/* Introspection (for `kiln info`). The strings and shapes belong to m. A
 * dim of -1 is unknown: an input's as the file declares it, an output's
 * when it follows an unknown input dim. */
typedef struct {
  const char *name;
  kiln_dtype dtype;
  int ndim;
  const int64_t *shape;
} kiln_model_value;
KILN_API int kiln_model_num_inputs(const kiln_model *m); /* 0 for NULL */
KILN_API int kiln_model_num_outputs(const kiln_model *m);
/* Input or output i; KILN_ERR_OUT_OF_RANGE when there is none. */
KILN_API kiln_status kiln_model_input(const kiln_model *m, int i, kiln_model_value *out);
KILN_API kiln_status kiln_model_output(const kiln_model *m, int i, kiln_model_value *out);
/* The ops of the file's nodes by registry name, in name order: kind i
 * (0 <= i < kiln_model_num_op_kinds) is op *name, used *count times. */
KILN_API int kiln_model_num_op_kinds(const kiln_model *m);
KILN_API kiln_status kiln_model_op_count(const kiln_model *m, int i, const char **name, int *count);
typedef struct {
  int nodes;                  /* op nodes in the file */
  int parameters;             /* tensors in the safetensors file */
  int64_t parameter_elements; /* their elements and bytes */
  int64_t parameter_bytes;
  int steps;           /* kernel calls per run, after the compiler's passes */
  int64_t arena_bytes; /* memory the plan reuses across runs (kiln_plan_stats) */
} kiln_model_stats;
KILN_API kiln_model_stats kiln_model_get_stats(const kiln_model *m); /* zeros for NULL */
/* An estimate of the floating-point operations of one run at the input
 * shapes the file declares, unknown dims taken as 1 (so, when only the batch
 * dim is unknown, per sample), summed over the file's op nodes by the rules
 * of docs/cli.md (2*K per output element of matmul and linear, K the inner
 * dim; 2*C_in/groups*KH*KW per output element of conv2d; one per element of
 * elementwise ops; none for views, copies and indexing); INT64_MAX when the
 * sum overflows. KILN_ERR_INVALID_ARGUMENT when m or flops is NULL. */
KILN_API kiln_status kiln_model_flops(const kiln_model *m, int64_t *flops);

/* ---------------------------------------------------------------- ONNX */

/* kiln_model_load reads a path ending in ".onnx" as an ONNX model
 * (ModelProto, default-domain opsets up to 17; the ops and attributes kiln
 * maps are in docs/onnx.md): kiln_onnx_load with no options. The graph is
 * rebuilt with kiln's ops, initializers bound as parameters, graph inputs
 * that are not initializers as the model's inputs (a dim_param or missing
 * dim is unknown, -1), and compiled as a native model is; everything the
 * model answers (kiln_model_input, kiln_model_op_count, ...) is about that
 * graph. Every field is checked before use. An op, attribute value or
 * dtype kiln cannot compute exactly as ONNX defines it fails with
 * KILN_ERR_UNSUPPORTED, the message naming it and the node; a malformed
 * file with KILN_ERR_CORRUPT; never a silently different result.
 *
 * Options: graph inputs given a value here become constants of that value
 * (kiln compiles static graphs, so an input that a node needs as a value
 * at build time, a Reshape's shape, must be fixed so). Inputs are counted
 * among the graph inputs that are not initializers, in the file's order.
 * When the import fails because a node needs the value of such an input
 * that has none, *needed_input (when not NULL) is set to its index, else
 * to -1. */
typedef struct {
  int n_constants;
  const int *constant_inputs;
  kiln_tensor *const *constant_values;
  int *needed_input;
} kiln_onnx_options;
/* *out is the model, or NULL on failure (with kiln_last_error). Thread-safe;
 * not while a trace is active on the thread. */
KILN_API kiln_status kiln_onnx_load(const char *path, const kiln_onnx_options *options, kiln_model **out);
/* A serialized ONNX TensorProto (the conformance suite's input_*.pb and
 * output_*.pb files) as a tensor in the open scope; a failed tensor naming
 * the file and field at fault otherwise. */
KILN_API kiln_tensor *kiln_onnx_load_tensor(const char *path);
/* The op types of the file's nodes, each once in order of first use,
 * separated by spaces, into buf[0, cap) (cut to fit, NUL-terminated). */
KILN_API kiln_status kiln_onnx_op_types(const char *path, char *buf, size_t cap);

/* Export to ONNX (opset 17, IR version 8): the graph kiln_block_export_ex
 * would write (the block's latest inference call; options as there, NULL
 * for none, dynamic_batch making dim 0 of every input the dim_param
 * "batch") as one .onnx file at path, parameters as initializers under
 * their names. Each kiln op becomes the ONNX op or short composition that
 * computes the same function (docs/onnx.md, "Export"); an op without one
 * (random ops, dropout with p > 0, training and gradient ops) fails with
 * KILN_ERR_UNSUPPORTED naming the op and the node. The file is written
 * atomically (temporary file, fsync, rename): on any failure the old file,
 * if any, is left as it was. Also KILN_ERR_INVALID_ARGUMENT (b not
 * hybridized or without an inference call), KILN_ERR_IO,
 * KILN_ERR_OUT_OF_MEMORY. Not while a trace is active on the thread. */
KILN_API kiln_status kiln_block_export_onnx(kiln_block *b, const char *path, const kiln_export_options *options);
/* The same for a loaded model (native or ONNX): the graph its plan was
 * compiled from, inputs' unknown dims as dim_params ("batch" for dim 0);
 * its bound tensors are named "const.N". Not while a trace is active on
 * the thread. */
KILN_API kiln_status kiln_model_export_onnx(const kiln_model *m, const char *path);

/* ---------------------------------------------------------------- datasets */

/* Reads an IDX file, the format of MNIST and Fashion-MNIST: two zero bytes,
 * a type byte, a byte of dimension count (1 to KILN_MAX_DIMS), one
 * big-endian uint32 per dimension, then the elements, big-endian, in C order.
 * A file that starts with the gzip magic (1f 8b) is decompressed through
 * zlib whatever its name; any other file is read as it is. Types map to kiln
 * dtypes without losing a value: 0x08 unsigned byte -> uint8 (what datasets
 * use: MNIST images come back as uint8 [N, 28, 28], labels as uint8 [N]),
 * 0x09 signed byte and 0x0B int16 -> int32 (kiln has no narrower signed
 * type), 0x0C int32 -> int32, 0x0D float32 -> float32, 0x0E float64 ->
 * float64. Every field is checked: the magic, the type, the dimension count,
 * the element count for overflow (before anything is allocated), and the data
 * length, which must be exactly what the dimensions say: a short file fails
 * with "truncated", a long one with "trailing data". A damaged gzip stream
 * fails with "corrupt gzip data" or "truncated gzip stream". Failures are
 * returned as a failed tensor whose message names the path and what is
 * wrong (KILN_ERR_IO when the file cannot be opened or read,
 * KILN_ERR_CORRUPT for malformed contents, KILN_ERR_UNSUPPORTED for more
 * dims than kiln has, KILN_ERR_OVERFLOW for sizes that do not fit). The
 * tensor is contiguous and belongs to the caller (or the open scope).
 * Thread-safe. */
KILN_API kiln_tensor *kiln_load_idx(const char *path);

/* Loads the Fashion-MNIST training (train true: 60 000 images) or test set
 * (10 000) from dir, or, when dir is NULL, from where Debian's
 * dataset-fashion-mnist package puts it (/usr/share/datasets/fashion-mnist).
 * The files are train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz
 * (t10k-... for the test set); a name without .gz is used when only it
 * exists. On success *images is uint8 [N, 28, 28] (0 to 255), *labels uint8
 * [N] (classes 0 to 9), both owned by the caller (or the open scope). On
 * failure both are set to NULL and the message (kiln_last_error) names the
 * path: a missing file is KILN_ERR_IO and says to install Debian's
 * dataset-fashion-mnist package; images and labels that disagree in count or
 * shape, or a label above 9, are KILN_ERR_CORRUPT; anything kiln_load_idx
 * finds wrong is passed on. Thread-safe. */
KILN_API kiln_status kiln_fashion_mnist_load(const char *dir, bool train, kiln_tensor **images, kiln_tensor **labels);

/* A loader cuts a dataset into batches for training: each epoch visits every
 * sample once, in an order shuffled afresh per epoch when asked. Epoch e (0
 * for the first, one more at each kiln_loader_reset) uses a permutation that
 * depends only on seed and e (Fisher-Yates driven by splitmix64), so a run is
 * reproducible whatever the threads or engine mode; without shuffle the
 * order is 0, 1, ..., N - 1. */
typedef struct kiln_loader kiln_loader;
typedef enum {
  KILN_LAST_BATCH_KEEP = 0, /* the last batch of an epoch may be smaller than batch_size */
  KILN_LAST_BATCH_DISCARD,  /* samples that do not fill a whole batch are skipped this epoch */
} kiln_last_batch;

/* images: N samples along dim 0, uint8 (scaled by 1/255 into [0, 1]) or
 * float32/float64 (converted to float32 as they are), any layout; labels:
 * [N] of uint8, int32 or int64. The loader holds a reference to both (the
 * caller keeps its own) and waits for their values here, so a failure they
 * carry is returned now. batch_size must be positive. Returns NULL on
 * failure, with the message in kiln_last_error (KILN_ERR_INVALID_ARGUMENT
 * for a NULL or mismatched argument, KILN_ERR_DTYPE for an unsupported
 * dtype, the tensors' own failure). Free with kiln_loader_free. */
KILN_API kiln_loader *kiln_loader_new(kiln_tensor *images, kiln_tensor *labels, int64_t batch_size, bool shuffle,
                                      uint64_t seed, kiln_last_batch policy);
/* The next batch of the epoch: *x float32 [B, 1, H, W] when images are
 * [N, H, W] (a channel dim is inserted), else [B, images' trailing dims...];
 * *y int64 [B]. B is batch_size except perhaps for the last batch under
 * KILN_LAST_BATCH_KEEP. The handles return at once: the batch is gathered by
 * work pushed to the default engine, so it is prepared while earlier work
 * computes, and reading the values waits for it. Both belong to the caller
 * (or the open scope). When the epoch has no batch left, returns
 * KILN_ERR_OUT_OF_RANGE with the message "end of epoch" (again on every
 * call until kiln_loader_reset). On any status other than KILN_OK, *x and *y
 * are set to NULL. A loader is used by one thread at a time: calls on the
 * same loader must not overlap (different loaders are independent). */
KILN_API kiln_status kiln_loader_next(kiln_loader *l, kiln_tensor **x, kiln_tensor **y);
/* Starts the next epoch, with its own permutation, whether or not the
 * current one was finished. */
KILN_API kiln_status kiln_loader_reset(kiln_loader *l);
/* Batches in one epoch (the same for every epoch); -1 when l is NULL. */
KILN_API int64_t kiln_loader_num_batches(const kiln_loader *l);
/* Releases the loader's references; batches already returned stay valid
 * (pushed work holds what it needs). NULL does nothing. */
KILN_API void kiln_loader_free(kiln_loader *l);

/* ---------------------------------------------------------------- .npy */

/* Reads a NumPy .npy file (version 1-3, little-endian, C order, a kiln dtype)
 * with every header field checked. */
KILN_API kiln_tensor *kiln_load_npy(const char *path);
/* Writes atomically (temporary file, flush, rename). */
KILN_API kiln_status kiln_save_npy(const kiln_tensor *t, const char *path);

/* ---------------------------------------------------------------- safetensors */

/* The safetensors layout (an 8-byte little-endian header length, a JSON
 * header mapping each name to its dtype, shape and data_offsets, then the
 * raw little-endian data), which any safetensors reader opens. Dtypes map
 * F32 F64 I32 I64 U8 BOOL to kiln's. */

/* Writes n tensors under n distinct, non-empty names, atomically (temporary
 * file, flush, fsync, rename: a reader sees the old file or the new one,
 * never a part). Tensors may be any layout; their values are waited for, and
 * a failure they carry is returned without touching path. */
KILN_API kiln_status kiln_save_safetensors(const char *path, int n, const char *const *names,
                                           kiln_tensor *const *tensors);
/* Reads every tensor of a safetensors file, checking every field before use:
 * the header length against the file, the JSON (strict, bounded depth), each
 * entry's dtype, shape (element count overflow) and data_offsets (in order,
 * inside the data, exactly the size dtype and shape give, no overlap, no
 * gap), duplicate names; "__metadata__" (a string-to-string map) is checked
 * and skipped. On success *n, *names (n NUL-terminated strings, in the
 * file's order of data) and *tensors (n contiguous tensors owned by the
 * caller, in no scope) are set; free them with kiln_named_tensors_free. On
 * failure they are set to 0 / NULL and the message names the path and what
 * is wrong (KILN_ERR_IO, KILN_ERR_CORRUPT, KILN_ERR_UNSUPPORTED for a dtype
 * kiln lacks, KILN_ERR_OVERFLOW). */
KILN_API kiln_status kiln_load_safetensors(const char *path, int *n, char ***names, kiln_tensor ***tensors);
/* Frees what kiln_load_safetensors returned (releasing the tensors). */
KILN_API void kiln_named_tensors_free(int n, char **names, kiln_tensor **tensors);

#ifdef __cplusplus
}
#endif
#endif
