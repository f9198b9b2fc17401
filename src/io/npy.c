/* NumPy .npy files: kiln_load_npy and kiln_save_npy.
 *
 * Layout (numpy.lib.format): the magic "\x93NUMPY", a major and a minor
 * version byte, the header length (little-endian uint16 in version 1, uint32
 * in versions 2 and 3), then the header, a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces to end in '\n', and then the raw elements in C order.
 *
 * A file is data from outside, so the loader trusts nothing: the magic, the
 * version, the header length against the file size, the dict's syntax and
 * exactly its three keys, the dtype, the shape (overflow checked before any
 * allocation) and the data length, which must match exactly. Every failure
 * is a failed tensor whose message names the path and what is wrong. The
 * writer goes through a temporary file, fsync and rename, so a reader never
 * sees half a file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/npy.h"
#include "tensor/tensor.h"

static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

/* ------------------------------------------------------------ header parsing */

typedef struct {
  const char *p, *end;
  const char *path;
} hdr_reader;

typedef struct {
  bool have_descr, have_fortran, have_shape;
  kiln_dtype dtype;
  bool fortran;
  int ndim;
  int64_t shape[KILN_MAX_DIMS];
} npy_header;

static void skip_ws(hdr_reader *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static kiln_status corrupt(const hdr_reader *r, const char *what) {
  return kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_npy: %s: malformed header: %s", r->path, what);
}

static bool accept(hdr_reader *r, char c) {
  skip_ws(r);
  if (r->p < r->end && *r->p == c) {
    r->p++;
    return true;
  }
  return false;
}

/* A Python string literal without escapes, in ' or " quotes, into buf. */
static kiln_status parse_string(hdr_reader *r, char *buf, size_t cap, const char *what) {
  skip_ws(r);
  if (r->p >= r->end || (*r->p != '\'' && *r->p != '"')) return corrupt(r, what);
  char q = *r->p++;
  size_t n = 0;
  while (r->p < r->end && *r->p != q) {
    if (*r->p == '\\' || n + 1 >= cap) return corrupt(r, what);
    buf[n++] = *r->p++;
  }
  if (r->p >= r->end) return corrupt(r, "unterminated string");
  r->p++;
  buf[n] = '\0';
  return KILN_OK;
}

static bool starts(const hdr_reader *r, const char *word) {
  size_t n = strlen(word);
  return (size_t)(r->end - r->p) >= n && memcmp(r->p, word, n) == 0;
}

static kiln_status parse_descr(hdr_reader *r, npy_header *h) {
  char d[32];
  kiln_status st = parse_string(r, d, sizeof d, "'descr' is not a string");
  if (st != KILN_OK) return st;
  static const struct {
    const char *descr;
    kiln_dtype dt;
  } known[] = {{"<f4", KILN_F32}, {"<f8", KILN_F64}, {"<i4", KILN_I32}, {"<i8", KILN_I64},
               {"|u1", KILN_U8},  {"<u1", KILN_U8},  {"|b1", KILN_BOOL}};
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (strcmp(d, known[i].descr) == 0) {
      h->dtype = known[i].dt;
      return KILN_OK;
    }
  return kiln_errorf(KILN_ERR_UNSUPPORTED,
                     "kiln_load_npy: %s: dtype '%s' is not supported (kiln reads '<f4', '<f8', '<i4', '<i8', '|u1', "
                     "'|b1'%s)",
                     r->path, d, d[0] == '>' ? "; this one is big-endian" : "");
}

static kiln_status parse_bool(hdr_reader *r, npy_header *h) {
  skip_ws(r);
  if (starts(r, "True")) {
    r->p += 4;
    h->fortran = true;
  } else if (starts(r, "False")) {
    r->p += 5;
    h->fortran = false;
  } else {
    return corrupt(r, "'fortran_order' is not True or False");
  }
  return KILN_OK;
}

/* A tuple of non-negative integers: (), (n,), (a, b, ...) with an optional
 * trailing comma. */
static kiln_status parse_shape(hdr_reader *r, npy_header *h) {
  if (!accept(r, '(')) return corrupt(r, "'shape' is not a tuple");
  h->ndim = 0;
  for (;;) {
    if (accept(r, ')')) break;
    skip_ws(r);
    if (r->p < r->end && *r->p == '-')
      return kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_npy: %s: negative dimension in shape", r->path);
    if (r->p >= r->end || *r->p < '0' || *r->p > '9') return corrupt(r, "'shape' holds something not an integer");
    int64_t v = 0;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
      if (!kiln_mul_i64(v, 10, &v) || !kiln_add_i64(v, *r->p - '0', &v))
        return kiln_errorf(KILN_ERR_OVERFLOW, "kiln_load_npy: %s: a dimension of the shape overflows int64", r->path);
      r->p++;
    }
    /* Python 2 wrote long integers as 3L. */
    if (r->p < r->end && *r->p == 'L') r->p++;
    if (h->ndim == KILN_MAX_DIMS)
      return kiln_errorf(KILN_ERR_UNSUPPORTED, "kiln_load_npy: %s: shape has more than %d dims", r->path,
                         KILN_MAX_DIMS);
    h->shape[h->ndim++] = v;
    if (accept(r, ',')) continue;
    /* (n) without the comma is an int in parentheses, not a tuple. */
    if (h->ndim == 1 && accept(r, ')')) return corrupt(r, "'shape' (n) is not a tuple (a 1-tuple needs a comma)");
    if (accept(r, ')')) break;
    return corrupt(r, "'shape' tuple is not closed");
  }
  return KILN_OK;
}

static kiln_status parse_header(hdr_reader *r, npy_header *h) {
  memset(h, 0, sizeof *h);
  if (!accept(r, '{')) return corrupt(r, "it does not start with '{'");
  for (;;) {
    if (accept(r, '}')) break;
    char key[32];
    kiln_status st = parse_string(r, key, sizeof key, "a key is not a string");
    if (st != KILN_OK) return st;
    if (!accept(r, ':')) return corrupt(r, "':' missing after a key");
    bool *seen;
    if (strcmp(key, "descr") == 0) {
      seen = &h->have_descr;
      if (!*seen) st = parse_descr(r, h);
    } else if (strcmp(key, "fortran_order") == 0) {
      seen = &h->have_fortran;
      if (!*seen) st = parse_bool(r, h);
    } else if (strcmp(key, "shape") == 0) {
      seen = &h->have_shape;
      if (!*seen) st = parse_shape(r, h);
    } else {
      return kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_npy: %s: malformed header: unknown key '%s'", r->path, key);
    }
    if (*seen)
      return kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_npy: %s: malformed header: key '%s' appears twice", r->path, key);
    if (st != KILN_OK) return st;
    *seen = true;
    if (accept(r, ',')) continue;
    if (accept(r, '}')) break;
    return corrupt(r, "',' or '}' missing after a value");
  }
  skip_ws(r);
  if (r->p != r->end) return corrupt(r, "text after the closing '}'");
  if (!h->have_descr || !h->have_fortran || !h->have_shape)
    return kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_npy: %s: malformed header: missing key '%s'", r->path,
                       !h->have_descr ? "descr" : !h->have_fortran ? "fortran_order" : "shape");
  if (h->fortran)
    return kiln_errorf(KILN_ERR_UNSUPPORTED,
                       "kiln_load_npy: %s: fortran_order True is not supported (save a C-order array)", r->path);
  return KILN_OK;
}

/* ------------------------------------------------------------ load */

static uint32_t le32(const unsigned char *b) {
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* Where the bytes come from: a file (kiln_load_npy) or memory (the fuzzer,
 * through npy_load_memory). The parser sees only the size and reads. */
typedef struct {
  FILE *f;
  const unsigned char *mem;
  uint64_t size, pos;
} npy_source;

static bool src_read(npy_source *src, void *buf, size_t n) {
  if (src->f) return fread(buf, 1, n, src->f) == n;
  if (n > src->size - src->pos) return false;
  if (n) memcpy(buf, src->mem + src->pos, n);
  src->pos += n;
  return true;
}

static kiln_status load(npy_source *src, const char *path, kiln_tensor **out) {
  uint64_t size = src->size;
  unsigned char pre[12];
  if (size < 10 || !src_read(src, pre, 10))
    return kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_npy: %s: file of %llu bytes is too short for a .npy header", path,
                       (unsigned long long)size);
  if (memcmp(pre, npy_magic, sizeof npy_magic) != 0)
    return kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_npy: %s: bad magic (not a .npy file)", path);
  unsigned major = pre[6], minor = pre[7];
  if (major < 1 || major > 3 || minor != 0)
    return kiln_errorf(KILN_ERR_UNSUPPORTED, "kiln_load_npy: %s: unsupported version %u.%u (kiln reads 1.0 to 3.0)",
                       path, major, minor);
  uint64_t prefix, hlen;
  if (major == 1) {
    prefix = 10;
    hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
  } else {
    if (size < 12 || !src_read(src, pre + 10, 2))
      return kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_npy: %s: file of %llu bytes is too short for a .npy header",
                         path, (unsigned long long)size);
    prefix = 12;
    hlen = le32(pre + 8);
  }
  if (hlen > size - prefix)
    return kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_npy: %s: header length %llu runs past the end of the %llu-byte file",
                       path, (unsigned long long)hlen, (unsigned long long)size);
  char *text = kiln_alloc((size_t)hlen + 1);
  if (!text)
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_load_npy: %s: out of memory for a %llu-byte header", path,
                       (unsigned long long)hlen);
  if (!src_read(src, text, (size_t)hlen)) {
    kiln_free(text);
    return kiln_errorf(KILN_ERR_IO, "kiln_load_npy: %s: read error in the header", path);
  }
  text[hlen] = '\0';
  npy_header h;
  hdr_reader r = {text, text + hlen, path};
  kiln_status st = KILN_OK;
  if (hlen == 0 || text[hlen - 1] != '\n')
    st = kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_npy: %s: malformed header: it does not end in a newline", path);
  else if (memchr(text, '\0', (size_t)hlen))
    st = kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_npy: %s: malformed header: it contains a NUL byte", path);
  else
    st = parse_header(&r, &h);
  kiln_free(text);
  if (st != KILN_OK) return st;

  int64_t numel = 1;
  size_t es = kiln_dtype_size(h.dtype);
  for (int i = 0; i < h.ndim; i++)
    if (!kiln_mul_i64(numel, h.shape[i], &numel))
      return kiln_errorf(KILN_ERR_OVERFLOW, "kiln_load_npy: %s: the element count of the shape overflows", path);
  int64_t nbytes;
  if (!kiln_mul_i64(numel, (int64_t)es, &nbytes))
    return kiln_errorf(KILN_ERR_OVERFLOW, "kiln_load_npy: %s: the byte size of the shape overflows", path);
  uint64_t have = size - prefix - hlen;
  if (have < (uint64_t)nbytes)
    return kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_npy: %s: data too short: the shape needs %lld bytes, the file has %llu",
                       path, (long long)nbytes, (unsigned long long)have);
  if (have > (uint64_t)nbytes)
    return kiln_errorf(KILN_ERR_CORRUPT,
                       "kiln_load_npy: %s: data too long: the shape needs %lld bytes, the file has %llu (%llu extra)",
                       path, (long long)nbytes, (unsigned long long)have, (unsigned long long)(have - (uint64_t)nbytes));

  kiln_tensor *t = tensor_new(h.dtype, h.ndim, h.shape);
  if (tensor_failed(t)) {
    st = kiln_errorf(t->status, "kiln_load_npy: %s: %s", path, t->error);
    kiln_tensor_release(t);
    return st;
  }
  if (nbytes > 0 && !src_read(src, tensor_data(t), (size_t)nbytes)) {
    kiln_tensor_release(t);
    return kiln_errorf(KILN_ERR_IO, "kiln_load_npy: %s: read error in the data", path);
  }
  if (h.dtype == KILN_BOOL) {
    /* kiln's bool is 0 or 1; any other byte would make comparisons lie. */
    const unsigned char *b = tensor_data(t);
    for (int64_t i = 0; i < numel; i++)
      if (b[i] > 1) {
        st = kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_npy: %s: bool element %lld is %u, not 0 or 1", path,
                         (long long)i, b[i]);
        kiln_tensor_release(t);
        return st;
      }
  }
  *out = t;
  return KILN_OK;
}

kiln_tensor *kiln_load_npy(const char *path) {
  kiln_status st;
  kiln_tensor *t = NULL;
  if (!path) {
    st = kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_load_npy: path is NULL");
  } else {
    FILE *f = fopen(path, "rb");
    struct stat sb;
    if (!f) {
      st = kiln_errorf(KILN_ERR_IO, "kiln_load_npy: %s: cannot open: %s", path, strerror(errno));
    } else if (fstat(fileno(f), &sb) != 0) {
      st = kiln_errorf(KILN_ERR_IO, "kiln_load_npy: %s: cannot stat: %s", path, strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
      st = kiln_errorf(KILN_ERR_IO, "kiln_load_npy: %s: not a regular file", path);
    } else {
      npy_source src = {.f = f, .size = (uint64_t)sb.st_size};
      st = load(&src, path, &t);
    }
    if (f) fclose(f);
  }
  if (st != KILN_OK) return tensor_autorelease(tensor_new_failed(st, kiln_last_error()));
  return tensor_autorelease(t);
}

kiln_status npy_load_memory(const void *data, size_t size, const char *name, kiln_tensor **out) {
  npy_source src = {.mem = data, .size = size};
  *out = NULL;
  return load(&src, name, out);
}

/* ------------------------------------------------------------ save */

static const char *descr_of(kiln_dtype dt) {
  switch (dt) {
  case KILN_F32: return "<f4";
  case KILN_F64: return "<f8";
  case KILN_I32: return "<i4";
  case KILN_I64: return "<i8";
  case KILN_U8: return "|u1";
  case KILN_BOOL: return "|b1";
  default: return NULL;
  }
}

/* The version 1.0 preamble and header, padded with spaces so the data starts
 * at a multiple of 64 bytes, as numpy writes it. Returns the total length. */
static size_t make_header(char *buf, size_t cap, const kiln_tensor *t) {
  char dict[512];
  size_t n = (size_t)snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                              descr_of(t->dtype));
  for (int i = 0; i < t->ndim; i++)
    n += (size_t)snprintf(dict + n, sizeof dict - n, "%s%lld%s", i ? " " : "", (long long)t->shape[i],
                          i + 1 < t->ndim || t->ndim == 1 ? "," : "");
  n += (size_t)snprintf(dict + n, sizeof dict - n, "), }");
  size_t total = 10 + n + 1;
  total = (total + 63) / 64 * 64;
  size_t hlen = total - 10;
  if (total > cap) return 0;
  memcpy(buf, npy_magic, sizeof npy_magic);
  buf[6] = 1;
  buf[7] = 0;
  buf[8] = (char)(hlen & 0xff);
  buf[9] = (char)(hlen >> 8);
  memcpy(buf + 10, dict, n);
  memset(buf + 10 + n, ' ', hlen - n - 1);
  buf[total - 1] = '\n';
  return total;
}

kiln_status kiln_save_npy(const kiln_tensor *t, const char *path) {
  if (!t || !path) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_save_npy: %s is NULL", t ? "path" : "tensor");
  if (tensor_failed(t))
    return kiln_errorf(t->status, "kiln_save_npy: %s: the tensor carries a failure: %s", path, t->error);
  if (!descr_of(t->dtype))
    return kiln_errorf(KILN_ERR_DTYPE, "kiln_save_npy: %s: dtype %d has no .npy form", path, (int)t->dtype);
  char header[640];
  size_t hbytes = make_header(header, sizeof header, t);
  if (!hbytes) return kiln_errorf(KILN_ERR_INTERNAL, "kiln_save_npy: %s: header too long", path);

  /* The elements in logical order through kiln_tensor_copy_to, which also
   * waits for pending writes once ops run asynchronously; a view costs a
   * copy, as it must. */
  int64_t numel = kiln_tensor_numel(t);
  size_t nbytes = (size_t)numel * kiln_dtype_size(t->dtype);
  void *data = kiln_alloc(nbytes);
  if (!data)
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_save_npy: %s: out of memory for %zu bytes", path, nbytes);
  kiln_status st = kiln_tensor_copy_to(t, data, nbytes);
  if (st != KILN_OK) {
    /* The message is copied out first: kiln_errorf writes the buffer
     * kiln_last_error points at. */
    char why[KILN_ERROR_MAX];
    snprintf(why, sizeof why, "%s", kiln_last_error());
    kiln_free(data);
    return kiln_errorf(st, "kiln_save_npy: %s: %s", path, why);
  }

  size_t plen = strlen(path) + 32;
  char *tmp = kiln_alloc(plen);
  if (!tmp) {
    kiln_free(data);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_save_npy: %s: out of memory", path);
  }
  snprintf(tmp, plen, "%s.tmp.%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    st = kiln_errorf(KILN_ERR_IO, "kiln_save_npy: %s: cannot create %s: %s", path, tmp, strerror(errno));
  } else {
    bool ok = fwrite(header, 1, hbytes, f) == hbytes && (nbytes == 0 || fwrite(data, 1, nbytes, f) == nbytes) &&
              fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = errno;
    if (fclose(f) != 0 && ok) {
      ok = false;
      err = errno;
    }
    if (!ok) {
      st = kiln_errorf(KILN_ERR_IO, "kiln_save_npy: %s: write to %s failed: %s", path, tmp, strerror(err));
      remove(tmp);
    } else if (rename(tmp, path) != 0) {
      st = kiln_errorf(KILN_ERR_IO, "kiln_save_npy: %s: rename from %s failed: %s", path, tmp, strerror(errno));
      remove(tmp);
    }
  }
  kiln_free(tmp);
  kiln_free(data);
  return st;
}
