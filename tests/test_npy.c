/* Tests of kiln_load_npy and kiln_save_npy.
 *
 * Round trips of every dtype in the shapes (), (n,) and (a, b, c), from
 * contiguous and strided tensors; files numpy wrote (every dtype, header
 * versions 1 to 3), which kiln must read and, for version 1, write back byte
 * for byte; the atomic write; and a corpus of malformed files
 * (tests/fixtures/bad_npy/, made by tests/fixtures/make_npy_fixtures.py),
 * one defect each, every one asserting its status and the words of its
 * message. Values are compared exactly: a file round trip must not change a
 * bit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

/* A path in the temporary directory, unique to this process and name. */
static void tmp_path(char *buf, size_t cap, const char *name) {
  const char *dir = getenv("TMPDIR");
  snprintf(buf, cap, "%s/kiln_test_npy_%ld_%s.npy", dir && *dir ? dir : "/tmp", (long)getpid(), name);
}

static void fixture_path(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "%s/%s.npy", KILN_FIXTURE_DIR, name);
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  *len = 0;
  if (n < 0) {
    fclose(f);
    return NULL;
  }
  char *buf = malloc((size_t)n + 1);
  *len = fread(buf, 1, (size_t)n, f);
  fclose(f);
  return buf;
}

static void expect_same(const char *label, kiln_tensor *got, kiln_tensor *want) {
  TU_OK(got);
  assert_int_equal(kiln_tensor_dtype(got), kiln_tensor_dtype(want));
  assert_int_equal(kiln_tensor_ndim(got), kiln_tensor_ndim(want));
  for (int i = 0; i < kiln_tensor_ndim(want); i++) assert_int_equal(kiln_tensor_dim(got, i), kiln_tensor_dim(want, i));
  assert_true(tu_close(label, got, want, 0, 0));
}

/* ------------------------------------------------------------ round trips */

static void round_trip_every_dtype_and_shape(void **state) {
  (void)state;
  static const struct {
    int ndim;
    int64_t shape[3];
  } shapes[] = {{0, {0}}, {1, {5}}, {3, {2, 3, 4}}, {1, {0}}, {3, {2, 0, 3}}, {1, {1}}};
  char path[512];
  tmp_path(path, sizeof path, "round_trip");
  for (int dt = 0; dt < KILN_DTYPE_COUNT; dt++)
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
      for (int nc = 0; nc < 2; nc++) {
        kiln_tensor *x = tu_track(tu_random((kiln_dtype)dt, shapes[s].ndim, shapes[s].shape, 31 * (uint64_t)dt + s, -100, 100));
        kiln_tensor *src = nc ? tu_track(tu_noncontiguous(x)) : x;
        TU_OK(src);
        assert_int_equal(kiln_save_npy(src, path), KILN_OK);
        kiln_tensor *back = tu_track(kiln_load_npy(path));
        char label[96];
        snprintf(label, sizeof label, "%s shape %zu%s", kiln_dtype_name((kiln_dtype)dt), s, nc ? " strided" : "");
        expect_same(label, back, x);
        assert_true(kiln_tensor_is_contiguous(back));
      }
  remove(path);
}

/* Overwriting goes through a temporary file that does not outlive the call. */
static void save_is_atomic_and_leaves_no_temporary(void **state) {
  (void)state;
  char path[512], tmp[600];
  tmp_path(path, sizeof path, "atomic");
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  kiln_tensor *a = tu_track(kiln_full(KILN_F32, 1, TU_SHAPE(1000), 1.0));
  kiln_tensor *b = tu_track(kiln_full(KILN_I64, 2, TU_SHAPE(2, 2), 7.0));
  assert_int_equal(kiln_save_npy(a, path), KILN_OK);
  assert_int_equal(kiln_save_npy(b, path), KILN_OK);
  assert_int_equal(access(tmp, F_OK), -1);
  expect_same("overwritten", tu_track(kiln_load_npy(path)), b);
  remove(path);
}

static void save_failures(void **state) {
  (void)state;
  kiln_tensor *x = tu_track(kiln_ones(KILN_F32, 1, TU_SHAPE(3)));
  assert_int_equal(kiln_save_npy(x, "/nonexistent-dir-kiln/x.npy"), KILN_ERR_IO);
  assert_non_null(strstr(kiln_last_error(), "kiln_save_npy: /nonexistent-dir-kiln/x.npy: cannot create"));
  kiln_tensor *bad = tu_track(kiln_reshape(x, 1, TU_SHAPE(4)));
  assert_int_not_equal(kiln_tensor_status(bad), KILN_OK);
  char path[512];
  tmp_path(path, sizeof path, "failed");
  assert_int_equal(kiln_save_npy(bad, path), kiln_tensor_status(bad));
  assert_non_null(strstr(kiln_last_error(), "the tensor carries a failure"));
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(kiln_save_npy(NULL, path), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_save_npy(x, NULL), KILN_ERR_INVALID_ARGUMENT);
}

/* ------------------------------------------------------------ files numpy wrote */

static void reads_what_numpy_writes(void **state) {
  (void)state;
  const float f4[6] = {0, 0.25f, 0.5f, 0.75f, 1.0f, 1.25f};
  expect_same("f4", tu_track(tu_fixture("npy_f4")), tu_track(kiln_from_data(KILN_F32, 2, TU_SHAPE(2, 3), f4)));
  const double f8[3] = {1.5, -2.25, 1e300};
  expect_same("f8", tu_track(tu_fixture("npy_f8")), tu_track(kiln_from_data(KILN_F64, 1, TU_SHAPE(3), f8)));
  const int32_t i4[2] = {-7, 2147483647};
  expect_same("i4", tu_track(tu_fixture("npy_i4")), tu_track(kiln_from_data(KILN_I32, 2, TU_SHAPE(2, 1), i4)));
  const int64_t i8 = -9000000000;
  expect_same("i8 0-d", tu_track(tu_fixture("npy_i8_scalar")), tu_track(kiln_from_data(KILN_I64, 0, NULL, &i8)));
  const uint8_t u1[3] = {0, 1, 255};
  expect_same("u1", tu_track(tu_fixture("npy_u1")), tu_track(kiln_from_data(KILN_U8, 1, TU_SHAPE(3), u1)));
  const uint8_t b1[4] = {1, 0, 1, 1};
  expect_same("b1", tu_track(tu_fixture("npy_b1")), tu_track(kiln_from_data(KILN_BOOL, 1, TU_SHAPE(4), b1)));
  expect_same("empty", tu_track(tu_fixture("npy_empty")), tu_track(kiln_zeros(KILN_F32, 2, TU_SHAPE(0, 3))));
  const int64_t v[4] = {1, 2, 3, 4};
  kiln_tensor *want = tu_track(kiln_from_data(KILN_I64, 2, TU_SHAPE(2, 2), v));
  expect_same("version 2.0", tu_track(tu_fixture("npy_v2")), want);
  expect_same("version 3.0", tu_track(tu_fixture("npy_v3")), want);
}

/* kiln writes version 1.0 exactly as numpy does, header padding included. */
static void writes_what_numpy_writes(void **state) {
  (void)state;
  static const char *const names[] = {"npy_f4", "npy_f8", "npy_i4", "npy_i8_scalar", "npy_u1", "npy_b1", "npy_empty"};
  char src[512], dst[512];
  tmp_path(dst, sizeof dst, "rewrite");
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    fixture_path(src, sizeof src, names[i]);
    kiln_tensor *t = tu_track(kiln_load_npy(src));
    TU_OK(t);
    assert_int_equal(kiln_save_npy(t, dst), KILN_OK);
    size_t n1 = 0, n2 = 0;
    char *a = read_file(src, &n1), *b = read_file(dst, &n2);
    assert_non_null(a);
    assert_non_null(b);
    if (n1 != n2 || memcmp(a, b, n1) != 0) {
      fprintf(stderr, "%s: kiln wrote %zu bytes differing from numpy's %zu:\n  numpy: %.*s\n  kiln:  %.*s\n", names[i],
              n2, n1, (int)(n1 < 128 ? n1 : 128), a, (int)(n2 < 128 ? n2 : 128), b);
      free(a);
      free(b);
      fail();
    }
    free(a);
    free(b);
  }
  remove(dst);
}

/* ------------------------------------------------------------ malformed files */

static void expect_bad(const char *name, kiln_status st, const char *text) {
  char path[512];
  snprintf(path, sizeof path, "%s/bad_npy/%s.npy", KILN_FIXTURE_DIR, name);
  kiln_tensor *t = tu_track(kiln_load_npy(path));
  TU_FAILS(t, st, text);
  /* Every message names the file. */
  TU_FAILS(t, st, path);
  TU_FAILS(t, st, "kiln_load_npy: ");
}

static void rejects_malformed_files(void **state) {
  (void)state;
  expect_bad("truncated_header", KILN_ERR_CORRUPT, "file of 7 bytes is too short for a .npy header");
  expect_bad("bad_magic", KILN_ERR_CORRUPT, "bad magic (not a .npy file)");
  expect_bad("bad_version", KILN_ERR_UNSUPPORTED, "unsupported version 4.0 (kiln reads 1.0 to 3.0)");
  expect_bad("header_past_eof", KILN_ERR_CORRUPT, "header length 65535 runs past the end of the 26-byte file");
  expect_bad("big_endian", KILN_ERR_UNSUPPORTED, "dtype '>f4' is not supported");
  expect_bad("big_endian", KILN_ERR_UNSUPPORTED, "this one is big-endian");
  expect_bad("unknown_dtype", KILN_ERR_UNSUPPORTED, "dtype '<c8' is not supported");
  expect_bad("fortran_order", KILN_ERR_UNSUPPORTED, "fortran_order True is not supported");
  expect_bad("negative_dim", KILN_ERR_CORRUPT, "negative dimension in shape");
  expect_bad("overflow_dim", KILN_ERR_OVERFLOW, "a dimension of the shape overflows int64");
  expect_bad("overflow_shape", KILN_ERR_OVERFLOW, "the element count of the shape overflows");
  expect_bad("data_short", KILN_ERR_CORRUPT, "data too short: the shape needs 12 bytes, the file has 8");
  expect_bad("data_long", KILN_ERR_CORRUPT, "data too long: the shape needs 4 bytes, the file has 8 (4 extra)");
  expect_bad("garbage_dict", KILN_ERR_CORRUPT, "malformed header: it does not start with '{'");
  expect_bad("missing_key", KILN_ERR_CORRUPT, "malformed header: missing key 'fortran_order'");
  expect_bad("unknown_key", KILN_ERR_CORRUPT, "malformed header: unknown key 'x'");
  expect_bad("duplicate_key", KILN_ERR_CORRUPT, "malformed header: key 'descr' appears twice");
  expect_bad("shape_not_tuple", KILN_ERR_CORRUPT, "'shape' (n) is not a tuple");
  expect_bad("no_newline", KILN_ERR_CORRUPT, "malformed header: it does not end in a newline");
  expect_bad("bool_not_01", KILN_ERR_CORRUPT, "bool element 1 is 2, not 0 or 1");
}

static void missing_file_and_null_path(void **state) {
  (void)state;
  kiln_tensor *t = tu_track(kiln_load_npy("/nonexistent-dir-kiln/none.npy"));
  TU_FAILS(t, KILN_ERR_IO, "kiln_load_npy: /nonexistent-dir-kiln/none.npy: cannot open: No such file");
  TU_FAILS(tu_track(kiln_load_npy(NULL)), KILN_ERR_INVALID_ARGUMENT, "kiln_load_npy: path is NULL");
  TU_FAILS(tu_track(kiln_load_npy(KILN_FIXTURE_DIR)), KILN_ERR_IO, "not a regular file");
}

/* Every prefix of a good file is a bad file, and none may crash or pass. */
static void every_truncation_fails(void **state) {
  (void)state;
  char src[512], dst[512];
  fixture_path(src, sizeof src, "npy_f4");
  tmp_path(dst, sizeof dst, "truncated");
  size_t n = 0;
  char *data = read_file(src, &n);
  assert_non_null(data);
  for (size_t len = 0; len < n; len++) {
    FILE *f = fopen(dst, "wb");
    assert_non_null(f);
    fwrite(data, 1, len, f);
    fclose(f);
    kiln_tensor *t = tu_track(kiln_load_npy(dst));
    if (kiln_tensor_status(t) == KILN_OK) {
      fprintf(stderr, "a %zu-byte prefix of %s loaded\n", len, src);
      free(data);
      fail();
    }
    tu_release_tracked(NULL);
  }
  free(data);
  remove(dst);
}

/* Each allocation of a load and of a save fails in turn: the outcome is
 * success or KILN_ERR_OUT_OF_MEMORY, never a crash, a leak or a stray
 * temporary file. */
static void allocation_failures(void **state) {
  (void)state;
  char src[512], dst[512], tmp[600];
  fixture_path(src, sizeof src, "npy_f4");
  tmp_path(dst, sizeof dst, "oom");
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dst, (long)getpid());
  kiln_tensor *x = tu_track(tu_noncontiguous(tu_track(tu_fixture("npy_f4"))));
  for (long fail_at = 0;; fail_at++) {
    kiln_waitall(); /* memory the old allocator gave must go back to it */
    tu_fail_allocation(fail_at);
    kiln_tensor *t = kiln_load_npy(src);
    kiln_status saved = kiln_save_npy(x, dst);
    kiln_waitall(); /* memory the old allocator gave must go back to it */
    tu_restore_allocator();
    kiln_status st = kiln_tensor_status(t);
    assert_true(st == KILN_OK || st == KILN_ERR_OUT_OF_MEMORY);
    assert_true(saved == KILN_OK || saved == KILN_ERR_OUT_OF_MEMORY);
    assert_int_equal(access(tmp, F_OK), -1);
    kiln_tensor_release(t);
    if (st == KILN_OK && saved == KILN_OK && tu_allocations() <= fail_at) break;
  }
  remove(dst);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define TEST(f) cmocka_unit_test_teardown(f, tu_release_tracked)
      TEST(round_trip_every_dtype_and_shape),
      TEST(save_is_atomic_and_leaves_no_temporary),
      TEST(save_failures),
      TEST(reads_what_numpy_writes),
      TEST(writes_what_numpy_writes),
      TEST(rejects_malformed_files),
      TEST(missing_file_and_null_path),
      TEST(every_truncation_fails),
      TEST(allocation_failures),
#undef TEST
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
