/* Misuse: every bad input gives a failed tensor (never NULL, never an
 * abort) whose status and message name the op and the offending shapes or
 * values; failures propagate unchanged; status-returning calls fail with a
 * message in kiln_last_error; the library prints nothing; an allocation
 * failure at any point leaks nothing. */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stdatomic.h>

#include "testutil.h"

/* Asserts t failed with st and that its message contains every string of
 * texts (NULL-terminated). */
static void fails_with(const char *label, kiln_tensor *t, kiln_status st, const char *const *texts) {
  assert_non_null(t);
  const char *msg = kiln_tensor_error(t);
  bool ok = kiln_tensor_status(t) == st;
  for (int i = 0; texts[i] && ok; i++) ok = strstr(msg, texts[i]) != NULL;
  if (!ok) {
    fprintf(stderr, "%s: expected %s with", label, kiln_status_name(st));
    for (int i = 0; texts[i]; i++) fprintf(stderr, " \"%s\"", texts[i]);
    fprintf(stderr, "; got %s: \"%s\"\n", kiln_status_name(kiln_tensor_status(t)), msg);
    fail();
  }
  kiln_tensor_release(t);
}
#define FAILS(t, st, ...) fails_with(#t, (t), (st), (const char *const[]){__VA_ARGS__, NULL})

static kiln_tensor *z(int nd, const int64_t *shape) { return kiln_zeros(KILN_F32, nd, shape); }

static void broadcast_failures_name_both_shapes(void **state) {
  (void)state;
  kiln_tensor *a = z(2, (int64_t[]){2, 3}), *b = z(2, (int64_t[]){4, 3}), *c = z(1, (int64_t[]){5});
  FAILS(kiln_add(a, b), KILN_ERR_SHAPE, "add", "[2, 3]", "[4, 3]");
  FAILS(kiln_less(b, c), KILN_ERR_SHAPE, "less", "[4, 3]", "[5]");
  FAILS(kiln_logical_or(a, c), KILN_ERR_SHAPE, "logical_or", "[2, 3]", "[5]");
  FAILS(kiln_where(a, b, a), KILN_ERR_SHAPE, "where", "[2, 3]", "[4, 3]");
  FAILS(kiln_broadcast_to(a, 2, (int64_t[]){2, 4}), KILN_ERR_SHAPE, "broadcast_to", "[2, 3]", "[2, 4]");
  FAILS(kiln_broadcast_to(a, 1, (int64_t[]){3}), KILN_ERR_SHAPE, "broadcast_to", "[2, 3]", "[3]");
  FAILS(kiln_reshape(a, 1, (int64_t[]){4}), KILN_ERR_SHAPE, "reshape", "[2, 3]", "[4]");
  FAILS(kiln_reshape(a, 2, (int64_t[]){-1, 4}), KILN_ERR_SHAPE, "reshape", "[2, 3]", "[-1, 4]");
  FAILS(kiln_matmul(a, b), KILN_ERR_SHAPE, "matmul", "[2, 3]", "[4, 3]");
  kiln_tensor *w = z(2, (int64_t[]){4, 5}), *bias = z(1, (int64_t[]){3});
  FAILS(kiln_linear(a, w, NULL), KILN_ERR_SHAPE, "linear", "[2, 3]", "[4, 5]");
  kiln_tensor *x25 = z(2, (int64_t[]){2, 5});
  FAILS(kiln_linear(x25, w, bias), KILN_ERR_SHAPE, "linear", "[3]");
  kiln_tensor *rel[] = {a, b, c, w, bias, x25};
  for (int i = 0; i < 6; i++) kiln_tensor_release(rel[i]);
}

/* Batch dims that cannot broadcast: the message should show the operands'
 * shapes, not only the batch parts ("shapes [2] and [5]" names neither). */
static void matmul_batch_mismatch_names_operands(void **state) {
  (void)state;
  kiln_tensor *a = z(3, (int64_t[]){2, 3, 4}), *b = z(3, (int64_t[]){5, 4, 2});
  FAILS(kiln_matmul(a, b), KILN_ERR_SHAPE, "matmul", "[2, 3, 4]", "[5, 4, 2]");
  kiln_tensor_release(a);
  kiln_tensor_release(b);
}

static void axis_out_of_range(void **state) {
  (void)state;
  kiln_tensor *x = z(3, (int64_t[]){2, 3, 4});
  FAILS(kiln_sum(x, 1, (int[]){3}, false), KILN_ERR_OUT_OF_RANGE, "sum", "3");
  FAILS(kiln_max(x, 2, (int[]){0, -4}, false), KILN_ERR_OUT_OF_RANGE, "max", "-4");
  FAILS(kiln_argmax(x, 3, false), KILN_ERR_OUT_OF_RANGE, "argmax", "3");
  FAILS(kiln_argmin(x, -4, false), KILN_ERR_OUT_OF_RANGE, "argmin", "-4");
  FAILS(kiln_squeeze(x, 5), KILN_ERR_OUT_OF_RANGE, "squeeze", "5");
  FAILS(kiln_squeeze(x, 0), KILN_ERR_SHAPE, "squeeze", "2");
  FAILS(kiln_expand_dims(x, 4 + 1), KILN_ERR_OUT_OF_RANGE, "expand_dims", "5");
  FAILS(kiln_expand_dims(x, -5), KILN_ERR_OUT_OF_RANGE, "expand_dims", "-5");
  FAILS(kiln_slice(x, 3, 0, 1, 1), KILN_ERR_OUT_OF_RANGE, "slice", "3");
  FAILS(kiln_transpose(x, 0, 3), KILN_ERR_OUT_OF_RANGE, "transpose", "3");
  FAILS(kiln_permute(x, 3, (int[]){0, 1, 3}), KILN_ERR_OUT_OF_RANGE, "permute", "3");
  FAILS(kiln_permute(x, 3, (int[]){0, 1, 1}), KILN_ERR_INVALID_ARGUMENT, "permute", "1");
  FAILS(kiln_permute(x, 2, (int[]){0, 1}), KILN_ERR_INVALID_ARGUMENT, "permute", "2");
  FAILS(kiln_sum(x, 2, (int[]){1, -2}, false), KILN_ERR_INVALID_ARGUMENT, "sum", "1");
  kiln_tensor_release(x);
}

static void dtype_not_taken(void **state) {
  (void)state;
  kiln_tensor *i = kiln_zeros(KILN_I32, 1, (int64_t[]){3}), *f = z(1, (int64_t[]){3});
  kiln_tensor *d = kiln_zeros(KILN_F64, 1, (int64_t[]){3}), *b = kiln_zeros(KILN_BOOL, 1, (int64_t[]){3});
  FAILS(kiln_exp(i), KILN_ERR_DTYPE, "exp", "int32");
  FAILS(kiln_sigmoid(b), KILN_ERR_DTYPE, "sigmoid", "bool");
  FAILS(kiln_neg(b), KILN_ERR_DTYPE, "neg", "bool");
  FAILS(kiln_add(f, d), KILN_ERR_DTYPE, "add", "float32", "float64");
  FAILS(kiln_add(b, b), KILN_ERR_DTYPE, "add", "bool");
  FAILS(kiln_where(b, f, d), KILN_ERR_DTYPE, "where", "float32", "float64");
  FAILS(kiln_matmul(i, i), KILN_ERR_DTYPE, "matmul", "int32");
  FAILS(kiln_matmul(f, d), KILN_ERR_DTYPE, "matmul", "float64");
  FAILS(kiln_mean(i, 0, NULL, false), KILN_ERR_DTYPE, "mean", "int32");
  FAILS(kiln_var(i, 0, NULL, false, 0), KILN_ERR_DTYPE, "var", "int32");
  FAILS(kiln_max(b, 0, NULL, false), KILN_ERR_DTYPE, "max", "bool");
  FAILS(kiln_argmax(b, 0, false), KILN_ERR_DTYPE, "argmax", "bool");
  FAILS(kiln_random_uniform(NULL, 0, 1, KILN_I32, 1, (int64_t[]){3}), KILN_ERR_DTYPE, "random_uniform", "int32");
  FAILS(kiln_zeros((kiln_dtype)17, 1, (int64_t[]){3}), KILN_ERR_DTYPE, "17");
  FAILS(kiln_from_data((kiln_dtype)-1, 1, (int64_t[]){1}, "x"), KILN_ERR_DTYPE, "-1");
  kiln_tensor *rel[] = {i, f, d, b};
  for (int k = 0; k < 4; k++) kiln_tensor_release(rel[k]);
}

static void sizes_that_overflow(void **state) {
  (void)state;
  const int64_t huge[2] = {(int64_t)1 << 40, (int64_t)1 << 40};
  FAILS(kiln_zeros(KILN_F32, 2, huge), KILN_ERR_OVERFLOW, "1099511627776");
  FAILS(kiln_random_normal(NULL, 0, 1, KILN_F32, 2, huge), KILN_ERR_OVERFLOW, "random_normal", "1099511627776");
  FAILS(kiln_from_data(KILN_F64, 2, huge, "x"), KILN_ERR_OVERFLOW, "1099511627776");
  /* Element count fits, byte count does not. */
  const int64_t bytes[2] = {(int64_t)1 << 31, (int64_t)1 << 31};
  FAILS(kiln_ones(KILN_F64, 2, bytes), KILN_ERR_OVERFLOW, "2147483648");
  kiln_tensor *x = z(1, (int64_t[]){4});
  FAILS(kiln_reshape(x, 3, (int64_t[]){(int64_t)1 << 40, (int64_t)1 << 40, 0}), KILN_ERR_OVERFLOW, "reshape");
  FAILS(kiln_arange(0, 1e300, 1, KILN_F32), KILN_ERR_OVERFLOW, "arange");
  FAILS(kiln_zeros(KILN_F32, 2, (int64_t[]){3, -1}), KILN_ERR_INVALID_ARGUMENT, "[3, -1]");
  kiln_tensor_release(x);
}

/* A broadcast view whose element count overflows int64 must fail like
 * kiln_zeros does: numel, copies and reductions of it are meaningless. */
static void broadcast_to_overflowing_shape(void **state) {
  (void)state;
  kiln_tensor *x = z(1, (int64_t[]){4});
  FAILS(kiln_broadcast_to(x, 3, (int64_t[]){(int64_t)1 << 40, (int64_t)1 << 40, 4}), KILN_ERR_OVERFLOW,
        "broadcast_to", "1099511627776");
  kiln_tensor_release(x);
}

static void null_arguments(void **state) {
  (void)state;
  kiln_tensor *x = z(2, (int64_t[]){2, 3});
  FAILS(kiln_add(NULL, x), KILN_ERR_INVALID_ARGUMENT, "add", "NULL");
  FAILS(kiln_add(x, NULL), KILN_ERR_INVALID_ARGUMENT, "add", "NULL");
  FAILS(kiln_neg(NULL), KILN_ERR_INVALID_ARGUMENT, "neg", "NULL");
  FAILS(kiln_sum(NULL, 0, NULL, false), KILN_ERR_INVALID_ARGUMENT, "sum", "NULL");
  FAILS(kiln_argmax(NULL, 0, false), KILN_ERR_INVALID_ARGUMENT, "argmax", "NULL");
  FAILS(kiln_matmul(x, NULL), KILN_ERR_INVALID_ARGUMENT, "matmul", "NULL");
  FAILS(kiln_linear(NULL, x, NULL), KILN_ERR_INVALID_ARGUMENT, "linear", "NULL");
  FAILS(kiln_where(NULL, x, x), KILN_ERR_INVALID_ARGUMENT, "where", "NULL");
  FAILS(kiln_reshape(NULL, 1, (int64_t[]){6}), KILN_ERR_INVALID_ARGUMENT, "reshape", "NULL");
  FAILS(kiln_transpose(NULL, 0, 1), KILN_ERR_INVALID_ARGUMENT, "NULL");
  FAILS(kiln_slice(NULL, 0, 0, 1, 1), KILN_ERR_INVALID_ARGUMENT, "slice", "NULL");
  FAILS(kiln_contiguous(NULL), KILN_ERR_INVALID_ARGUMENT, "NULL");
  FAILS(kiln_copy(NULL), KILN_ERR_INVALID_ARGUMENT, "copy", "NULL");
  FAILS(kiln_add_scalar(NULL, 1), KILN_ERR_INVALID_ARGUMENT, "add_scalar", "NULL");
  /* NULL shape with ndim > 0. */
  FAILS(kiln_zeros(KILN_F32, 2, NULL), KILN_ERR_INVALID_ARGUMENT, "shape is NULL");
  FAILS(kiln_from_data(KILN_F32, 1, NULL, "abcd"), KILN_ERR_INVALID_ARGUMENT, "shape is NULL");
  FAILS(kiln_from_data(KILN_F32, 1, (int64_t[]){1}, NULL), KILN_ERR_INVALID_ARGUMENT, "data is NULL");
  FAILS(kiln_random_uniform(NULL, 0, 1, KILN_F32, 1, NULL), KILN_ERR_INVALID_ARGUMENT, "shape is NULL");
  FAILS(kiln_reshape(x, 2, NULL), KILN_ERR_INVALID_ARGUMENT, "reshape", "NULL");
  FAILS(kiln_broadcast_to(x, 2, NULL), KILN_ERR_INVALID_ARGUMENT, "broadcast_to");
  FAILS(kiln_permute(x, 2, NULL), KILN_ERR_INVALID_ARGUMENT, "permute");
  FAILS(kiln_sum(x, 1, NULL, false), KILN_ERR_INVALID_ARGUMENT, "sum", "NULL");
  /* Accessors on NULL. */
  assert_int_equal(kiln_tensor_status(NULL), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_tensor_error(NULL), "NULL"));
  assert_int_equal(kiln_tensor_numel(NULL), 0);
  kiln_tensor_release(NULL);
  char buf[8];
  assert_int_equal(kiln_tensor_format(NULL, buf, sizeof buf, NULL), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_tensor_print(x, NULL), KILN_ERR_INVALID_ARGUMENT);
  double v;
  assert_int_equal(kiln_tensor_item(NULL, &v), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_tensor_copy_to(NULL, buf, sizeof buf), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "NULL"));
  assert_string_equal(kiln_version(), KILN_TEST_PROJECT_VERSION);
  /* A call that returns NULL leaves its status beside its message. */
  assert_null(kiln_model_load("/nonexistent/model"));
  assert_int_equal(kiln_last_status(), KILN_ERR_IO);
  assert_null(kiln_graph_compile(NULL, 1, &x, NULL));
  assert_int_equal(kiln_last_status(), KILN_ERR_INVALID_ARGUMENT);
  kiln_tensor_release(x);
}

static void too_many_dims(void **state) {
  (void)state;
  const int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  FAILS(kiln_zeros(KILN_F32, 9, nine), KILN_ERR_INVALID_ARGUMENT, "9 dims");
  FAILS(kiln_zeros(KILN_F32, -1, nine), KILN_ERR_INVALID_ARGUMENT, "-1 dims");
  FAILS(kiln_from_data(KILN_U8, 9, nine, "a"), KILN_ERR_INVALID_ARGUMENT, "9 dims");
  FAILS(kiln_random_bernoulli(NULL, 0.5, KILN_F32, 9, nine), KILN_ERR_INVALID_ARGUMENT, "9 dims");
  kiln_tensor *e = kiln_zeros(KILN_F32, 8, nine);
  TU_OK(e);
  FAILS(kiln_expand_dims(e, 0), KILN_ERR_INVALID_ARGUMENT, "expand_dims", "8 dims");
  FAILS(kiln_reshape(e, 9, nine), KILN_ERR_INVALID_ARGUMENT, "reshape", "9");
  FAILS(kiln_broadcast_to(e, 9, nine), KILN_ERR_INVALID_ARGUMENT, "broadcast_to", "9");
  kiln_tensor_release(e);
}

static void bad_values(void **state) {
  (void)state;
  kiln_tensor *x = z(1, (int64_t[]){4});
  FAILS(kiln_clip(x, 2, 1), KILN_ERR_INVALID_ARGUMENT, "clip", "2", "1");
  FAILS(kiln_slice(x, 0, 0, 4, 0), KILN_ERR_INVALID_ARGUMENT, "slice", "step");
  FAILS(kiln_arange(0, 5, 0, KILN_F32), KILN_ERR_INVALID_ARGUMENT, "arange", "step");
  FAILS(kiln_arange(0, NAN, 1, KILN_F32), KILN_ERR_INVALID_ARGUMENT, "arange", "nan");
  FAILS(kiln_linspace(0, 1, -1, KILN_F32), KILN_ERR_INVALID_ARGUMENT, "linspace", "-1");
  FAILS(kiln_eye(-2, 3, KILN_F32), KILN_ERR_INVALID_ARGUMENT, "eye", "-2");
  FAILS(kiln_random_uniform(NULL, 1, 1, KILN_F32, 1, (int64_t[]){2}), KILN_ERR_INVALID_ARGUMENT, "random_uniform");
  FAILS(kiln_random_normal(NULL, 0, -1, KILN_F32, 1, (int64_t[]){2}), KILN_ERR_INVALID_ARGUMENT, "random_normal", "-1");
  FAILS(kiln_random_bernoulli(NULL, 1.5, KILN_F32, 1, (int64_t[]){2}), KILN_ERR_INVALID_ARGUMENT, "random_bernoulli",
        "1.5");
  FAILS(kiln_var(x, 0, NULL, false, -1), KILN_ERR_INVALID_ARGUMENT, "var", "ddof");
  kiln_tensor *s = z(0, NULL);
  FAILS(kiln_slice(s, 0, 0, 1, 1), KILN_ERR_INVALID_ARGUMENT, "slice", "0-d");
  FAILS(kiln_matmul(s, x), KILN_ERR_SHAPE, "matmul", "0-d");
  kiln_tensor *i = kiln_from_data(KILN_I64, 1, (int64_t[]){2}, (int64_t[]){4, 2});
  FAILS(kiln_pow_scalar(i, -1), KILN_ERR_OUT_OF_RANGE, "pow");
  kiln_tensor_release(x), kiln_tensor_release(s), kiln_tensor_release(i);
}

/* An op given a failed input returns the same status and message. */
static void failure_propagates(void **state) {
  (void)state;
  kiln_tensor *a = z(2, (int64_t[]){2, 3}), *b = z(1, (int64_t[]){4});
  kiln_tensor *bad = kiln_add(a, b);
  kiln_status st = kiln_tensor_status(bad);
  assert_int_equal(st, KILN_ERR_SHAPE);
  char msg[600];
  snprintf(msg, sizeof msg, "%s", kiln_tensor_error(bad));
  kiln_tensor *outs[] = {
      kiln_exp(bad),
      kiln_add(a, bad),
      kiln_where(a, a, bad),
      kiln_sum(bad, 0, NULL, false),
      kiln_argmax(bad, KILN_ALL_AXES, false),
      kiln_matmul(bad, a),
      kiln_linear(a, a, bad),
      kiln_reshape(bad, 1, (int64_t[]){-1}),
      kiln_transpose(bad, 0, 1),
      kiln_permute(bad, 0, NULL),
      kiln_slice(bad, 0, 0, 1, 1),
      kiln_squeeze(bad, KILN_ALL_AXES),
      kiln_expand_dims(bad, 0),
      kiln_broadcast_to(bad, 1, (int64_t[]){3}),
      kiln_contiguous(bad),
      kiln_copy(bad),
      kiln_clip(bad, 0, 1),
      kiln_mul_scalar(bad, 2),
  };
  for (size_t k = 0; k < sizeof outs / sizeof outs[0]; k++) {
    assert_non_null(outs[k]);
    if (kiln_tensor_status(outs[k]) != st || strcmp(kiln_tensor_error(outs[k]), msg) != 0) {
      fprintf(stderr, "propagation %zu: got %s \"%s\", expected %s \"%s\"\n", k,
              kiln_status_name(kiln_tensor_status(outs[k])), kiln_tensor_error(outs[k]), kiln_status_name(st), msg);
      fail();
    }
    /* A second hop keeps it too. */
    kiln_tensor *again = kiln_neg(outs[k]);
    assert_string_equal(kiln_tensor_error(again), msg);
    kiln_tensor_release(again);
    kiln_tensor_release(outs[k]);
  }
  /* Reads that reach it return its status. */
  float buf[8];
  double v;
  assert_int_equal(kiln_tensor_copy_to(bad, buf, sizeof buf), st);
  assert_non_null(strstr(kiln_last_error(), msg));
  assert_int_equal(kiln_tensor_item(bad, &v), st);
  kiln_tensor_release(a), kiln_tensor_release(b), kiln_tensor_release(bad);
}

static void status_calls_fail_with_messages(void **state) {
  (void)state;
  kiln_tensor *x = z(2, (int64_t[]){2, 3});
  double v = 123;
  assert_int_equal(kiln_tensor_item(x, &v), KILN_ERR_SHAPE);
  assert_non_null(strstr(kiln_last_error(), "[2, 3]"));
  assert_non_null(strstr(kiln_last_error(), "6"));
  assert_true(v == 123);
  assert_int_equal(kiln_tensor_item(x, NULL), KILN_ERR_INVALID_ARGUMENT);
  float small[5];
  assert_int_equal(kiln_tensor_copy_to(x, small, sizeof small), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "20"));
  assert_non_null(strstr(kiln_last_error(), "24"));
  assert_int_equal(kiln_tensor_copy_to(x, NULL, 24), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_scope_end(), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "scope"));
  /* Balanced scopes then one end too many. */
  assert_int_equal(kiln_scope_begin(), KILN_OK);
  assert_int_equal(kiln_scope_end(), KILN_OK);
  assert_int_equal(kiln_scope_end(), KILN_ERR_INVALID_ARGUMENT);
  assert_string_equal(kiln_status_name(KILN_ERR_SHAPE), "KILN_ERR_SHAPE");
  assert_string_equal(kiln_status_str(KILN_ERR_SHAPE), "shape mismatch");
  assert_string_equal(kiln_status_name((kiln_status)99), "unknown status");
  assert_string_equal(kiln_dtype_name((kiln_dtype)99), "unknown");
  assert_int_equal(kiln_dtype_size((kiln_dtype)99), 0);
  kiln_tensor_release(x);
}

/* Nothing is written to stdout or stderr by failing calls. */
static void library_never_prints(void **state) {
  (void)state;
  char path[] = "/tmp/kiln_test_errors_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  fflush(stdout);
  fflush(stderr);
  int saved_out = dup(1), saved_err = dup(2);
  dup2(fd, 1);
  dup2(fd, 2);
  kiln_tensor *a = z(2, (int64_t[]){2, 3}), *b = z(1, (int64_t[]){4});
  kiln_tensor *i1 = kiln_ones(KILN_I32, 1, (int64_t[]){1}), *i0 = kiln_zeros(KILN_I32, 1, (int64_t[]){1});
  kiln_tensor *t[] = {kiln_add(a, b),
                      kiln_exp(i1),
                      kiln_zeros(KILN_F32, 2, (int64_t[]){(int64_t)1 << 40, (int64_t)1 << 40}),
                      kiln_sum(a, 1, (int[]){7}, false),
                      kiln_matmul(a, a),
                      kiln_neg(NULL),
                      kiln_reshape(a, 1, (int64_t[]){5}),
                      kiln_div(i1, i0)};
  double v;
  kiln_tensor_item(a, &v);
  kiln_scope_end();
  kiln_tensor_copy_to(a, &v, 1);
  fflush(stdout);
  fflush(stderr);
  dup2(saved_out, 1);
  dup2(saved_err, 2);
  close(saved_out);
  close(saved_err);
  off_t size = lseek(fd, 0, SEEK_END);
  close(fd);
  unlink(path);
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    assert_non_null(t[i]);
    assert_int_not_equal(kiln_tensor_status(t[i]), KILN_OK);
    kiln_tensor_release(t[i]);
  }
  kiln_tensor_release(a), kiln_tensor_release(b), kiln_tensor_release(i1), kiln_tensor_release(i0);
  assert_int_equal(size, 0);
}

/* Fail the Nth allocation for every N a sequence of ops makes: each op
 * returns a handle (OOM or OK, never NULL) and nothing leaks. */
/* Atomic: kernels allocate scratch on engine workers. */
static atomic_long live, countdown;
static void *failing_alloc(size_t size, size_t align, void *user) {
  (void)user;
  long left = atomic_load(&countdown);
  while (left > 0 && !atomic_compare_exchange_weak(&countdown, &left, left - 1)) {
  }
  if (left == 0) return NULL;
  void *p = NULL;
  if (posix_memalign(&p, align, size ? size : 1) != 0) return NULL;
  live++;
  return p;
}
static void failing_free(void *p, void *user) {
  (void)user;
  if (p) live--;
  free(p);
}

static void allocation_failure_at_every_point(void **state) {
  (void)state;
  kiln_waitall(); /* memory the old allocator gave must go back to it */
  kiln_set_allocator(failing_alloc, failing_free, NULL);
  countdown = -1;
  tu_settle();
  long base = live;
  kiln_tensor *x = kiln_ones(KILN_F32, 2, (int64_t[]){4, 5});
  kiln_tensor *xt = kiln_transpose(x, 0, 1);
  bool succeeded = false;
  for (long n = 0; n < 200 && !succeeded; n++) {
    tu_settle();
    long before = live;
    countdown = n;
    kiln_tensor *outs[4];
    outs[0] = kiln_exp(xt);
    outs[1] = kiln_sum(outs[0], 1, (int[]){0}, false);
    outs[2] = kiln_matmul(x, xt);
    outs[3] = kiln_reshape(xt, 1, (int64_t[]){-1});
    countdown = -1;
    succeeded = true;
    for (int i = 0; i < 4; i++) {
      assert_non_null(outs[i]);
      kiln_status st = kiln_tensor_status(outs[i]);
      assert_true(st == KILN_OK || st == KILN_ERR_OUT_OF_MEMORY);
      succeeded = succeeded && st == KILN_OK;
    }
    for (int i = 0; i < 4; i++) kiln_tensor_release(outs[i]);
    tu_settle(); /* the engine frees released storage after pending work, into the block cache */
    if (live != before) {
      fprintf(stderr, "allocation %ld failing: %ld allocations leaked\n", n, live - before);
      fail();
    }
  }
  assert_true(succeeded);
  kiln_tensor_release(xt);
  kiln_tensor_release(x);
  tu_settle();
  assert_int_equal(live, base);
  kiln_waitall(); /* memory the old allocator gave must go back to it */
  kiln_set_allocator(NULL, NULL, NULL);
}

/* kiln_tensor_status and kiln_tensor_error are queries: asking about a
 * failed tensor must not replace the message of the last failing call (it
 * did once they began to wait for the engine, and an argument evaluated
 * after a failing call clobbered that call's message). */
static void status_queries_leave_last_error_alone(void **state) {
  (void)state;
  kiln_tensor *a = kiln_ones(KILN_F32, 1, (int64_t[]){2}), *b = kiln_ones(KILN_F32, 1, (int64_t[]){3});
  kiln_tensor *bad = kiln_add(a, b);
  assert_int_equal(kiln_scope_end(), KILN_ERR_INVALID_ARGUMENT);
  char before[512];
  snprintf(before, sizeof before, "%s", kiln_last_error());
  assert_int_equal(kiln_tensor_status(bad), KILN_ERR_SHAPE);
  assert_non_null(strstr(kiln_tensor_error(bad), "add"));
  assert_string_equal(kiln_last_error(), before);
  kiln_tensor_release(bad);
  kiln_tensor_release(a);
  kiln_tensor_release(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(broadcast_failures_name_both_shapes),
      cmocka_unit_test(matmul_batch_mismatch_names_operands),
      cmocka_unit_test(axis_out_of_range),
      cmocka_unit_test(dtype_not_taken),
      cmocka_unit_test(sizes_that_overflow),
      cmocka_unit_test(broadcast_to_overflowing_shape),
      cmocka_unit_test(null_arguments),
      cmocka_unit_test(too_many_dims),
      cmocka_unit_test(bad_values),
      cmocka_unit_test(failure_propagates),
      cmocka_unit_test(status_calls_fail_with_messages),
      cmocka_unit_test(library_never_prints),
      cmocka_unit_test(allocation_failure_at_every_point),
      cmocka_unit_test(status_queries_leave_last_error_alone),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
