/* Tests of kiln_save_safetensors, kiln_load_safetensors and
 * kiln_named_tensors_free.
 *
 * Round trips of every dtype in the shapes (), (n,), (a, b, c) and with a
 * zero dim, from contiguous and strided tensors, and of thousands of
 * tensors in one file; files written by an independent writer
 * (tests/fixtures/make_safetensors_fixtures.py, from the format's
 * definition) and the reference implementation's own test vectors, which
 * kiln must read and write byte for byte; the atomic write; argument
 * errors; and a corpus of malformed files (tests/fixtures/bad_safetensors/),
 * one defect each, every one asserting its status and the words of its
 * message. Values are compared exactly: a file round trip must not change a
 * bit. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "testutil.h"

static void tmp_path(char *buf, size_t cap, const char *name) {
  const char *dir = getenv("TMPDIR");
  snprintf(buf, cap, "%s/kiln_test_st_%ld_%s.safetensors", dir && *dir ? dir : "/tmp", (long)getpid(), name);
}

static void good_path(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "%s/safetensors/%s.safetensors", KILN_FIXTURE_DIR, name);
}

static unsigned char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
  *len = n > 0 ? fread(buf, 1, (size_t)n, f) : 0;
  fclose(f);
  return buf;
}

static void write_all(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

/* Loaded tensors. Each also gets a tracked reference, so an assertion that
 * fails midway leaks at most the names. */
typedef struct {
  int n;
  char **names;
  kiln_tensor **tensors;
} loaded;

static loaded load_ok(const char *path) {
  loaded l = {0};
  kiln_status st = kiln_load_safetensors(path, &l.n, &l.names, &l.tensors);
  if (st != KILN_OK) {
    fprintf(stderr, "loading %s: %s\n", path, kiln_last_error());
    fail();
  }
  for (int i = 0; i < l.n; i++) tu_track(kiln_tensor_retain(l.tensors[i]));
  return l;
}

static void expect_same(const char *label, kiln_tensor *got, kiln_tensor *want) {
  TU_OK(got);
  assert_int_equal(kiln_tensor_dtype(got), kiln_tensor_dtype(want));
  assert_int_equal(kiln_tensor_ndim(got), kiln_tensor_ndim(want));
  for (int i = 0; i < kiln_tensor_ndim(want); i++) assert_int_equal(kiln_tensor_dim(got, i), kiln_tensor_dim(want, i));
  assert_true(kiln_tensor_is_contiguous(got));
  assert_true(tu_close(label, got, want, 0, 0));
}

/* ------------------------------------------------------------ round trips */

static void round_trip_every_dtype_and_shape(void **state) {
  (void)state;
  static const struct {
    int ndim;
    int64_t shape[3];
  } shapes[] = {{0, {0}}, {1, {5}}, {3, {2, 3, 4}}, {1, {0}}, {3, {2, 0, 3}}, {1, {1}}};
  enum { NS = sizeof shapes / sizeof shapes[0], N = KILN_DTYPE_COUNT * NS * 2 };
  kiln_tensor *want[N], *src[N];
  char name_buf[N][48];
  const char *names[N];
  int n = 0;
  for (int dt = 0; dt < KILN_DTYPE_COUNT; dt++)
    for (int s = 0; s < NS; s++)
      for (int nc = 0; nc < 2; nc++) {
        want[n] = tu_track(
            tu_random((kiln_dtype)dt, shapes[s].ndim, shapes[s].shape, 31 * (uint64_t)dt + (uint64_t)s, -100, 100));
        src[n] = nc ? tu_track(tu_noncontiguous(want[n])) : want[n];
        TU_OK(src[n]);
        if (nc && shapes[s].ndim > 1 && kiln_tensor_numel(want[n]) > 1) assert_false(kiln_tensor_is_contiguous(src[n]));
        snprintf(name_buf[n], sizeof name_buf[n], "%s.shape%d%s", kiln_dtype_name((kiln_dtype)dt), s,
                 nc ? ".strided" : "");
        names[n] = name_buf[n];
        n++;
      }
  char path[512];
  tmp_path(path, sizeof path, "round_trip");
  assert_int_equal(kiln_save_safetensors(path, n, names, src), KILN_OK);
  tu_expect_no_temporaries(path);
  loaded l = load_ok(path);
  assert_int_equal(l.n, n);
  for (int i = 0; i < n; i++) {
    assert_string_equal(l.names[i], names[i]); /* the order given is the order of data */
    expect_same(names[i], l.tensors[i], want[i]);
  }
  kiln_named_tensors_free(l.n, l.names, l.tensors);
  remove(path);
}

/* Enough tensors that the header's object takes the sorted index, in an
 * order that is not sorted. */
static void round_trip_many_tensors(void **state) {
  (void)state;
  enum { N = 3000 };
  static char name_buf[N][32];
  const char **names = malloc(N * sizeof *names);
  kiln_tensor **ts = malloc(N * sizeof *ts);
  for (int i = 0; i < N; i++) {
    snprintf(name_buf[i], sizeof name_buf[i], "layer.%d.w", (i * 7919) % N);
    names[i] = name_buf[i];
    int64_t len = i % 5;
    ts[i] = tu_track(tu_random(i % 2 ? KILN_F32 : KILN_I64, 1, &len, (uint64_t)i, -9, 9));
  }
  char path[512];
  tmp_path(path, sizeof path, "many");
  assert_int_equal(kiln_save_safetensors(path, N, names, ts), KILN_OK);
  loaded l = load_ok(path);
  assert_int_equal(l.n, N);
  for (int i = 0; i < N; i++) {
    assert_string_equal(l.names[i], names[i]);
    char label[48];
    snprintf(label, sizeof label, "tensor %d", i);
    expect_same(label, l.tensors[i], ts[i]);
  }
  kiln_named_tensors_free(l.n, l.names, l.tensors);
  remove(path);
  free(names);
  free(ts);
}

/* ------------------------------------------------------------ fixtures */

typedef struct {
  const char *name;
  kiln_dtype dtype;
  int ndim;
  int64_t shape[3];
  const void *data;
} spec;

static kiln_tensor *make(const spec *s) { return tu_track(kiln_from_data(s->dtype, s->ndim, s->shape, s->data)); }

static const float every_f32[6] = {0.0f, 0.25f, -1.5f, 3.0e38f, 1.0e-45f, -0.0f};
static const double every_f64[3] = {1.5, -2.25, 1e300};
static const int32_t every_i32[2] = {-7, 2147483647};
static const int64_t every_i64 = -9000000000;
static const uint8_t every_u8[3] = {0, 1, 255};
static const uint8_t every_bool[4] = {1, 0, 1, 1};
static const spec every_dtype[] = {
    {"fc.weight", KILN_F32, 2, {2, 3}, every_f32}, {"fc.bias", KILN_F64, 1, {3}, every_f64},
    {"idx", KILN_I32, 2, {2, 1}, every_i32},       {"step", KILN_I64, 0, {0}, &every_i64},
    {"pixels", KILN_U8, 1, {3}, every_u8},         {"mask", KILN_BOOL, 1, {4}, every_bool},
    {"empty", KILN_F32, 2, {0, 3}, NULL},
};
static const float unicode_values[5] = {1, 2, 3, 4, 5};
static const char *const unicode_names[5] = {"caf\xc3\xa9", "emoji\xf0\x9f\x98\x80", "tab\tnew\nline",
                                             "quote\"back\\slash", "ctl\x01\x1f\x7f"};
static const float attn_values[6] = {0, 1, 2, 3, 4, 5};

/* Saves n tensors and compares the file with the fixture byte for byte. */
static void expect_writes(const char *fixture, int n, const char *const *names, kiln_tensor *const *ts) {
  char src[512], dst[512];
  good_path(src, sizeof src, fixture);
  tmp_path(dst, sizeof dst, fixture);
  assert_int_equal(kiln_save_safetensors(dst, n, names, ts), KILN_OK);
  size_t n1 = 0, n2 = 0;
  unsigned char *a = read_all(src, &n1), *b = read_all(dst, &n2);
  assert_non_null(a);
  assert_non_null(b);
  if (n1 != n2 || memcmp(a, b, n1) != 0) {
    size_t at = 0;
    while (at < n1 && at < n2 && a[at] == b[at]) at++;
    fprintf(stderr, "%s: kiln wrote %zu bytes, the fixture has %zu; first difference at byte %zu\n", fixture, n2, n1,
            at);
    fprintf(stderr, "  fixture: %.*s\n  kiln:    %.*s\n", (int)(n1 < 200 ? n1 : 200), (const char *)a,
            (int)(n2 < 200 ? n2 : 200), (const char *)b);
    free(a);
    free(b);
    fail();
  }
  free(a);
  free(b);
  remove(dst);
}

static void writes_what_the_format_defines(void **state) {
  (void)state;
  enum { NE = sizeof every_dtype / sizeof every_dtype[0] };
  const char *names[NE];
  kiln_tensor *ts[NE];
  for (int i = 0; i < NE; i++) {
    names[i] = every_dtype[i].name;
    ts[i] = make(&every_dtype[i]);
  }
  expect_writes("kiln_every_dtype", NE, names, ts);
  /* Strided sources write the same bytes. */
  for (int i = 0; i < NE; i++) ts[i] = tu_track(tu_noncontiguous(ts[i]));
  expect_writes("kiln_every_dtype", NE, names, ts);

  kiln_tensor *u[5];
  for (int i = 0; i < 5; i++) u[i] = tu_track(kiln_from_data(KILN_F32, 1, TU_SHAPE(1), &unicode_values[i]));
  expect_writes("kiln_unicode_names", 5, unicode_names, u);

  /* The reference implementation's test vectors. */
  const char *attn[1] = {"attn.0"};
  kiln_tensor *a = tu_track(kiln_from_data(KILN_F32, 3, TU_SHAPE(1, 2, 3), attn_values));
  expect_writes("rust_attn", 1, attn, &a);
  const char *attn0[1] = {"attn0"};
  a = tu_track(kiln_from_data(KILN_F32, 4, TU_SHAPE(1, 1, 2, 3), attn_values));
  expect_writes("rust_attn_aligned", 1, attn0, &a);
  expect_writes("rust_empty", 0, NULL, NULL);
}

static void reads_what_the_format_defines(void **state) {
  (void)state;
  char path[512];
  good_path(path, sizeof path, "kiln_every_dtype");
  loaded l = load_ok(path);
  enum { NE = sizeof every_dtype / sizeof every_dtype[0] };
  assert_int_equal(l.n, NE);
  for (int i = 0; i < NE; i++) {
    assert_string_equal(l.names[i], every_dtype[i].name);
    expect_same(every_dtype[i].name, l.tensors[i], make(&every_dtype[i]));
  }
  /* Bit for bit: -0.0 and the denormal survive. */
  float f[6];
  assert_int_equal(kiln_tensor_copy_to(l.tensors[0], f, sizeof f), KILN_OK);
  assert_memory_equal(f, every_f32, sizeof f);
  kiln_named_tensors_free(l.n, l.names, l.tensors);

  /* The same names escaped as \u00e9 and surrogate pairs, and as raw UTF-8. */
  static const char *const unicode_files[] = {"kiln_unicode_names", "ascii_escaped_names"};
  for (size_t k = 0; k < 2; k++) {
    good_path(path, sizeof path, unicode_files[k]);
    l = load_ok(path);
    assert_int_equal(l.n, 5);
    for (int i = 0; i < 5; i++) {
      assert_string_equal(l.names[i], unicode_names[i]);
      expect_same(unicode_names[i], l.tensors[i],
                  tu_track(kiln_from_data(KILN_F32, 1, TU_SHAPE(1), &unicode_values[i])));
    }
    kiln_named_tensors_free(l.n, l.names, l.tensors);
  }

  /* The reference writer's layout: metadata first, data by dtype then name. */
  good_path(path, sizeof path, "hf_layout");
  l = load_ok(path);
  static const char *const hf_names[] = {"a.step", "b.bias", "c.weight", "d.idx", "e.img", "f.mask"};
  assert_int_equal(l.n, 6);
  for (int i = 0; i < 6; i++) assert_string_equal(l.names[i], hf_names[i]);
  expect_same("a.step", l.tensors[0], tu_track(kiln_from_data(KILN_I64, 1, TU_SHAPE(2), (const int64_t[]){1, -1})));
  expect_same("b.bias", l.tensors[1], tu_track(kiln_from_data(KILN_F64, 1, TU_SHAPE(2), (const double[]){0.5, -0.5})));
  expect_same("c.weight", l.tensors[2],
              tu_track(kiln_from_data(KILN_F32, 2, TU_SHAPE(2, 2), (const float[]){1, 2, 3, 4})));
  expect_same("d.idx", l.tensors[3], tu_track(kiln_from_data(KILN_I32, 1, TU_SHAPE(1), (const int32_t[]){42})));
  expect_same("e.img", l.tensors[4], tu_track(kiln_from_data(KILN_U8, 1, TU_SHAPE(2), (const uint8_t[]){7, 8})));
  expect_same("f.mask", l.tensors[5], tu_track(kiln_from_data(KILN_BOOL, 1, TU_SHAPE(2), (const uint8_t[]){0, 1})));
  kiln_named_tensors_free(l.n, l.names, l.tensors);

  /* Header order is not data order; empty tensors share an offset (ties go
   * in header order); pretty-printed JSON, keys in another order, trailing
   * spaces past the alignment, an empty __metadata__ last. */
  good_path(path, sizeof path, "shuffled_header");
  l = load_ok(path);
  static const char *const order[] = {"w", "z1", "z0", "v", "u"};
  assert_int_equal(l.n, 5);
  for (int i = 0; i < 5; i++) assert_string_equal(l.names[i], order[i]);
  expect_same("w", l.tensors[0], tu_track(kiln_from_data(KILN_F32, 1, TU_SHAPE(2), (const float[]){1, 2})));
  expect_same("z1", l.tensors[1], tu_track(kiln_zeros(KILN_I64, 2, TU_SHAPE(3, 0))));
  expect_same("z0", l.tensors[2], tu_track(kiln_zeros(KILN_F32, 1, TU_SHAPE(0))));
  expect_same("v", l.tensors[3], tu_track(kiln_from_data(KILN_I64, 1, TU_SHAPE(1), (const int64_t[]){123456789012})));
  expect_same("u", l.tensors[4], tu_track(kiln_from_data(KILN_U8, 1, TU_SHAPE(3), (const uint8_t[]){9, 8, 7})));
  kiln_named_tensors_free(l.n, l.names, l.tensors);

  good_path(path, sizeof path, "rust_empty");
  l = load_ok(path);
  assert_int_equal(l.n, 0);
  assert_non_null(l.names);
  assert_non_null(l.tensors);
  kiln_named_tensors_free(l.n, l.names, l.tensors);
  good_path(path, sizeof path, "rust_attn_aligned");
  l = load_ok(path);
  assert_int_equal(l.n, 1);
  assert_string_equal(l.names[0], "attn0");
  expect_same("attn0", l.tensors[0], tu_track(kiln_from_data(KILN_F32, 4, TU_SHAPE(1, 1, 2, 3), attn_values)));
  kiln_named_tensors_free(l.n, l.names, l.tensors);
}

/* ------------------------------------------------------------ malformed files */

static const struct {
  const char *file;
  kiln_status st;
  const char *text;
} bad_files[] = {
    {"empty_file", KILN_ERR_CORRUPT, "file of 0 bytes is too short for the 8-byte header length"},
    {"too_short", KILN_ERR_CORRUPT, "file of 3 bytes is too short for the 8-byte header length"},
    {"header_len_past_eof", KILN_ERR_CORRUPT, "header length 1000 runs past the end of the 27-byte file"},
    {"header_len_huge", KILN_ERR_CORRUPT, "header length 18446744073709551615 runs past the end of the 65-byte file"},
    {"header_len_zero", KILN_ERR_CORRUPT, "header: json: offset 0: expected a value, found the end of the input"},
    {"json_truncated", KILN_ERR_CORRUPT, "header: json: offset 34: string not closed before the end of the input"},
    {"json_trailing_garbage", KILN_ERR_CORRUPT, "header: json: offset 57: expected nothing after the value, found 'x'"},
    {"json_trailing_comma", KILN_ERR_CORRUPT, "header: json: offset 57: expected a string key after ',', found '}'"},
    {"json_single_quotes", KILN_ERR_CORRUPT, "header: json: offset 1: expected a string key or '}', found '''"},
    {"json_nan", KILN_ERR_CORRUPT, "header: json: offset 29: expected a value, found 'N'"},
    {"json_leading_zero", KILN_ERR_CORRUPT, "header: json: offset 50: number with a leading zero"},
    {"json_control_char", KILN_ERR_CORRUPT, "header: json: offset 3: control character 0x0A in a string"},
    {"json_lone_surrogate", KILN_ERR_CORRUPT, "header: json: offset 2: high surrogate \\uD800 not followed by a low"},
    {"json_invalid_utf8", KILN_ERR_CORRUPT, "header: json: offset 2: invalid UTF-8 in a string"},
    {"json_overlong_utf8", KILN_ERR_CORRUPT, "header: json: offset 2: invalid UTF-8 in a string"},
    {"json_bom", KILN_ERR_CORRUPT, "header: json: offset 0: expected a value, found byte 0xEF"},
    {"json_nul_padding", KILN_ERR_CORRUPT,
     "header: json: offset 57: expected nothing after the value, found byte 0x00"},
    {"json_too_deep", KILN_ERR_CORRUPT, "header: json: offset 79: nesting deeper than 64 levels"},
    {"not_object", KILN_ERR_CORRUPT, "the header is an array, not a JSON object"},
    {"entry_not_object", KILN_ERR_CORRUPT, "tensor 'a': the entry is an array, not an object"},
    {"missing_dtype", KILN_ERR_CORRUPT, "tensor 'a': missing key 'dtype'"},
    {"missing_shape", KILN_ERR_CORRUPT, "tensor 'a': missing key 'shape'"},
    {"missing_data_offsets", KILN_ERR_CORRUPT, "tensor 'a': missing key 'data_offsets'"},
    {"extra_key", KILN_ERR_CORRUPT,
     "tensor 'a': unknown key 'extra' (an entry has exactly dtype, shape, data_offsets)"},
    {"duplicate_key", KILN_ERR_CORRUPT, "tensor 'a': key 'dtype' appears twice"},
    {"duplicate_name", KILN_ERR_CORRUPT, "duplicate tensor name 'a'"},
    {"empty_name", KILN_ERR_CORRUPT, "empty tensor name"},
    {"nul_in_name", KILN_ERR_CORRUPT, "tensor 'a?b': the name contains a NUL character"},
    {"metadata_not_object", KILN_ERR_CORRUPT, "__metadata__ is a string, not an object of strings"},
    {"metadata_value_not_string", KILN_ERR_CORRUPT, "__metadata__ value 'format' is a number, not a string"},
    {"metadata_duplicate_key", KILN_ERR_CORRUPT, "__metadata__ key 'format' appears twice"},
    {"dtype_not_string", KILN_ERR_CORRUPT, "tensor 'a': dtype is a number, not a string"},
    {"bad_dtype", KILN_ERR_CORRUPT, "tensor 'a': unknown dtype 'F33'"},
    {"dtype_lowercase", KILN_ERR_CORRUPT, "tensor 'a': unknown dtype 'f32'"},
    {"f16_unsupported", KILN_ERR_UNSUPPORTED,
     "tensor 'h': dtype F16 is not supported (kiln reads F32, F64, I32, I64, U8, BOOL)"},
    {"bf16_unsupported", KILN_ERR_UNSUPPORTED, "tensor 'h': dtype BF16 is not supported"},
    {"f8_unsupported", KILN_ERR_UNSUPPORTED, "tensor 'h': dtype F8_E4M3 is not supported"},
    {"shape_not_array", KILN_ERR_CORRUPT, "tensor 'a': shape is a number, not an array"},
    {"shape_negative", KILN_ERR_CORRUPT, "tensor 'a': dimension 0 of the shape is -1, negative"},
    {"shape_fraction", KILN_ERR_CORRUPT, "tensor 'a': dimension 0 of the shape is not written as an integer"},
    {"shape_exponent", KILN_ERR_CORRUPT, "tensor 'a': dimension 0 of the shape is not written as an integer"},
    {"shape_string", KILN_ERR_CORRUPT, "tensor 'a': dimension 0 of the shape is a string, not an integer"},
    {"shape_dim_huge", KILN_ERR_OVERFLOW, "tensor 'a': dimension 0 of the shape does not fit in int64"},
    {"shape_overflow", KILN_ERR_OVERFLOW,
     "tensor 'a': the byte size of dtype F32 and shape [4294967296, 4294967296] overflows int64"},
    {"shape_overflow_with_zero", KILN_ERR_OVERFLOW,
     "tensor 'a': the byte size of dtype F32 and shape [0, 4294967296, 4294967296] overflows int64"},
    {"too_many_dims", KILN_ERR_UNSUPPORTED, "tensor 'a': shape has 9 dims (kiln supports at most 8)"},
    {"offsets_not_array", KILN_ERR_CORRUPT, "tensor 'a': data_offsets is a number, not an array of two integers"},
    {"offsets_three", KILN_ERR_CORRUPT, "tensor 'a': data_offsets is an array of another length, not an array of two"},
    {"offsets_negative", KILN_ERR_CORRUPT, "tensor 'a': data_offsets must be two non-negative integers"},
    {"offsets_huge", KILN_ERR_CORRUPT,
     "tensor 'a': data_offsets hold an integer beyond int64, past the end of the 24-byte data buffer"},
    {"offsets_reversed", KILN_ERR_CORRUPT, "tensor 'a': data_offsets [24, 0] end before they begin"},
    {"offsets_past_end", KILN_ERR_CORRUPT,
     "tensor 'a': data_offsets [0, 24] run past the end of the 16-byte data buffer"},
    {"offsets_size_mismatch", KILN_ERR_CORRUPT,
     "tensor 'fc.weight': data_offsets [0, 12] span 12 bytes but dtype F32 and shape [2, 3] need 24"},
    {"offsets_gap", KILN_ERR_CORRUPT,
     "tensor 'b': data_offsets [12, 20] leave a gap of 4 bytes after byte 8, where the previous tensor ends"},
    {"offsets_gap_at_start", KILN_ERR_CORRUPT,
     "tensor 'a': data_offsets [4, 12] leave a gap of 4 bytes after byte 0, where the data buffer starts"},
    {"offsets_overlap", KILN_ERR_CORRUPT, "tensor 'b': data_offsets [4, 12] overlap tensor 'a' [0, 8]"},
    {"offsets_same_range", KILN_ERR_CORRUPT, "tensor 'b': data_offsets [0, 8] overlap tensor 'a' [0, 8]"},
    {"trailing_data", KILN_ERR_CORRUPT,
     "4 bytes of the 12-byte data buffer follow the last tensor (the tensors must cover it exactly)"},
    {"no_tensors_with_data", KILN_ERR_CORRUPT, "4 bytes of the 4-byte data buffer follow the last tensor"},
    {"bool_value_2", KILN_ERR_CORRUPT, "tensor 'flags': bool element 1 is 2, not 0 or 1"},
};

static void rejects_malformed_files(void **state) {
  (void)state;
  enum { NB = sizeof bad_files / sizeof bad_files[0] };
  int wrong = 0;
  for (size_t i = 0; i < NB; i++) {
    char path[512], want[640];
    snprintf(path, sizeof path, "%s/bad_safetensors/%s.safetensors", KILN_FIXTURE_DIR, bad_files[i].file);
    int n = -1;
    char **names = (char **)1;
    kiln_tensor **ts = (kiln_tensor **)1;
    kiln_status st = kiln_load_safetensors(path, &n, &names, &ts);
    /* Every message names the function, the file and then what is wrong. */
    snprintf(want, sizeof want, "kiln_load_safetensors: %s: ", path);
    const char *msg = kiln_last_error();
    if (st != bad_files[i].st || strncmp(msg, want, strlen(want)) != 0 || !strstr(msg, bad_files[i].text)) {
      fprintf(stderr, "%s:\n  got  %s: %s\n  want %s: ...%s\n", bad_files[i].file, kiln_status_name(st), msg,
              kiln_status_name(bad_files[i].st), bad_files[i].text);
      wrong++; /* the whole table is reported before failing */
      continue;
    }
    assert_int_equal(n, 0);
    assert_null(names);
    assert_null(ts);

    /* From memory: the same status and message, the name for the path. */
    size_t len = 0;
    unsigned char *bytes = read_all(path, &len);
    assert_non_null(bytes);
    st = safetensors_load_memory(bytes, len, "mem", &n, &names, &ts);
    free(bytes);
    assert_int_equal(st, bad_files[i].st);
    assert_true(strncmp(kiln_last_error(), "kiln_load_safetensors: mem: ", 28) == 0);
    assert_non_null(strstr(kiln_last_error(), bad_files[i].text));
  }
  assert_int_equal(wrong, 0);

  /* The corpus and this table list the same files, so none goes untested. */
  char dir[512];
  snprintf(dir, sizeof dir, "%s/bad_safetensors", KILN_FIXTURE_DIR);
  DIR *d = opendir(dir);
  assert_non_null(d);
  size_t files = 0;
  for (struct dirent *e; (e = readdir(d));) {
    if (e->d_name[0] == '.') continue;
    files++;
    bool listed = false;
    for (size_t i = 0; i < NB && !listed; i++) {
      char f[256];
      snprintf(f, sizeof f, "%s.safetensors", bad_files[i].file);
      listed = strcmp(f, e->d_name) == 0;
    }
    if (!listed) {
      fprintf(stderr, "bad_safetensors/%s is not in the table\n", e->d_name);
      closedir(d);
      fail();
    }
  }
  closedir(d);
  assert_int_equal(files, NB);
}

/* A header over the 100 MB limit that the file does hold: refused before
 * it is read. calloc'd, so the pages are never touched. */
static void rejects_a_header_over_the_limit(void **state) {
  (void)state;
  size_t size = 8 + (size_t)SAFETENSORS_MAX_HEADER + 1;
  unsigned char *b = calloc(size, 1);
  assert_non_null(b);
  uint64_t h = SAFETENSORS_MAX_HEADER + 1;
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)(h >> (8 * i));
  int n;
  char **names;
  kiln_tensor **ts;
  assert_int_equal(safetensors_load_memory(b, size, "big", &n, &names, &ts), KILN_ERR_UNSUPPORTED);
  assert_string_equal(kiln_last_error(),
                      "kiln_load_safetensors: big: header length 100000001 is over the limit of 100000000 bytes");
  free(b);
}

/* Every prefix of a good file is a bad file, and none may crash or pass. */
static void every_truncation_fails(void **state) {
  (void)state;
  char path[512], dst[512];
  good_path(path, sizeof path, "kiln_every_dtype");
  tmp_path(dst, sizeof dst, "truncated");
  size_t len = 0;
  unsigned char *bytes = read_all(path, &len);
  assert_non_null(bytes);
  for (size_t k = 0; k < len; k++) {
    int n = -1;
    char **names = NULL;
    kiln_tensor **ts = NULL;
    kiln_status st = safetensors_load_memory(bytes, k, "prefix", &n, &names, &ts);
    if (st == KILN_OK || n != 0 || names || ts) {
      fprintf(stderr, "a %zu-byte prefix of %s loaded\n", k, path);
      free(bytes);
      fail();
    }
    assert_true(st == KILN_ERR_CORRUPT);
    if (k % 17 == 0) { /* and through a file now and then */
      write_all(dst, bytes, k);
      assert_int_equal(kiln_load_safetensors(dst, &n, &names, &ts), KILN_ERR_CORRUPT);
    }
  }
  free(bytes);
  remove(dst);
}

static void load_failures(void **state) {
  (void)state;
  int n = -1;
  char **names = (char **)1;
  kiln_tensor **ts = (kiln_tensor **)1;
  assert_int_equal(kiln_load_safetensors("/nonexistent-dir-kiln/none.safetensors", &n, &names, &ts), KILN_ERR_IO);
  assert_non_null(strstr(kiln_last_error(),
                         "kiln_load_safetensors: /nonexistent-dir-kiln/none.safetensors: cannot open: No such file"));
  assert_int_equal(n, 0);
  assert_null(names);
  assert_null(ts);
  assert_int_equal(kiln_load_safetensors(KILN_FIXTURE_DIR, &n, &names, &ts), KILN_ERR_IO);
  assert_non_null(strstr(kiln_last_error(), "not a regular file"));
  assert_int_equal(kiln_load_safetensors(NULL, &n, &names, &ts), KILN_ERR_INVALID_ARGUMENT);
  assert_string_equal(kiln_last_error(), "kiln_load_safetensors: path is NULL");
  char path[512];
  good_path(path, sizeof path, "rust_attn");
  assert_int_equal(kiln_load_safetensors(path, NULL, &names, &ts), KILN_ERR_INVALID_ARGUMENT);
  assert_string_equal(kiln_last_error(), "kiln_load_safetensors: n is NULL");
  assert_int_equal(kiln_load_safetensors(path, &n, NULL, &ts), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_load_safetensors(path, &n, &names, NULL), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(safetensors_load_memory(NULL, 8, "m", &n, &names, &ts), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(safetensors_load_memory(NULL, 0, "m", &n, &names, &ts), KILN_ERR_CORRUPT);
  kiln_named_tensors_free(0, NULL, NULL);
}

/* ------------------------------------------------------------ save */

static void save_failures(void **state) {
  (void)state;
  char path[512];
  tmp_path(path, sizeof path, "save_failures");
  kiln_tensor *x = tu_track(kiln_ones(KILN_F32, 1, TU_SHAPE(3)));
  kiln_tensor *ts[3] = {x, x, x};
  const char *names[3] = {"a", "b", "a"};
  assert_int_equal(kiln_save_safetensors(path, 3, names, ts), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "kiln_save_safetensors: "));
  assert_non_null(strstr(kiln_last_error(), ": names 0 and 2 are both 'a'"));
  names[2] = "";
  assert_int_equal(kiln_save_safetensors(path, 3, names, ts), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "name 2 is empty"));
  names[2] = NULL;
  assert_int_equal(kiln_save_safetensors(path, 3, names, ts), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "name 2 is NULL"));
  names[2] = "bad\xff";
  assert_int_equal(kiln_save_safetensors(path, 3, names, ts), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "name 2 is not valid UTF-8"));
  names[2] = "__metadata__";
  assert_int_equal(kiln_save_safetensors(path, 3, names, ts), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "name 2 is '__metadata__', which the format reserves"));
  names[2] = "c";
  ts[1] = NULL;
  assert_int_equal(kiln_save_safetensors(path, 3, names, ts), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "tensor 1 ('b') is NULL"));
  ts[1] = x;
  assert_int_equal(kiln_save_safetensors(NULL, 3, names, ts), KILN_ERR_INVALID_ARGUMENT);
  assert_string_equal(kiln_last_error(), "kiln_save_safetensors: path is NULL");
  assert_int_equal(kiln_save_safetensors(path, -1, names, ts), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_save_safetensors(path, 3, NULL, ts), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(kiln_save_safetensors(path, 3, names, NULL), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(access(path, F_OK), -1);

  /* A failure a tensor carries is returned and the file not touched. */
  kiln_tensor *bad = tu_track(kiln_reshape(x, 1, TU_SHAPE(4)));
  kiln_status carried = kiln_tensor_status(bad);
  assert_int_not_equal(carried, KILN_OK);
  ts[1] = bad;
  assert_int_equal(kiln_save_safetensors(path, 3, names, ts), carried);
  assert_non_null(strstr(kiln_last_error(), "tensor 'b' carries a failure: "));
  assert_non_null(strstr(kiln_last_error(), kiln_tensor_error(bad)));
  assert_int_equal(access(path, F_OK), -1);
  tu_expect_no_temporaries(path);

  ts[1] = x;
  assert_int_equal(kiln_save_safetensors("/nonexistent-dir-kiln/x.safetensors", 3, names, ts), KILN_ERR_IO);
  assert_non_null(
      strstr(kiln_last_error(), "kiln_save_safetensors: /nonexistent-dir-kiln/x.safetensors: cannot create"));
}

/* Overwriting goes through a temporary file that does not outlive the call,
 * and a save that cannot complete leaves the old file as it was. */
static void save_is_atomic(void **state) {
  (void)state;
  char dir[512], path[600];
  tmp_path(dir, sizeof dir, "atomic_dir");
  assert_int_equal(mkdir(dir, 0755), 0);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  const char *na[1] = {"a"}, *nb[1] = {"b"};
  kiln_tensor *a = tu_track(kiln_full(KILN_F32, 1, TU_SHAPE(1000), 1.0));
  kiln_tensor *b = tu_track(kiln_full(KILN_I64, 2, TU_SHAPE(2, 2), 7.0));
  assert_int_equal(kiln_save_safetensors(path, 1, na, &a), KILN_OK);
  assert_int_equal(kiln_save_safetensors(path, 1, nb, &b), KILN_OK);
  tu_expect_no_temporaries(path);
  loaded l = load_ok(path);
  assert_int_equal(l.n, 1);
  assert_string_equal(l.names[0], "b");
  expect_same("overwritten", l.tensors[0], b);
  kiln_named_tensors_free(l.n, l.names, l.tensors);

  size_t old_len = 0;
  unsigned char *old = read_all(path, &old_len);
  assert_non_null(old);
  /* A directory that refuses new files (root ignores the mode, so this
   * part runs only for other users). */
  if (geteuid() != 0) {
    assert_int_equal(chmod(dir, 0555), 0);
    kiln_status st = kiln_save_safetensors(path, 1, na, &a);
    assert_int_equal(chmod(dir, 0755), 0);
    assert_int_equal(st, KILN_ERR_IO);
    assert_non_null(strstr(kiln_last_error(), "cannot create"));
    size_t len = 0;
    unsigned char *now = read_all(path, &len);
    assert_int_equal(len, old_len);
    assert_memory_equal(now, old, len);
    free(now);
  }
  /* A file name so long that the temporary's name is too long for the
   * file system: the create fails for every user, root included. */
  char longpath[1024];
  int k = snprintf(longpath, sizeof longpath, "%s/", dir);
  memset(longpath + k, 'x', 250);
  longpath[k + 250] = '\0';
  write_all(longpath, old, old_len);
  assert_int_equal(kiln_save_safetensors(longpath, 1, na, &a), KILN_ERR_IO);
  assert_non_null(strstr(kiln_last_error(), "cannot create"));
  size_t len = 0;
  unsigned char *now = read_all(longpath, &len);
  assert_int_equal(len, old_len);
  assert_memory_equal(now, old, len);
  free(now);
  free(old);
  remove(longpath);
  remove(path);
  assert_int_equal(rmdir(dir), 0);
}

/* ------------------------------------------------------------ allocation failures */

/* Each allocation of a load (from a file and from memory) and of a save
 * fails in turn: the outcome is success or KILN_ERR_OUT_OF_MEMORY, never a
 * crash, a leak, a half-set output or a stray temporary file. */
static void allocation_failures(void **state) {
  (void)state;
  char src[512], dst[512];
  good_path(src, sizeof src, "hf_layout");
  tmp_path(dst, sizeof dst, "oom");
  size_t len = 0;
  unsigned char *bytes = read_all(src, &len);
  assert_non_null(bytes);
  loaded l = load_ok(src);
  kiln_tensor *strided[6];
  for (int i = 0; i < l.n; i++) strided[i] = tu_track(tu_noncontiguous(l.tensors[i]));
  long fail_at;
  for (fail_at = 0;; fail_at++) {
    kiln_waitall(); /* memory the old allocator gave must go back to it */
    tu_fail_allocation(fail_at);
    int n1 = -1, n2 = -1;
    char **names1 = NULL, **names2 = NULL;
    kiln_tensor **t1 = NULL, **t2 = NULL;
    kiln_status s1 = kiln_load_safetensors(src, &n1, &names1, &t1);
    kiln_status s2 = safetensors_load_memory(bytes, len, "mem", &n2, &names2, &t2);
    kiln_status s3 = kiln_save_safetensors(dst, l.n, (const char *const *)l.names, strided);
    kiln_named_tensors_free(n1, names1, t1);
    kiln_named_tensors_free(n2, names2, t2);
    kiln_waitall();
    tu_restore_allocator();
    assert_true(s1 == KILN_OK || s1 == KILN_ERR_OUT_OF_MEMORY);
    assert_true(s2 == KILN_OK || s2 == KILN_ERR_OUT_OF_MEMORY);
    assert_true(s3 == KILN_OK || s3 == KILN_ERR_OUT_OF_MEMORY);
    assert_int_equal(n1, s1 == KILN_OK ? 6 : 0);
    assert_int_equal(n2, s2 == KILN_OK ? 6 : 0);
    if (s1 != KILN_OK) assert_true(!names1 && !t1);
    if (s2 != KILN_OK) assert_true(!names2 && !t2);
    tu_expect_no_temporaries(dst);
    if (s1 == KILN_OK && s2 == KILN_OK && s3 == KILN_OK && tu_allocations() <= fail_at) break;
  }
  assert_true(fail_at > 20);
  kiln_named_tensors_free(l.n, l.names, l.tensors);
  free(bytes);
  remove(dst);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define TEST(f) cmocka_unit_test_teardown(f, tu_release_tracked)
      TEST(round_trip_every_dtype_and_shape),
      TEST(round_trip_many_tensors),
      TEST(writes_what_the_format_defines),
      TEST(reads_what_the_format_defines),
      TEST(rejects_malformed_files),
      TEST(rejects_a_header_over_the_limit),
      TEST(every_truncation_fails),
      TEST(load_failures),
      TEST(save_failures),
      TEST(save_is_atomic),
      TEST(allocation_failures),
#undef TEST
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
