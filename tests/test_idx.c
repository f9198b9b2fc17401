/* Tests of the IDX reader (kiln_load_idx, kiln_fashion_mnist_load) and the
 * data loader (kiln_loader_*).
 *
 * The reader: files written here, plain and through zlib's gzwrite, of every
 * IDX type in shapes from one to eight dims, compared exactly with the values
 * written; every prefix of a file fails; a corpus of malformed files
 * (tests/fixtures/bad_idx/, made by tests/fixtures/make_idx_fixtures.py),
 * one defect each, each asserting its status and the words of its message;
 * each allocation failing in turn; and the real Fashion-MNIST files when
 * Debian's dataset-fashion-mnist package is installed (skipped otherwise).
 *
 * The loader: a dataset whose labels are the sample indices, so every batch
 * says which samples it holds; the values of x and y against the source,
 * every sample once per epoch, the last-batch policies, the order's
 * dependence on seed and epoch only, and the same bits under the naive and
 * threaded engines (this program runs itself under the other mode). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "engine/engine.h"
#include "io/idx.h"
#include "testutil.h"

/* ------------------------------------------------------------ helpers */

static void tmp_path(char *buf, size_t cap, const char *name) {
  const char *dir = getenv("TMPDIR");
  snprintf(buf, cap, "%s/kiln_test_idx_%ld_%s", dir && *dir ? dir : "/tmp", (long)getpid(), name);
}

static unsigned char *read_whole(const char *path, size_t *len) {
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc((size_t)(n > 0 ? n : 1));
  *len = fread(buf, 1, (size_t)(n > 0 ? n : 0), f);
  fclose(f);
  return buf;
}

static void write_plain(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

/* Through gzopen/gzwrite, members times (each a complete gzip member, as
 * `cat a.gz b.gz` makes), the data split evenly between them. */
static void write_gzip(const char *path, const void *data, size_t n, int members) {
  remove(path);
  size_t at = 0;
  for (int m = 0; m < members; m++) {
    gzFile g = gzopen(path, m == 0 ? "wb9" : "ab9");
    assert_non_null(g);
    size_t part = m + 1 == members ? n - at : n / (size_t)members;
    if (part) assert_int_equal(gzwrite(g, (const char *)data + at, (unsigned)part), (int)part);
    at += part;
    assert_int_equal(gzclose(g), Z_OK);
  }
}

static void put_be(unsigned char *p, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}

/* An IDX image of the given type code and shape, elements from value(i). */
static unsigned char *make_idx(unsigned code, int ndim, const int64_t *shape, double (*value)(int64_t), size_t *len) {
  int es = code == 0x08 || code == 0x09 ? 1 : code == 0x0B ? 2 : code == 0x0E ? 8 : 4;
  int64_t n = tu_numel(ndim, shape);
  *len = 4 + 4 * (size_t)ndim + (size_t)n * (size_t)es;
  unsigned char *b = malloc(*len);
  b[0] = b[1] = 0;
  b[2] = (unsigned char)code;
  b[3] = (unsigned char)ndim;
  for (int i = 0; i < ndim; i++) put_be(b + 4 + 4 * i, (uint64_t)shape[i], 4);
  unsigned char *p = b + 4 + 4 * ndim;
  for (int64_t i = 0; i < n; i++, p += es) {
    double v = value(i);
    if (code == 0x0D) {
      float f = (float)v;
      uint32_t u;
      memcpy(&u, &f, 4);
      put_be(p, u, 4);
    } else if (code == 0x0E) {
      uint64_t u;
      memcpy(&u, &v, 8);
      put_be(p, u, 8);
    } else {
      put_be(p, (uint64_t)(int64_t)v, es);
    }
  }
  return b;
}

/* Values that reach each type's extremes and signs. */
static double v_u8(int64_t i) { return (double)((i * 37 + 255) % 256); }
static double v_i8(int64_t i) { return (double)((i * 37) % 256 - 128); }
static double v_i16(int64_t i) { return i == 0 ? -32768 : i == 1 ? 32767 : (double)((i * 7919) % 65536 - 32768); }
static double v_i32(int64_t i) { return i == 0 ? -2147483648.0 : i == 1 ? 2147483647.0 : (double)(i * 104729 - 5000000); }
static double v_f32(int64_t i) { return i == 0 ? NAN : i == 1 ? -INFINITY : (double)(float)(i * 0.37 - 3.5); }
static double v_f64(int64_t i) { return i == 0 ? 1e300 : i == 1 ? -0.0 : i * 0.123456789 - 7; }

typedef struct {
  unsigned code;
  kiln_dtype dtype;
  double (*value)(int64_t);
} idx_case;

static const idx_case cases[] = {
    {0x08, KILN_U8, v_u8},   {0x09, KILN_I32, v_i8},  {0x0B, KILN_I32, v_i16},
    {0x0C, KILN_I32, v_i32}, {0x0D, KILN_F32, v_f32}, {0x0E, KILN_F64, v_f64},
};

static void expect_values(const char *label, kiln_tensor *t, const idx_case *c, int ndim, const int64_t *shape) {
  TU_OK(t);
  assert_int_equal(kiln_tensor_dtype(t), c->dtype);
  assert_int_equal(kiln_tensor_ndim(t), ndim);
  for (int i = 0; i < ndim; i++) assert_int_equal(kiln_tensor_dim(t, i), shape[i]);
  assert_true(kiln_tensor_is_contiguous(t));
  int64_t n = tu_numel(ndim, shape);
  double *want = malloc(sizeof(double) * (size_t)(n ? n : 1));
  for (int64_t i = 0; i < n; i++) want[i] = c->value(i);
  bool ok = tu_close_values(label, t, want, n, 0, 0);
  free(want);
  assert_true(ok);
}

/* ------------------------------------------------------------ reader */

static void round_trip_every_type_plain_and_gzip(void **state) {
  (void)state;
  static const struct {
    int ndim;
    int64_t shape[8];
  } shapes[] = {{1, {5}}, {3, {2, 3, 4}}, {1, {0}}, {2, {3, 0}}, {8, {1, 2, 1, 2, 1, 2, 1, 3}}, {3, {7, 28, 28}}};
  char path[512];
  tmp_path(path, sizeof path, "round_trip");
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
      for (int members = 0; members <= 3; members++) {
        size_t len;
        unsigned char *b = make_idx(cases[c].code, shapes[s].ndim, shapes[s].shape, cases[c].value, &len);
        if (members == 0)
          write_plain(path, b, len);
        else
          write_gzip(path, b, len, members);
        char label[96];
        snprintf(label, sizeof label, "type 0x%02x shape %zu, %d gzip members", cases[c].code, s, members);
        expect_values(label, tu_track(kiln_load_idx(path)), &cases[c], shapes[s].ndim, shapes[s].shape);
        /* From memory, the same bytes give the same tensor. */
        size_t flen = 0;
        unsigned char *file = read_whole(path, &flen);
        kiln_tensor *m = NULL;
        assert_int_equal(idx_load_memory(file, flen, label, &m), KILN_OK);
        expect_values(label, tu_track(m), &cases[c], shapes[s].ndim, shapes[s].shape);
        free(file);
        free(b);
      }
  remove(path);
}

/* Every strict prefix of a good file, plain or gzipped, fails; none crashes
 * or loads. */
static void every_truncation_fails(void **state) {
  (void)state;
  char path[512];
  tmp_path(path, sizeof path, "prefix");
  size_t len;
  unsigned char *b = make_idx(0x0D, 2, TU_SHAPE(3, 4), v_f32, &len);
  for (int gz = 0; gz < 2; gz++) {
    if (gz)
      write_gzip(path, b, len, 1);
    else
      write_plain(path, b, len);
    size_t flen = 0;
    unsigned char *file = read_whole(path, &flen);
    for (size_t n = 0; n < flen; n++) {
      kiln_tensor *t = NULL;
      kiln_status st = idx_load_memory(file, n, "prefix", &t);
      if (st == KILN_OK || t) {
        fprintf(stderr, "a %zu-byte prefix of a %zu-byte %s file loaded\n", n, flen, gz ? "gzip" : "plain");
        fail();
      }
      if (!strstr(kiln_last_error(), "truncated")) {
        fprintf(stderr, "a %zu-byte prefix: \"%s\" does not say truncated\n", n, kiln_last_error());
        fail();
      }
    }
    free(file);
  }
  free(b);
  remove(path);
}

static void rejects_malformed_files(void **state) {
  (void)state;
  static const struct {
    const char *file;
    kiln_status status;
    const char *text;
  } bad[] = {
      {"empty.idx", KILN_ERR_CORRUPT, "truncated header: the file has 0 bytes, an IDX header needs 4"},
      {"truncated_header.idx", KILN_ERR_CORRUPT, "truncated header: the file has 3 bytes"},
      {"bad_magic.idx", KILN_ERR_CORRUPT, "bad magic 01 00 08 02 (an IDX file starts with two zero bytes)"},
      {"bad_dtype.idx", KILN_ERR_CORRUPT, "unknown data type 0x0a"},
      {"ndim0.idx", KILN_ERR_CORRUPT, "0 dimensions (an IDX file has at least 1)"},
      {"ndim9.idx", KILN_ERR_UNSUPPORTED, "9 dimensions (kiln supports at most 8)"},
      {"truncated_dims.idx", KILN_ERR_CORRUPT, "truncated header: 3 dimensions need 12 bytes of sizes, the file has 6"},
      {"truncated_data.idx", KILN_ERR_CORRUPT,
       "truncated data: dimensions [2, 3] of unsigned byte need 6 bytes, the file has 5"},
      {"trailing_data.idx", KILN_ERR_CORRUPT, "trailing data: 2 bytes after the 6 that dimensions [2, 3]"},
      {"overflow_count.idx", KILN_ERR_OVERFLOW,
       "the element count of the dimensions [4294967295, 4294967295, 4294967295] overflows"},
      {"overflow_bytes.idx", KILN_ERR_OVERFLOW, "the byte size of the dimensions [2147483648, 2147483648] overflows"},
      {"huge_dims.idx", KILN_ERR_CORRUPT, "truncated data: dimensions [4294967295, 65535] of unsigned byte need"},
      {"gz_truncated_data.idx.gz", KILN_ERR_CORRUPT,
       "truncated data: dimensions [2, 3] of unsigned byte need 6 bytes, the decompressed file has 4"},
      {"gz_trailing_data.idx.gz", KILN_ERR_CORRUPT, "trailing data: 3 bytes after the 6 that dimensions [2, 3]"},
      {"gz_huge_dims.idx.gz", KILN_ERR_CORRUPT,
       "truncated data: dimensions [4294967295, 65535] of unsigned byte need 281470681677825 bytes, more than a "
       "31-byte gzip file can hold"},
      {"gz_truncated_stream.idx.gz", KILN_ERR_CORRUPT, "truncated gzip stream (it ends before its end marker)"},
      {"gz_bad_crc.idx.gz", KILN_ERR_CORRUPT, "corrupt gzip data: incorrect data check"},
      {"gz_bad_block.idx.gz", KILN_ERR_CORRUPT, "corrupt gzip data: invalid block type"},
      {"gz_garbage_after.idx.gz", KILN_ERR_CORRUPT, "corrupt gzip data: incorrect header check"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char path[512], text[600];
    snprintf(path, sizeof path, "%s/bad_idx/%s", KILN_FIXTURE_DIR, bad[i].file);
    /* The message names the path, then says what is wrong. */
    snprintf(text, sizeof text, "kiln_load_idx: %s: %s", path, bad[i].text);
    TU_FAILS(tu_track(kiln_load_idx(path)), bad[i].status, text);
  }
}

static void missing_file_and_null_path(void **state) {
  (void)state;
  TU_FAILS(tu_track(kiln_load_idx("/nonexistent-dir-kiln/x.idx")), KILN_ERR_IO,
           "kiln_load_idx: /nonexistent-dir-kiln/x.idx: cannot open: No such file");
  TU_FAILS(tu_track(kiln_load_idx(NULL)), KILN_ERR_INVALID_ARGUMENT, "kiln_load_idx: path is NULL");
  TU_FAILS(tu_track(kiln_load_idx(KILN_FIXTURE_DIR)), KILN_ERR_IO, "not a regular file");

  kiln_tensor *im = (kiln_tensor *)1, *lb = (kiln_tensor *)1;
  assert_int_equal(kiln_fashion_mnist_load("/nonexistent-dir-kiln", true, &im, &lb), KILN_ERR_IO);
  assert_null(im);
  assert_null(lb);
  const char *msg = kiln_last_error();
  if (!strstr(msg, "/nonexistent-dir-kiln/train-images-idx3-ubyte.gz") ||
      !strstr(msg, "install Debian's dataset-fashion-mnist package")) {
    fprintf(stderr, "unexpected message: %s\n", msg);
    fail();
  }
  assert_int_equal(kiln_fashion_mnist_load(NULL, true, NULL, &lb), KILN_ERR_INVALID_ARGUMENT);
}

/* A directory with the images but wrong labels: the helper checks that the
 * two agree and that labels are classes. */
static void fashion_mnist_checks_its_files(void **state) {
  (void)state;
  char dir[512], path[700];
  tmp_path(dir, sizeof dir, "fmnist");
  assert_int_equal(mkdir(dir, 0700), 0);
  size_t len;
  unsigned char *im = make_idx(0x08, 3, TU_SHAPE(4, 28, 28), v_u8, &len);
  snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", dir);
  write_gzip(path, im, len, 1);
  /* Missing labels name the labels file. */
  kiln_tensor *x, *y;
  assert_int_equal(kiln_fashion_mnist_load(dir, false, &x, &y), KILN_ERR_IO);
  assert_non_null(strstr(kiln_last_error(), "t10k-labels-idx1-ubyte.gz: no such file (install Debian's"));
  /* Labels past 9 (plain file, no .gz: the helper takes either). */
  unsigned char *lb = make_idx(0x08, 1, TU_SHAPE(4), v_u8, &len);
  snprintf(path, sizeof path, "%s/t10k-labels-idx1-ubyte", dir);
  write_plain(path, lb, len);
  assert_int_equal(kiln_fashion_mnist_load(dir, false, &x, &y), KILN_ERR_CORRUPT);
  assert_non_null(strstr(kiln_last_error(), "label 0 is 255, not a class 0 to 9"));
  free(lb);
  /* A count that disagrees with the images. */
  lb = make_idx(0x08, 1, TU_SHAPE(3), v_i8, &len);
  memset(lb + 8, 1, 3);
  write_plain(path, lb, len);
  assert_int_equal(kiln_fashion_mnist_load(dir, false, &x, &y), KILN_ERR_CORRUPT);
  assert_non_null(strstr(kiln_last_error(), "labels are uint8 [3], the images [4, 28, 28]"));
  free(lb);
  /* Right at last. */
  lb = make_idx(0x08, 1, TU_SHAPE(4), v_i8, &len);
  memset(lb + 8, 7, 4);
  write_plain(path, lb, len);
  assert_int_equal(kiln_fashion_mnist_load(dir, false, &x, &y), KILN_OK);
  tu_track(x);
  tu_track(y);
  expect_values("images", x, &cases[0], 3, TU_SHAPE(4, 28, 28));
  double sevens[4] = {7, 7, 7, 7};
  assert_true(tu_close_values("labels", y, sevens, 4, 0, 0));
  free(lb);
  free(im);
  remove(path);
  snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", dir);
  remove(path);
  rmdir(dir);
}

/* The files of Debian's dataset-fashion-mnist. The expected sums were
 * computed independently with
 *   /usr/bin/python3 -c "import gzip; d='/usr/share/datasets/fashion-mnist/';
 *   im=gzip.open(d+'train-images-idx3-ubyte.gz').read()[16:];
 *   lb=gzip.open(d+'train-labels-idx1-ubyte.gz').read()[8:];
 *   print(sum(im[:784]), list(lb[:10]), sum(im), sum(lb))"
 * (and t10k- for the test set): train 76247 [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
 * 3431114169 270000; test 33456 [9, 2, 1, 1, 6, 1, 4, 6, 5, 7] 573469082
 * 45000. */
static void real_fashion_mnist(void **state) {
  (void)state;
  if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0) {
    fprintf(stderr, "skipped: Debian's dataset-fashion-mnist package is not installed "
                    "(/usr/share/datasets/fashion-mnist is missing)\n");
    skip();
  }
  static const struct {
    bool train;
    int64_t n, first_sum;
    int first_labels[10];
    uint64_t image_sum, label_sum;
  } sets[] = {{true, 60000, 76247, {9, 0, 0, 3, 0, 2, 7, 2, 5, 5}, 3431114169u, 270000},
              {false, 10000, 33456, {9, 2, 1, 1, 6, 1, 4, 6, 5, 7}, 573469082u, 45000}};
  for (int s = 0; s < 2; s++) {
    kiln_tensor *im = NULL, *lb = NULL;
    kiln_status st = kiln_fashion_mnist_load(NULL, sets[s].train, &im, &lb);
    if (st != KILN_OK) fprintf(stderr, "%s\n", kiln_last_error());
    assert_int_equal(st, KILN_OK);
    tu_track(im);
    tu_track(lb);
    assert_int_equal(kiln_tensor_dtype(im), KILN_U8);
    assert_int_equal(kiln_tensor_ndim(im), 3);
    assert_int_equal(kiln_tensor_dim(im, 0), sets[s].n);
    assert_int_equal(kiln_tensor_dim(im, 1), 28);
    assert_int_equal(kiln_tensor_dim(im, 2), 28);
    assert_int_equal(kiln_tensor_dtype(lb), KILN_U8);
    assert_int_equal(kiln_tensor_ndim(lb), 1);
    assert_int_equal(kiln_tensor_dim(lb, 0), sets[s].n);
    size_t nb = (size_t)sets[s].n * 784;
    unsigned char *px = malloc(nb), *lv = malloc((size_t)sets[s].n);
    assert_int_equal(kiln_tensor_copy_to(im, px, nb), KILN_OK);
    assert_int_equal(kiln_tensor_copy_to(lb, lv, (size_t)sets[s].n), KILN_OK);
    int64_t first = 0;
    uint64_t isum = 0, lsum = 0;
    for (int k = 0; k < 784; k++) first += px[k];
    for (size_t k = 0; k < nb; k++) isum += px[k];
    for (int64_t k = 0; k < sets[s].n; k++) {
      assert_true(lv[k] <= 9);
      lsum += lv[k];
    }
    assert_int_equal(first, sets[s].first_sum);
    for (int k = 0; k < 10; k++) assert_int_equal(lv[k], sets[s].first_labels[k]);
    assert_int_equal(isum, sets[s].image_sum);
    assert_int_equal(lsum, sets[s].label_sum);
    /* kiln_load_idx of the same file gives the same tensor. */
    kiln_tensor *again = tu_track(kiln_load_idx(sets[s].train ? "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz"
                                                              : "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"));
    TU_CLOSE(again, lb, 0, 0);
    free(px);
    free(lv);
  }
}

/* Each allocation of a gzip load (zlib's included) and of a loader fails in
 * turn: the outcome is success or KILN_ERR_OUT_OF_MEMORY, never a crash or a
 * leak. */
static void allocation_failures(void **state) {
  (void)state;
  char path[512];
  tmp_path(path, sizeof path, "oom.gz");
  size_t len;
  unsigned char *b = make_idx(0x0B, 2, TU_SHAPE(30, 40), v_i16, &len);
  write_gzip(path, b, len, 2);
  free(b);
  kiln_tensor *labels = tu_track(kiln_arange(0, 30, 1, KILN_I64));
  for (long fail_at = 0;; fail_at++) {
    kiln_waitall();
    tu_fail_allocation(fail_at);
    kiln_tensor *t = kiln_load_idx(path);
    kiln_status st = kiln_tensor_status(t);
    kiln_status lst = KILN_OK;
    kiln_tensor *x = NULL, *y = NULL;
    kiln_loader *l = NULL;
    if (st == KILN_OK) {
      kiln_tensor *u8 = kiln_zeros(KILN_U8, 2, TU_SHAPE(30, 40));
      l = kiln_loader_new(u8, labels, 8, true, 1, KILN_LAST_BATCH_KEEP);
      lst = l ? kiln_loader_next(l, &x, &y) : KILN_ERR_OUT_OF_MEMORY;
      if (lst == KILN_OK) lst = kiln_wait_to_read(x);
      kiln_tensor_release(x);
      kiln_tensor_release(y);
      kiln_loader_free(l);
      kiln_tensor_release(u8);
    }
    kiln_waitall();
    tu_restore_allocator();
    assert_true(st == KILN_OK || st == KILN_ERR_OUT_OF_MEMORY);
    assert_true(lst == KILN_OK || lst == KILN_ERR_OUT_OF_MEMORY);
    kiln_tensor_release(t);
    if (st == KILN_OK && lst == KILN_OK && tu_allocations() <= fail_at) break;
  }
  remove(path);
}

/* ------------------------------------------------------------ loader */

enum { N = 103, H = 5, W = 7 };

/* images uint8 [N, H, W] with pixel (i, k) = (i * 31 + k * 7) % 256, labels
 * int64 [N] holding i, so a batch's y says which samples it holds. */
static void make_dataset(kiln_tensor **images, kiln_tensor **labels) {
  static unsigned char px[N * H * W];
  int64_t lv[N];
  for (int i = 0; i < N; i++) {
    lv[i] = i;
    for (int k = 0; k < H * W; k++) px[i * H * W + k] = (unsigned char)((i * 31 + k * 7) % 256);
  }
  *images = tu_track(kiln_from_data(KILN_U8, 3, TU_SHAPE(N, H, W), px));
  *labels = tu_track(kiln_from_data(KILN_I64, 1, TU_SHAPE(N), lv));
}

/* Reads one batch, checks its shape, dtypes and values against the source,
 * and appends its sample indices to order. Returns B. */
static int64_t check_batch(kiln_tensor *x, kiln_tensor *y, int64_t *order, int64_t at) {
  TU_OK(x);
  TU_OK(y);
  int64_t b = kiln_tensor_dim(y, 0);
  assert_int_equal(kiln_tensor_dtype(x), KILN_F32);
  assert_int_equal(kiln_tensor_dtype(y), KILN_I64);
  assert_int_equal(kiln_tensor_ndim(x), 4);
  assert_int_equal(kiln_tensor_ndim(y), 1);
  assert_int_equal(kiln_tensor_dim(x, 0), b);
  assert_int_equal(kiln_tensor_dim(x, 1), 1);
  assert_int_equal(kiln_tensor_dim(x, 2), H);
  assert_int_equal(kiln_tensor_dim(x, 3), W);
  int64_t *yv = malloc(sizeof(int64_t) * (size_t)b);
  float *xv = malloc(sizeof(float) * (size_t)b * H * W);
  assert_int_equal(kiln_tensor_copy_to(y, yv, sizeof(int64_t) * (size_t)b), KILN_OK);
  assert_int_equal(kiln_tensor_copy_to(x, xv, sizeof(float) * (size_t)b * H * W), KILN_OK);
  for (int64_t r = 0; r < b; r++) {
    assert_in_range(yv[r], 0, N - 1);
    for (int k = 0; k < H * W; k++) {
      float want = (float)((yv[r] * 31 + k * 7) % 256) / 255.0f;
      if (xv[r * H * W + k] != want) {
        fprintf(stderr, "batch row %lld (sample %lld) element %d: got %.9g, want %.9g (exact)\n", (long long)r,
                (long long)yv[r], k, (double)xv[r * H * W + k], (double)want);
        fail();
      }
    }
    order[at + r] = yv[r];
  }
  free(xv);
  free(yv);
  return b;
}

/* One epoch into order; returns the samples seen and the batch sizes in
 * sizes (up to cap). */
static int64_t run_epoch(kiln_loader *l, int64_t *order, int64_t *sizes, int *n_batches) {
  int64_t at = 0;
  int nb = 0;
  kiln_tensor *x, *y;
  kiln_status st;
  while ((st = kiln_loader_next(l, &x, &y)) == KILN_OK) {
    int64_t b = check_batch(tu_track(x), tu_track(y), order, at);
    sizes[nb++] = b;
    at += b;
  }
  assert_int_equal(st, KILN_ERR_OUT_OF_RANGE);
  assert_non_null(strstr(kiln_last_error(), "end of epoch"));
  assert_null(x);
  assert_null(y);
  /* It stays over until reset. */
  assert_int_equal(kiln_loader_next(l, &x, &y), KILN_ERR_OUT_OF_RANGE);
  *n_batches = nb;
  return at;
}

static void expect_each_once(const int64_t *order, int64_t n, int64_t want_n) {
  assert_int_equal(n, want_n);
  char seen[N] = {0};
  for (int64_t i = 0; i < n; i++) {
    if (seen[order[i]]) {
      fprintf(stderr, "sample %lld appears twice in one epoch\n", (long long)order[i]);
      fail();
    }
    seen[order[i]] = 1;
  }
}

static void loader_keep_and_discard(void **state) {
  (void)state;
  kiln_tensor *images, *labels;
  make_dataset(&images, &labels);
  int64_t order[N], sizes[N];
  int nb;
  kiln_loader *l = kiln_loader_new(images, labels, 10, true, 42, KILN_LAST_BATCH_KEEP);
  assert_non_null(l);
  assert_int_equal(kiln_loader_num_batches(l), 11);
  for (int epoch = 0; epoch < 3; epoch++) {
    expect_each_once(order, run_epoch(l, order, sizes, &nb), N);
    assert_int_equal(nb, 11);
    for (int i = 0; i < 10; i++) assert_int_equal(sizes[i], 10);
    assert_int_equal(sizes[10], 3);
    assert_int_equal(kiln_loader_reset(l), KILN_OK);
  }
  kiln_loader_free(l);

  l = kiln_loader_new(images, labels, 10, true, 42, KILN_LAST_BATCH_DISCARD);
  assert_non_null(l);
  assert_int_equal(kiln_loader_num_batches(l), 10);
  expect_each_once(order, run_epoch(l, order, sizes, &nb), 100);
  assert_int_equal(nb, 10);
  kiln_loader_free(l);

  /* A batch larger than the dataset: one short batch, or none. */
  l = kiln_loader_new(images, labels, 1000, false, 0, KILN_LAST_BATCH_KEEP);
  expect_each_once(order, run_epoch(l, order, sizes, &nb), N);
  assert_int_equal(nb, 1);
  kiln_loader_free(l);
  l = kiln_loader_new(images, labels, 1000, false, 0, KILN_LAST_BATCH_DISCARD);
  assert_int_equal(kiln_loader_num_batches(l), 0);
  run_epoch(l, order, sizes, &nb);
  assert_int_equal(nb, 0);
  kiln_loader_free(l);
}

static void epoch_order(uint64_t seed, bool shuffle, int epoch, int64_t *order) {
  kiln_tensor *images, *labels;
  make_dataset(&images, &labels);
  kiln_loader *l = kiln_loader_new(images, labels, 16, shuffle, seed, KILN_LAST_BATCH_KEEP);
  assert_non_null(l);
  int64_t sizes[N];
  int nb;
  for (int e = 0; e < epoch; e++) assert_int_equal(kiln_loader_reset(l), KILN_OK);
  expect_each_once(order, run_epoch(l, order, sizes, &nb), N);
  kiln_loader_free(l);
}

static void loader_order(void **state) {
  (void)state;
  int64_t a[N], b[N];
  /* No shuffle: 0, 1, ..., N - 1 in every epoch. */
  for (int e = 0; e < 2; e++) {
    epoch_order(5, false, e, a);
    for (int i = 0; i < N; i++) assert_int_equal(a[i], i);
  }
  /* The same seed and epoch: the same order, in a fresh loader too. */
  epoch_order(7, true, 0, a);
  epoch_order(7, true, 0, b);
  assert_memory_equal(a, b, sizeof a);
  epoch_order(7, true, 2, a);
  epoch_order(7, true, 2, b);
  assert_memory_equal(a, b, sizeof a);
  /* Reset mid-epoch: epoch 1's order is still epoch 1's. */
  {
    kiln_tensor *images, *labels;
    make_dataset(&images, &labels);
    kiln_loader *l = kiln_loader_new(images, labels, 16, true, 7, KILN_LAST_BATCH_KEEP);
    kiln_tensor *x, *y;
    assert_int_equal(kiln_loader_next(l, &x, &y), KILN_OK);
    tu_track(x), tu_track(y);
    assert_int_equal(kiln_loader_reset(l), KILN_OK);
    int64_t sizes[N];
    int nb;
    run_epoch(l, a, sizes, &nb);
    kiln_loader_free(l);
    epoch_order(7, true, 1, b);
    assert_memory_equal(a, b, sizeof a);
  }
  /* Different epochs, different seeds: different orders, and shuffled. */
  int64_t orders[4][N];
  epoch_order(7, true, 0, orders[0]);
  epoch_order(7, true, 1, orders[1]);
  epoch_order(7, true, 2, orders[2]);
  epoch_order(8, true, 0, orders[3]);
  for (int i = 0; i < 4; i++) {
    int fixed = 0;
    for (int k = 0; k < N; k++) fixed += orders[i][k] == k;
    if (fixed > 10) {
      fprintf(stderr, "order %d leaves %d of %d samples in place\n", i, fixed, N);
      fail();
    }
    for (int j = 0; j < i; j++)
      if (memcmp(orders[i], orders[j], sizeof orders[i]) == 0) {
        fprintf(stderr, "orders %d and %d are the same\n", i, j);
        fail();
      }
  }
}

/* Other layouts and dtypes: a strided view of the images gives the same
 * batches; float images are not scaled; 2-D and 4-D images get no channel;
 * uint8 and int32 labels become int64. */
static void loader_layouts_and_dtypes(void **state) {
  (void)state;
  kiln_tensor *images, *labels;
  make_dataset(&images, &labels);
  kiln_tensor *strided = tu_track(tu_noncontiguous(images));
  assert_false(kiln_tensor_is_contiguous(strided));
  kiln_loader *l = kiln_loader_new(strided, labels, 9, true, 3, KILN_LAST_BATCH_KEEP);
  int64_t order[N], sizes[N];
  int nb;
  expect_each_once(order, run_epoch(l, order, sizes, &nb), N);
  kiln_loader_free(l);

  /* float64 [6, 2, 1, 2] images with int32 labels: x float32 [B, 2, 1, 2]
   * holding the values as they are. */
  double fv[24];
  int32_t iv[6];
  for (int i = 0; i < 24; i++) fv[i] = i * 1.5 - 4;
  for (int i = 0; i < 6; i++) iv[i] = 100 - i;
  kiln_tensor *fim = tu_track(kiln_from_data(KILN_F64, 4, TU_SHAPE(6, 2, 1, 2), fv));
  kiln_tensor *ilb = tu_track(kiln_from_data(KILN_I32, 1, TU_SHAPE(6), iv));
  l = kiln_loader_new(fim, ilb, 4, false, 0, KILN_LAST_BATCH_KEEP);
  kiln_tensor *x, *y;
  assert_int_equal(kiln_loader_next(l, &x, &y), KILN_OK);
  tu_track(x), tu_track(y);
  assert_int_equal(kiln_tensor_ndim(x), 4);
  assert_int_equal(kiln_tensor_dim(x, 0), 4);
  assert_int_equal(kiln_tensor_dim(x, 1), 2);
  double want[16], wy[4] = {100, 99, 98, 97};
  for (int i = 0; i < 16; i++) want[i] = fv[i];
  assert_true(tu_close_values("float64 images", x, want, 16, 0, 0));
  assert_true(tu_close_values("int32 labels", y, wy, 4, 0, 0));
  assert_int_equal(kiln_loader_next(l, &x, &y), KILN_OK);
  tu_track(x), tu_track(y);
  assert_int_equal(kiln_tensor_dim(x, 0), 2);
  kiln_loader_free(l);

  /* float32 [5, 3] images, uint8 labels: x [B, 3]. */
  kiln_tensor *f2 = tu_track(kiln_arange(0, 15, 1, KILN_F32));
  kiln_tensor *f2r = tu_track(kiln_reshape(f2, 2, TU_SHAPE(5, 3)));
  kiln_tensor *ub = tu_track(kiln_arange(0, 5, 1, KILN_U8));
  l = kiln_loader_new(f2r, ub, 5, false, 0, KILN_LAST_BATCH_KEEP);
  assert_int_equal(kiln_loader_next(l, &x, &y), KILN_OK);
  tu_track(x), tu_track(y);
  assert_int_equal(kiln_tensor_ndim(x), 2);
  TU_CLOSE(x, f2r, 0, 0);
  double ul[5] = {0, 1, 2, 3, 4};
  assert_true(tu_close_values("uint8 labels", y, ul, 5, 0, 0));
  kiln_loader_free(l);
}

/* Batches outlive the loader and the sources: pushed work holds what it
 * needs. The loader also reads sources whose values are still being
 * computed: its gather waits for them. */
static void loader_lifetimes(void **state) {
  (void)state;
  kiln_tensor *images, *labels;
  make_dataset(&images, &labels);
  /* Pending values: the images through an op (x * 1). */
  kiln_tensor *scaled = kiln_mul_scalar(tu_track(kiln_cast(images, KILN_F32)), 1.0);
  kiln_loader *l = kiln_loader_new(scaled, labels, 50, false, 0, KILN_LAST_BATCH_KEEP);
  assert_non_null(l);
  kiln_tensor *x, *y;
  assert_int_equal(kiln_loader_next(l, &x, &y), KILN_OK);
  kiln_loader_free(l);
  kiln_tensor_release(scaled);
  double *want = malloc(sizeof(double) * 50 * H * W);
  for (int i = 0; i < 50; i++)
    for (int k = 0; k < H * W; k++) want[i * H * W + k] = (i * 31 + k * 7) % 256;
  assert_true(tu_close_values("after free", tu_track(x), want, 50 * H * W, 0, 0));
  free(want);
  tu_track(y);
}

static void loader_misuse(void **state) {
  (void)state;
  kiln_tensor *images, *labels;
  make_dataset(&images, &labels);
  assert_null(kiln_loader_new(NULL, labels, 4, false, 0, KILN_LAST_BATCH_KEEP));
  assert_non_null(strstr(kiln_last_error(), "kiln_loader_new: images is NULL"));
  assert_null(kiln_loader_new(images, labels, 0, false, 0, KILN_LAST_BATCH_KEEP));
  assert_non_null(strstr(kiln_last_error(), "batch_size 0 is not positive"));
  assert_null(kiln_loader_new(images, labels, 4, false, 0, (kiln_last_batch)7));
  assert_non_null(strstr(kiln_last_error(), "policy 7"));
  kiln_tensor *short_labels = tu_track(kiln_zeros(KILN_I64, 1, TU_SHAPE(N - 1)));
  assert_null(kiln_loader_new(images, short_labels, 4, false, 0, KILN_LAST_BATCH_KEEP));
  assert_non_null(strstr(kiln_last_error(), "images [103, 5, 7] and labels [102]"));
  kiln_tensor *f_labels = tu_track(kiln_zeros(KILN_F32, 1, TU_SHAPE(N)));
  assert_null(kiln_loader_new(images, f_labels, 4, false, 0, KILN_LAST_BATCH_KEEP));
  assert_non_null(strstr(kiln_last_error(), "labels are float32"));
  kiln_tensor *i_images = tu_track(kiln_zeros(KILN_I32, 2, TU_SHAPE(N, 2)));
  assert_null(kiln_loader_new(i_images, labels, 4, false, 0, KILN_LAST_BATCH_KEEP));
  assert_non_null(strstr(kiln_last_error(), "images are int32"));
  kiln_tensor *failed = tu_track(kiln_reshape(images, 1, TU_SHAPE(7)));
  assert_null(kiln_loader_new(failed, labels, 4, false, 0, KILN_LAST_BATCH_KEEP));
  assert_non_null(strstr(kiln_last_error(), "images carry a failure"));
  kiln_tensor *x = (kiln_tensor *)1, *y = (kiln_tensor *)1;
  assert_int_equal(kiln_loader_next(NULL, &x, &y), KILN_ERR_INVALID_ARGUMENT);
  assert_null(x);
  assert_null(y);
  assert_int_equal(kiln_loader_reset(NULL), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_loader_num_batches(NULL), -1);
  kiln_loader_free(NULL);
}

/* ------------------------------------------------------------ engine modes */

/* FNV-1a over every byte of two shuffled epochs. */
static uint64_t loader_digest(void) {
  kiln_tensor *images, *labels;
  make_dataset(&images, &labels);
  kiln_loader *l = kiln_loader_new(images, labels, 8, true, 1234, KILN_LAST_BATCH_KEEP);
  uint64_t h = 1469598103934665603ull;
  for (int e = 0; e < 2; e++) {
    kiln_tensor *x, *y;
    while (kiln_loader_next(l, &x, &y) == KILN_OK) {
      size_t xb = (size_t)kiln_tensor_numel(x) * 4, yb = (size_t)kiln_tensor_numel(y) * 8;
      unsigned char *buf = malloc(xb + yb);
      if (kiln_tensor_copy_to(x, buf, xb) != KILN_OK || kiln_tensor_copy_to(y, buf + xb, yb) != KILN_OK) abort();
      for (size_t i = 0; i < xb + yb; i++) h = (h ^ buf[i]) * 1099511628211ull;
      free(buf);
      kiln_tensor_release(x);
      kiln_tensor_release(y);
    }
    kiln_loader_reset(l);
  }
  kiln_loader_free(l);
  return h;
}

static char self_path[4096];

/* This program under the other engine mode prints its digest; it must be
 * this one's. */
static void loader_same_under_both_engines(void **state) {
  (void)state;
  bool naive = engine_is_naive(kiln_default_engine());
  uint64_t here = loader_digest();
  tu_release_tracked(NULL);
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "KILN_ENGINE=%s '%s' --loader-digest", naive ? "threaded" : "naive", self_path);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  char line[128] = {0};
  char *got = fgets(line, sizeof line, p);
  int rc = pclose(p);
  assert_non_null(got);
  assert_int_equal(rc, 0);
  unsigned long long there = 0;
  int mode = -1;
  assert_int_equal(sscanf(line, "%d %llx", &mode, &there), 2);
  assert_int_equal(mode, naive ? 0 : 1); /* the child really ran the other mode */
  if (there != here) {
    fprintf(stderr, "digest %s %016llx, %s %016llx\n", naive ? "naive" : "threaded", (unsigned long long)here,
            naive ? "threaded" : "naive", there);
    fail();
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--loader-digest") == 0) {
    printf("%d %016llx\n", engine_is_naive(kiln_default_engine()) ? 1 : 0, (unsigned long long)loader_digest());
    tu_release_tracked(NULL);
    kiln_waitall();
    return 0;
  }
  ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
  if (n > 0) self_path[n] = '\0';
  const struct CMUnitTest tests[] = {
#define TEST(f) cmocka_unit_test_teardown(f, tu_release_tracked)
      TEST(round_trip_every_type_plain_and_gzip),
      TEST(every_truncation_fails),
      TEST(rejects_malformed_files),
      TEST(missing_file_and_null_path),
      TEST(fashion_mnist_checks_its_files),
      TEST(real_fashion_mnist),
      TEST(allocation_failures),
      TEST(loader_keep_and_discard),
      TEST(loader_order),
      TEST(loader_layouts_and_dtypes),
      TEST(loader_lifetimes),
      TEST(loader_misuse),
      TEST(loader_same_under_both_engines),
#undef TEST
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
