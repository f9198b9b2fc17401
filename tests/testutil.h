/* Shared test helpers: random tensors, comparisons that print both values and
 * the tolerance on a mismatch, and fixture loading. */
#ifndef KILN_TESTUTIL_H
#define KILN_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kiln.h"

/* Uniform in [lo, hi) for floats, integers in [lo, hi] for integer types,
 * 0/1 for bool; deterministic in seed. The caller releases it. */
kiln_tensor *tu_random(kiln_dtype dt, int ndim, const int64_t *shape, uint64_t seed, double lo, double hi);
/* The same values as x in a non-contiguous layout: a transposed copy
 * transposed back, so tests exercise the strided paths. */
kiln_tensor *tu_noncontiguous(kiln_tensor *x);

/* True when got and want have the same shape and dtype and
 * |got - want| <= atol + rtol * |want| elementwise (NaN equals NaN). On a
 * mismatch prints the first offending element, both values and the
 * tolerance, with the label. */
bool tu_close(const char *label, const kiln_tensor *got, const kiln_tensor *want, double rtol, double atol);
/* Same, against a plain array of doubles in row-major order. */
bool tu_close_values(const char *label, const kiln_tensor *got, const double *want, int64_t n, double rtol,
                     double atol);

/* The failure a tensor carries, printed when it is not KILN_OK. */
bool tu_ok(const char *label, const kiln_tensor *t);

/* Loads tests/fixtures/<name>.npy; fails the test if it cannot. */
kiln_tensor *tu_fixture(const char *name);

/* Waits for all pushed work and returns kiln's cached storage blocks, so
 * an allocation count sees only what is really alive. */
void tu_settle(void);

/* Fails the test when a file whose name starts with path's last component
 * and contains ".tmp." is left in path's directory: what an atomic write
 * (temporary, fsync, rename) leaves behind when it fails to clean up. */
void tu_expect_no_temporaries(const char *path);

/* A shape literal: TU_SHAPE(2, 3). */
#define TU_SHAPE(...) ((const int64_t[]){__VA_ARGS__})

/* splitmix64, independent of kiln's own generator: the next 64 bits, and a
 * double in [0, 1). */
uint64_t tu_rng_next(uint64_t *state);
double tu_rng_unit(uint64_t *state);
int64_t tu_numel(int ndim, const int64_t *shape);

/* Tensors handed to tu_track are released by tu_release_tracked, a cmocka
 * teardown, so a test that fails an assertion midway leaks nothing either
 * and the LSan build stays meaningful. The teardown also switches this
 * thread back to the optimised kernels. */
kiln_tensor *tu_track(kiln_tensor *t);
int tu_release_tracked(void **state);

/* Gradient checks: an op under test as a function of its inputs. */
typedef kiln_tensor *(*tu_op_fn)(kiln_tensor **in);
/* d loss / d in[k] through autograd against central differences in
 * float64, for every float64 input, where loss = sum(f(in) * w) for fixed
 * random w. Attaches gradients to those inputs; may replace in[k] with an
 * equal tensor. */
void tu_check_gradients(const char *name, tu_op_fn f, int n_in, kiln_tensor **in);
/* tu_random for float64. */
kiln_tensor *tu_random_f64(int ndim, const int64_t *shape, uint64_t seed, double lo, double hi);
void tu_release_n(int n, kiln_tensor **in);

#define TU_CLOSE(got, want, rtol, atol) assert_true(tu_close(#got, (got), (want), (rtol), (atol)))
#define TU_OK(t) assert_true(tu_ok(#t, (t)))
/* Asserts that t failed with status st and that its message contains text. */
#define TU_FAILS(t, st, text) tu_assert_fails(#t, (t), (st), (text), __FILE__, __LINE__)
void tu_assert_fails(const char *label, const kiln_tensor *t, kiln_status st, const char *text, const char *file,
                     int line);

/* Allocation-failure sweeps. tu_fail_allocation(n) routes kiln's
 * allocations through an allocator whose allocation n (counting from 0,
 * from now) fails; tu_allocations() is how many were asked for since (the
 * count is atomic: kernels allocate on engine workers);
 * tu_restore_allocator() gives kiln its own back. Switch only with nothing
 * in flight (kiln_waitall first): memory goes back to the allocator that
 * gave it. */
void tu_fail_allocation(long n);
long tu_allocations(void);
void tu_restore_allocator(void);

/* d2l's LeNet with ReLU and max-pooling, as examples/train_fashion_mnist
 * builds it (input sizes left to the first forward). */
kiln_block *tu_lenet(void);

#endif
