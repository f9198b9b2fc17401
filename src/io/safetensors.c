/* safetensors files: kiln_save_safetensors, kiln_load_safetensors and
 * kiln_named_tensors_free.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON
 *   {"fc.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},...,
 *    "__metadata__":{"format":"pt"}}
 * (optionally padded with spaces), then the data buffer, which the
 * data_offsets of the entries index from its first byte.
 *
 * A file is data from outside, so the loader checks every field before
 * using it, and checks all of them before allocating any tensor: a hostile
 * header cannot make kiln allocate more than the file holds. The format
 * requires the entries' byte ranges to tile the data buffer exactly (no
 * gap, no overlap, nothing left over); kiln enforces that as the reference
 * implementation does, which also means the ranges, once sorted, can be
 * read front to back in one pass. The writer goes through a temporary file,
 * fsync and rename, so a reader never sees half a file. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/json.h"
#include "io/safetensors.h"
#include "tensor/tensor.h"

/* safetensors data is little-endian and is copied to and from storage as
 * it is. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

static const struct {
  const char *name;
  kiln_dtype dtype;
} st_dtypes[] = {{"F32", KILN_F32}, {"F64", KILN_F64}, {"I32", KILN_I32},
                 {"I64", KILN_I64}, {"U8", KILN_U8},   {"BOOL", KILN_BOOL}};

/* Valid safetensors dtypes kiln has no type for: KILN_ERR_UNSUPPORTED, not
 * KILN_ERR_CORRUPT, since the file is fine. */
static const char *const st_foreign_dtypes[] = {"F16",     "BF16",    "I8",      "I16",     "U16",     "U32", "U64",
                                                "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",  "C64"};

static const char *st_name_of(kiln_dtype dt) {
  for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
    if (st_dtypes[i].dtype == dt) return st_dtypes[i].name;
  return NULL;
}


/* ------------------------------------------------------------ header checks */

typedef struct {
  const char *name; /* in the JSON document */
  size_t name_len;
  size_t order; /* position in the header, to keep sorting stable */
  kiln_dtype dtype;
  int ndim;
  int64_t shape[KILN_MAX_DIMS];
  uint64_t begin, end;
} st_entry;

typedef struct {
  const char *fn, *path;
  uint64_t data_size;
} st_ctx;

static kiln_status entry_fail(const st_ctx *c, const st_entry *e, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static kiln_status entry_fail(const st_ctx *c, const st_entry *e, kiln_status st, const char *fmt, ...) {
  char what[KILN_ERROR_MAX], nm[KILN_PRINTABLE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return kiln_errorf(st, "%s: %s: tensor '%s': %s", c->fn, c->path, kiln_printable(nm, e->name, e->name_len), what);
}

static kiln_status check_dtype(const st_ctx *c, st_entry *e, const json_value *v) {
  size_t len;
  const char *s = json_string(v, &len);
  if (!s) return entry_fail(c, e, KILN_ERR_CORRUPT, "dtype is %s, not a string", json_type_name(json_type_of(v)));
  for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
    if (strlen(st_dtypes[i].name) == len && memcmp(st_dtypes[i].name, s, len) == 0) {
      e->dtype = st_dtypes[i].dtype;
      return KILN_OK;
    }
  for (size_t i = 0; i < sizeof st_foreign_dtypes / sizeof st_foreign_dtypes[0]; i++)
    if (strlen(st_foreign_dtypes[i]) == len && memcmp(st_foreign_dtypes[i], s, len) == 0)
      return entry_fail(c, e, KILN_ERR_UNSUPPORTED,
                        "dtype %s is not supported (kiln reads F32, F64, I32, I64, U8, BOOL)", st_foreign_dtypes[i]);
  char d[KILN_PRINTABLE_MAX];
  return entry_fail(c, e, KILN_ERR_CORRUPT, "unknown dtype '%s'", kiln_printable(d, s, len));
}

static kiln_status check_shape(const st_ctx *c, st_entry *e, const json_value *v) {
  if (json_type_of(v) != JSON_ARRAY)
    return entry_fail(c, e, KILN_ERR_CORRUPT, "shape is %s, not an array", json_type_name(json_type_of(v)));
  size_t nd = json_array_size(v);
  if (nd > KILN_MAX_DIMS)
    return entry_fail(c, e, KILN_ERR_UNSUPPORTED, "shape has %zu dims (kiln supports at most %d)", nd, KILN_MAX_DIMS);
  e->ndim = (int)nd;
  for (size_t i = 0; i < nd; i++) {
    const json_value *d = json_array_at(v, i);
    int64_t x = 0;
    switch (json_get_int64(d, &x)) {
    case JSON_INT_OK:
      if (x < 0)
        return entry_fail(c, e, KILN_ERR_CORRUPT, "dimension %zu of the shape is %lld, negative", i, (long long)x);
      e->shape[i] = x;
      break;
    case JSON_INT_RANGE:
      return entry_fail(c, e, KILN_ERR_OVERFLOW, "dimension %zu of the shape does not fit in int64", i);
    case JSON_INT_NOT_INTEGER:
      return entry_fail(c, e, KILN_ERR_CORRUPT, "dimension %zu of the shape is not written as an integer", i);
    case JSON_INT_NOT_NUMBER:
      return entry_fail(c, e, KILN_ERR_CORRUPT, "dimension %zu of the shape is %s, not an integer", i,
                        json_type_name(json_type_of(d)));
    }
  }
  return KILN_OK;
}

/* Byte size of the entry's dtype and shape. kiln's rule, stricter than
 * the format's: the product of the nonzero dims must fit too, since the
 * strides are computed from it even when a zero dim empties the tensor. */
static kiln_status entry_bytes(const st_ctx *c, const st_entry *e, uint64_t *out) {
  int64_t nonzero = 1;
  bool empty = false;
  for (int i = 0; i < e->ndim; i++) {
    if (e->shape[i] == 0) {
      empty = true;
      continue;
    }
    if (!kiln_mul_i64(nonzero, e->shape[i], &nonzero)) goto overflow;
  }
  int64_t bytes;
  if (!kiln_mul_i64(nonzero, (int64_t)kiln_dtype_size(e->dtype), &bytes)) goto overflow;
  *out = empty ? 0 : (uint64_t)bytes;
  return KILN_OK;
overflow:;
  char sh[KILN_SHAPE_STR_MAX];
  return entry_fail(c, e, KILN_ERR_OVERFLOW, "the byte size of dtype %s and shape %s overflows int64",
                    st_name_of(e->dtype), kiln_shape_str(sh, sizeof sh, e->ndim, e->shape));
}

static kiln_status check_offsets(const st_ctx *c, st_entry *e, const json_value *v) {
  if (json_type_of(v) != JSON_ARRAY || json_array_size(v) != 2)
    return entry_fail(c, e, KILN_ERR_CORRUPT, "data_offsets is %s, not an array of two integers",
                      json_type_of(v) == JSON_ARRAY ? "an array of another length" : json_type_name(json_type_of(v)));
  int64_t x[2];
  for (size_t i = 0; i < 2; i++) {
    json_int_result r = json_get_int64(json_array_at(v, i), &x[i]);
    if (r == JSON_INT_RANGE)
      return entry_fail(c, e, KILN_ERR_CORRUPT,
                        "data_offsets hold an integer beyond int64, past the end of the %llu-byte data buffer",
                        (unsigned long long)c->data_size);
    if (r != JSON_INT_OK || x[i] < 0)
      return entry_fail(c, e, KILN_ERR_CORRUPT, "data_offsets must be two non-negative integers");
  }
  e->begin = (uint64_t)x[0];
  e->end = (uint64_t)x[1];
  if (e->end < e->begin)
    return entry_fail(c, e, KILN_ERR_CORRUPT, "data_offsets [%llu, %llu] end before they begin",
                      (unsigned long long)e->begin, (unsigned long long)e->end);
  if (e->end > c->data_size)
    return entry_fail(c, e, KILN_ERR_CORRUPT, "data_offsets [%llu, %llu] run past the end of the %llu-byte data buffer",
                      (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)c->data_size);
  uint64_t need = 0;
  kiln_status st = entry_bytes(c, e, &need);
  if (st != KILN_OK) return st;
  if (e->end - e->begin != need) {
    char sh[KILN_SHAPE_STR_MAX];
    return entry_fail(c, e, KILN_ERR_CORRUPT,
                      "data_offsets [%llu, %llu] span %llu bytes but dtype %s and shape %s need %llu",
                      (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)(e->end - e->begin),
                      st_name_of(e->dtype), kiln_shape_str(sh, sizeof sh, e->ndim, e->shape), (unsigned long long)need);
  }
  return KILN_OK;
}

static const char *const entry_keys[3] = {"dtype", "shape", "data_offsets"};

static kiln_status check_entry(const st_ctx *c, st_entry *e, const json_value *v) {
  if (json_type_of(v) != JSON_OBJECT)
    return entry_fail(c, e, KILN_ERR_CORRUPT, "the entry is %s, not an object", json_type_name(json_type_of(v)));
  size_t dup;
  if (json_object_duplicate(v, &dup)) {
    char k[KILN_PRINTABLE_MAX];
    size_t len;
    const char *key = json_object_key(v, dup, &len);
    return entry_fail(c, e, KILN_ERR_CORRUPT, "key '%s' appears twice", kiln_printable(k, key, len));
  }
  for (size_t i = 0; i < json_object_size(v); i++) {
    size_t len;
    const char *key = json_object_key(v, i, &len);
    bool known = false;
    for (size_t j = 0; j < 3; j++) known |= strlen(entry_keys[j]) == len && memcmp(entry_keys[j], key, len) == 0;
    if (!known) {
      char k[KILN_PRINTABLE_MAX];
      return entry_fail(c, e, KILN_ERR_CORRUPT, "unknown key '%s' (an entry has exactly dtype, shape, data_offsets)",
                        kiln_printable(k, key, len));
    }
  }
  for (size_t j = 0; j < 3; j++)
    if (!json_object_get(v, entry_keys[j]))
      return entry_fail(c, e, KILN_ERR_CORRUPT, "missing key '%s'", entry_keys[j]);
  kiln_status st = check_dtype(c, e, json_object_get(v, "dtype"));
  if (st == KILN_OK) st = check_shape(c, e, json_object_get(v, "shape"));
  if (st == KILN_OK) st = check_offsets(c, e, json_object_get(v, "data_offsets"));
  return st;
}

static kiln_status check_metadata(const st_ctx *c, const json_value *v) {
  if (json_type_of(v) != JSON_OBJECT)
    return kiln_errorf(KILN_ERR_CORRUPT, "%s: %s: __metadata__ is %s, not an object of strings", c->fn, c->path,
                       json_type_name(json_type_of(v)));
  char k[KILN_PRINTABLE_MAX];
  size_t dup, len;
  if (json_object_duplicate(v, &dup)) {
    const char *key = json_object_key(v, dup, &len);
    return kiln_errorf(KILN_ERR_CORRUPT, "%s: %s: __metadata__ key '%s' appears twice", c->fn, c->path,
                       kiln_printable(k, key, len));
  }
  for (size_t i = 0; i < json_object_size(v); i++) {
    const json_value *x = json_object_value(v, i);
    if (json_type_of(x) != JSON_STRING) {
      const char *key = json_object_key(v, i, &len);
      return kiln_errorf(KILN_ERR_CORRUPT, "%s: %s: __metadata__ value '%s' is %s, not a string", c->fn, c->path,
                         kiln_printable(k, key, len), json_type_name(json_type_of(x)));
    }
  }
  return KILN_OK;
}

static int entry_order(const void *x, const void *y) {
  const st_entry *a = x, *b = y;
  if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
  if (a->end != b->end) return a->end < b->end ? -1 : 1;
  return a->order < b->order ? -1 : a->order > b->order;
}

/* The entries of the header, checked, in the order of their data. On
 * success *entries (kiln_alloc'd; its names point into doc) holds *count. */
static kiln_status check_header(const st_ctx *c, const json_value *root, st_entry **entries, size_t *count) {
  *entries = NULL;
  *count = 0;
  if (json_type_of(root) != JSON_OBJECT)
    return kiln_errorf(KILN_ERR_CORRUPT, "%s: %s: the header is %s, not a JSON object", c->fn, c->path,
                       json_type_name(json_type_of(root)));
  size_t dup;
  if (json_object_duplicate(root, &dup)) {
    char nm[KILN_PRINTABLE_MAX];
    size_t len;
    const char *key = json_object_key(root, dup, &len);
    return kiln_errorf(KILN_ERR_CORRUPT, "%s: %s: duplicate tensor name '%s'", c->fn, c->path, kiln_printable(nm, key, len));
  }
  size_t members = json_object_size(root);
  if (members > INT_MAX)
    return kiln_errorf(KILN_ERR_UNSUPPORTED, "%s: %s: more than %d tensors", c->fn, c->path, INT_MAX);
  st_entry *es = kiln_alloc((members ? members : 1) * sizeof *es);
  if (!es)
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: %s: out of memory for %zu header entries", c->fn, c->path, members);
  size_t n = 0;
  kiln_status st = KILN_OK;
  for (size_t i = 0; i < members && st == KILN_OK; i++) {
    size_t len;
    const char *key = json_object_key(root, i, &len);
    const json_value *v = json_object_value(root, i);
    if (len == 12 && memcmp(key, "__metadata__", 12) == 0) {
      st = check_metadata(c, v);
      continue;
    }
    st_entry *e = &es[n];
    memset(e, 0, sizeof *e);
    e->name = key;
    e->name_len = len;
    e->order = n;
    if (len == 0)
      st = kiln_errorf(KILN_ERR_CORRUPT, "%s: %s: empty tensor name", c->fn, c->path);
    else if (memchr(key, '\0', len))
      st = entry_fail(c, e, KILN_ERR_CORRUPT, "the name contains a NUL character");
    else
      st = check_entry(c, e, v);
    n++;
  }
  if (st != KILN_OK) {
    kiln_free(es);
    return st;
  }
  qsort(es, n, sizeof *es, entry_order);
  uint64_t at = 0;
  for (size_t i = 0; i < n; i++) {
    st_entry *e = &es[i];
    if (e->begin > at)
      st = entry_fail(c, e, KILN_ERR_CORRUPT,
                      "data_offsets [%llu, %llu] leave a gap of %llu bytes after byte %llu, where %s",
                      (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)(e->begin - at),
                      (unsigned long long)at, i ? "the previous tensor ends" : "the data buffer starts");
    else if (e->begin < at) {
      char prev[KILN_PRINTABLE_MAX];
      st = entry_fail(c, e, KILN_ERR_CORRUPT, "data_offsets [%llu, %llu] overlap tensor '%s' [%llu, %llu]",
                      (unsigned long long)e->begin, (unsigned long long)e->end,
                      kiln_printable(prev, es[i - 1].name, es[i - 1].name_len), (unsigned long long)es[i - 1].begin,
                      (unsigned long long)es[i - 1].end);
    }
    if (st != KILN_OK) break;
    at = e->end;
  }
  if (st == KILN_OK && at != c->data_size)
    st = kiln_errorf(KILN_ERR_CORRUPT,
                     "%s: %s: %llu bytes of the %llu-byte data buffer follow the last tensor (the tensors must cover "
                     "it exactly)",
                     c->fn, c->path, (unsigned long long)(c->data_size - at), (unsigned long long)c->data_size);
  if (st != KILN_OK) {
    kiln_free(es);
    return st;
  }
  *entries = es;
  *count = n;
  return KILN_OK;
}

/* ------------------------------------------------------------ load */

/* Where the bytes come from: a file (kiln_load_safetensors) or memory
 * (safetensors_load_memory). */
typedef struct {
  FILE *f;
  const unsigned char *mem;
  uint64_t size, pos;
} st_source;

static bool src_read(st_source *src, void *buf, size_t n) {
  if (n > src->size - src->pos) return false;
  if (src->f) {
    if (fread(buf, 1, n, src->f) != n) return false;
  } else if (n) {
    memcpy(buf, src->mem + src->pos, n);
  }
  src->pos += n;
  return true;
}

void kiln_named_tensors_free(int n, char **names, kiln_tensor **tensors) {
  for (int i = 0; i < n; i++) {
    if (names) kiln_free(names[i]);
    if (tensors) kiln_tensor_release(tensors[i]);
  }
  kiln_free(names);
  kiln_free(tensors);
}

/* The tensors, in data order, read from src (positioned at the data). */
static kiln_status read_tensors(const st_ctx *c, st_source *src, const st_entry *es, size_t n, char ***names_out,
                                kiln_tensor ***tensors_out) {
  char **names = kiln_calloc(n ? n : 1, sizeof *names);
  kiln_tensor **tensors = kiln_calloc(n ? n : 1, sizeof *tensors);
  kiln_status st = KILN_OK;
  if (!names || !tensors)
    st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: %s: out of memory for %zu tensors", c->fn, c->path, n);
  for (size_t i = 0; i < n && st == KILN_OK; i++) {
    const st_entry *e = &es[i];
    names[i] = kiln_alloc(e->name_len + 1);
    if (!names[i]) {
      st = entry_fail(c, e, KILN_ERR_OUT_OF_MEMORY, "out of memory for the name");
      break;
    }
    memcpy(names[i], e->name, e->name_len);
    names[i][e->name_len] = '\0';
    kiln_tensor *t = tensor_new(e->dtype, e->ndim, e->shape);
    if (tensor_failed(t)) {
      st = entry_fail(c, e, t->status, "%s", t->error);
      kiln_tensor_release(t);
      break;
    }
    tensors[i] = t;
    size_t bytes = (size_t)(e->end - e->begin);
    if (bytes && !src_read(src, tensor_data(t), bytes)) {
      st = entry_fail(c, e, KILN_ERR_IO, "read error in the data%s",
                      src->f && ferror(src->f) ? "" : " (the file shrank)");
      break;
    }
    if (e->dtype == KILN_BOOL) {
      /* kiln's bool is 0 or 1; any other byte would make comparisons lie. */
      const unsigned char *b = tensor_data(t);
      for (size_t k = 0; k < bytes; k++)
        if (b[k] > 1) {
          st = entry_fail(c, e, KILN_ERR_CORRUPT, "bool element %zu is %u, not 0 or 1", k, b[k]);
          break;
        }
    }
  }
  if (st != KILN_OK) {
    kiln_named_tensors_free((int)n, names, tensors);
    return st;
  }
  *names_out = names;
  *tensors_out = tensors;
  return KILN_OK;
}

static uint64_t le64(const unsigned char *b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
  return v;
}

static kiln_status load(st_source *src, const char *fn, const char *path, int *n_out, char ***names_out,
                        kiln_tensor ***tensors_out) {
  uint64_t size = src->size;
  unsigned char pre[8];
  if (size < 8 || !src_read(src, pre, 8))
    return kiln_errorf(KILN_ERR_CORRUPT, "%s: %s: file of %llu bytes is too short for the 8-byte header length", fn,
                       path, (unsigned long long)size);
  uint64_t hlen = le64(pre);
  if (hlen > size - 8)
    return kiln_errorf(KILN_ERR_CORRUPT, "%s: %s: header length %llu runs past the end of the %llu-byte file", fn, path,
                       (unsigned long long)hlen, (unsigned long long)size);
  if (hlen > SAFETENSORS_MAX_HEADER)
    return kiln_errorf(KILN_ERR_UNSUPPORTED, "%s: %s: header length %llu is over the limit of %llu bytes", fn, path,
                       (unsigned long long)hlen, (unsigned long long)SAFETENSORS_MAX_HEADER);
  char *text = kiln_alloc((size_t)hlen);
  if (!text)
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: %s: out of memory for a %llu-byte header", fn, path,
                       (unsigned long long)hlen);
  if (!src_read(src, text, (size_t)hlen)) {
    kiln_free(text);
    return kiln_errorf(KILN_ERR_IO, "%s: %s: read error in the header", fn, path);
  }
  json_doc *doc = NULL;
  kiln_status st = json_parse(text, (size_t)hlen, NULL, &doc);
  kiln_free(text);
  if (st != KILN_OK)
    /* A header beyond the JSON reader's limits is no header a safetensors
     * writer makes: corrupt, whatever the reader calls it. */
    return kiln_errorf(st == KILN_ERR_OUT_OF_MEMORY ? st : KILN_ERR_CORRUPT, "%s: %s: header: %s", fn, path,
                       kiln_last_error());
  st_ctx c = {.fn = fn, .path = path, .data_size = size - 8 - hlen};
  st_entry *es;
  size_t n;
  st = check_header(&c, json_root(doc), &es, &n);
  if (st == KILN_OK) {
    st = read_tensors(&c, src, es, n, names_out, tensors_out);
    kiln_free(es);
  }
  json_free(doc);
  if (st == KILN_OK) *n_out = (int)n;
  return st;
}

static kiln_status load_outputs(const char *fn, int *n, char ***names, kiln_tensor ***tensors) {
  if (n) *n = 0;
  if (names) *names = NULL;
  if (tensors) *tensors = NULL;
  if (!n || !names || !tensors)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, !n ? "n" : !names ? "names" : "tensors");
  return KILN_OK;
}

kiln_status kiln_load_safetensors(const char *path, int *n, char ***names, kiln_tensor ***tensors) {
  static const char fn[] = "kiln_load_safetensors";
  kiln_status st = load_outputs(fn, n, names, tensors);
  if (st != KILN_OK) return st;
  if (!path) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: path is NULL", fn);
  FILE *f = fopen(path, "rb");
  struct stat sb;
  if (!f) {
    st = kiln_errorf(KILN_ERR_IO, "%s: %s: cannot open: %s", fn, path, strerror(errno));
  } else if (fstat(fileno(f), &sb) != 0) {
    st = kiln_errorf(KILN_ERR_IO, "%s: %s: cannot stat: %s", fn, path, strerror(errno));
  } else if (!S_ISREG(sb.st_mode)) {
    st = kiln_errorf(KILN_ERR_IO, "%s: %s: not a regular file", fn, path);
  } else {
    st_source src = {.f = f, .size = (uint64_t)sb.st_size};
    st = load(&src, fn, path, n, names, tensors);
  }
  if (f) fclose(f);
  return st;
}

kiln_status safetensors_load_memory(const void *data, size_t size, const char *name, int *n, char ***names,
                                    kiln_tensor ***tensors) {
  static const char fn[] = "kiln_load_safetensors";
  kiln_status st = load_outputs(fn, n, names, tensors);
  if (st != KILN_OK) return st;
  if (!data && size) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: data is NULL", fn);
  st_source src = {.mem = data, .size = size};
  return load(&src, fn, name ? name : "(memory)", n, names, tensors);
}

/* ------------------------------------------------------------ save */

typedef struct {
  char *buf;
  size_t cap, len;
} sink;

static void put(sink *s, const char *text, size_t n) {
  if (s->len < s->cap) {
    size_t room = s->cap - s->len;
    memcpy(s->buf + s->len, text, n < room ? n : room);
  }
  s->len += n;
}

static void putf(sink *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(sink *s, const char *fmt, ...) {
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  put(s, tmp, (size_t)k);
}

/* The header as serde_json writes it in the reference implementation
 * (compact, keys dtype, shape, data_offsets in that order), padded with
 * spaces to a multiple of 8 bytes so the data that follows the 8-byte
 * length starts aligned for every dtype. Measures when s->cap is 0. */
static void write_header(sink *s, int n, const char *const *names, kiln_tensor *const *tensors,
                         const uint64_t *nbytes) {
  uint64_t at = 0;
  put(s, "{", 1);
  for (int i = 0; i < n; i++) {
    const kiln_tensor *t = tensors[i];
    if (i) put(s, ",", 1);
    size_t room = s->len < s->cap ? s->cap - s->len : 0;
    s->len += json_escape(room ? s->buf + s->len : NULL, room, names[i], strlen(names[i]));
    putf(s, ":{\"dtype\":\"%s\",\"shape\":[", st_name_of(t->dtype));
    for (int d = 0; d < t->ndim; d++) putf(s, d ? ",%lld" : "%lld", (long long)t->shape[d]);
    putf(s, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at, (unsigned long long)(at + nbytes[i]));
    at += nbytes[i];
  }
  put(s, "}", 1);
  while (s->len % 8) put(s, " ", 1);
}

typedef struct {
  const char *name;
  int index;
} named;

static int named_order(const void *x, const void *y) {
  const named *a = x, *b = y;
  int c = strcmp(a->name, b->name);
  return c ? c : (a->index > b->index) - (a->index < b->index);
}

static kiln_status check_names(const char *path, int n, const char *const *names, kiln_tensor *const *tensors) {
  static const char fn[] = "kiln_save_safetensors";
  char nm[KILN_PRINTABLE_MAX];
  for (int i = 0; i < n; i++) {
    const char *s = names[i];
    if (!s) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s: name %d is NULL", fn, path, i);
    if (!*s) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s: name %d is empty", fn, path, i);
    if (!json_utf8_valid(s, strlen(s)))
      return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s: name %d is not valid UTF-8", fn, path, i);
    if (strcmp(s, "__metadata__") == 0)
      return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s: name %d is '__metadata__', which the format reserves", fn,
                         path, i);
    if (!tensors[i])
      return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s: tensor %d ('%s') is NULL", fn, path, i,
                         kiln_printable(nm, s, strlen(s)));
  }
  if (n < 2) return KILN_OK;
  named *sorted = kiln_alloc((size_t)n * sizeof *sorted);
  if (!sorted) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: %s: out of memory checking %d names", fn, path, n);
  for (int i = 0; i < n; i++) sorted[i] = (named){names[i], i};
  qsort(sorted, (size_t)n, sizeof *sorted, named_order);
  kiln_status st = KILN_OK;
  for (int i = 1; i < n && st == KILN_OK; i++)
    if (strcmp(sorted[i - 1].name, sorted[i].name) == 0)
      st = kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s: names %d and %d are both '%s'", fn, path,
                       sorted[i - 1].index, sorted[i].index, kiln_printable(nm, sorted[i].name, strlen(sorted[i].name)));
  kiln_free(sorted);
  return st;
}

static atomic_ulong temp_counter;

kiln_status kiln_save_safetensors(const char *path, int n, const char *const *names, kiln_tensor *const *tensors) {
  static const char fn[] = "kiln_save_safetensors";
  if (!path) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: path is NULL", fn);
  if (n < 0) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s: n is %d", fn, path, n);
  if (n > 0 && (!names || !tensors))
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: %s: %s is NULL", fn, path, !names ? "names" : "tensors");
  kiln_status st = check_names(path, n, names, tensors);
  if (st != KILN_OK) return st;

  /* Every tensor's value first: a failure anywhere leaves path alone. */
  char nm[KILN_PRINTABLE_MAX];
  uint64_t *nbytes = kiln_alloc((size_t)(n ? n : 1) * sizeof *nbytes);
  if (!nbytes) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: %s: out of memory", fn, path);
  size_t scratch_bytes = 0;
  for (int i = 0; i < n && st == KILN_OK; i++) {
    const kiln_tensor *t = tensors[i];
    const char *name = kiln_printable(nm, names[i], strlen(names[i]));
    kiln_status ts = kiln_wait_to_read(t);
    if (ts != KILN_OK) {
      st = kiln_errorf(ts, "%s: %s: tensor '%s' carries a failure: %s", fn, path, name, kiln_last_error());
    } else if (!st_name_of(t->dtype)) {
      st = kiln_errorf(KILN_ERR_DTYPE, "%s: %s: tensor '%s' has dtype %d, which safetensors cannot hold", fn, path,
                       name, (int)t->dtype);
    } else {
      nbytes[i] = (uint64_t)kiln_tensor_numel(t) * kiln_dtype_size(t->dtype);
      if (!kiln_tensor_is_contiguous(t) && nbytes[i] > scratch_bytes) scratch_bytes = (size_t)nbytes[i];
    }
  }
  sink measure = {0};
  if (st == KILN_OK) {
    write_header(&measure, n, names, tensors, nbytes);
    if (measure.len > SAFETENSORS_MAX_HEADER)
      st = kiln_errorf(KILN_ERR_UNSUPPORTED,
                       "%s: %s: the header would take %zu bytes, over the %llu that safetensors readers accept", fn,
                       path, measure.len, (unsigned long long)SAFETENSORS_MAX_HEADER);
  }
  /* Everything the write needs is allocated before the file is created, so
   * running out of memory cannot leave a temporary behind. */
  char *header = NULL, *scratch = NULL, *tmp = NULL;
  size_t plen = strlen(path) + 48;
  if (st == KILN_OK) {
    /* One byte more than the header: json_escape terminates what it
     * writes, and that NUL must land inside the buffer. */
    header = kiln_alloc(measure.len + 9);
    scratch = scratch_bytes ? kiln_alloc(scratch_bytes) : NULL;
    tmp = kiln_alloc(plen);
    if (!header || (scratch_bytes && !scratch) || !tmp)
      st = kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "%s: %s: out of memory for the header and a %zu-byte copy buffer", fn,
                       path, scratch_bytes);
  }
  if (st == KILN_OK) {
    for (int b = 0; b < 8; b++) header[b] = (char)((uint64_t)measure.len >> (8 * b) & 0xff);
    sink out = {header + 8, measure.len + 1, 0};
    write_header(&out, n, names, tensors, nbytes);
    /* A counter as well as the pid: two threads may save to one path. */
    snprintf(tmp, plen, "%s.tmp.%ld.%lu", path, (long)getpid(), (unsigned long)atomic_fetch_add(&temp_counter, 1));
    /* O_EXCL: never write through a file or link someone else put there. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
    if (!f) {
      st = kiln_errorf(KILN_ERR_IO, "%s: %s: cannot create %s: %s", fn, path, tmp, strerror(errno));
      if (fd >= 0) {
        close(fd);
        remove(tmp);
      }
    } else {
      bool ok = fwrite(header, 1, measure.len + 8, f) == measure.len + 8;
      int err = errno;
      for (int i = 0; i < n && ok; i++) {
        const kiln_tensor *t = tensors[i];
        if (!nbytes[i]) continue;
        const void *data = tensor_data(t);
        if (!kiln_tensor_is_contiguous(t)) {
          kiln_status cs = kiln_tensor_copy_to(t, scratch, scratch_bytes);
          if (cs != KILN_OK) {
            /* The tensors were waited for above, so only another thread
             * failing them since can bring us here. */
            st = kiln_errorf(cs, "%s: %s: tensor '%s': %s", fn, path, kiln_printable(nm, names[i], strlen(names[i])),
                             kiln_last_error());
            ok = false;
            break;
          }
          data = scratch;
        }
        ok = fwrite(data, 1, (size_t)nbytes[i], f) == nbytes[i];
        err = errno;
      }
      if (ok) {
        ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
        err = errno;
      }
      if (fclose(f) != 0 && ok) {
        ok = false;
        err = errno;
      }
      if (!ok) {
        if (st == KILN_OK)
          st = kiln_errorf(KILN_ERR_IO, "%s: %s: write to %s failed: %s", fn, path, tmp, strerror(err));
        remove(tmp);
      } else if (rename(tmp, path) != 0) {
        st = kiln_errorf(KILN_ERR_IO, "%s: %s: rename from %s failed: %s", fn, path, tmp, strerror(errno));
        remove(tmp);
      }
    }
  }
  kiln_free(tmp);
  kiln_free(scratch);
  kiln_free(header);
  kiln_free(nbytes);
  return st;
}
