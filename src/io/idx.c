/* IDX files (the format of MNIST and Fashion-MNIST): kiln_load_idx and the
 * Fashion-MNIST helper.
 *
 * Layout (LeCun's MNIST page): two zero bytes, a type byte (0x08 unsigned
 * byte, 0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E
 * float64), a byte holding the number of dimensions, one big-endian uint32
 * per dimension, then the elements, big-endian, in C order, and nothing
 * after them. Datasets ship these gzip-compressed; a file that starts with
 * the gzip magic is inflated through zlib as it is read (concatenated gzip
 * members are read as one stream, as gzip -d does).
 *
 * A file is data from outside, so nothing is trusted: the magic, the type,
 * the dimension count, the element count (overflow checked before any
 * allocation) and the data length, which must match exactly. For a plain
 * file the length is checked against the file size before allocating; a
 * gzip file's content length is unknown until it is inflated, so its
 * declared size is first checked against the most that deflate can expand
 * the compressed bytes to (1032:1), which keeps a 40-byte file from asking
 * for gigabytes. Every failure is a message naming the path and what is
 * wrong. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "io/idx.h"
#include "tensor/tensor.h"

#define IDX_CHUNK ((size_t)64 << 10)
/* Deflate emits at most 258 bytes per 2 bits: no stream expands by more. */
#define DEFLATE_MAX_RATIO 1032

/* ------------------------------------------------------------ byte source */

/* The bytes of one file, from a FILE or from memory, inflated when gzipped.
 * The parser above sees only src_read, which fills up to n bytes and stops
 * short only at the end of the content. */
typedef struct {
  const char *path;
  FILE *f;
  const unsigned char *mem;
  uint64_t size;    /* of the raw (possibly compressed) bytes */
  uint64_t raw_pos; /* raw bytes handed on so far */
  bool gz;
  bool z_ready; /* inflateInit2 succeeded: inflateEnd is owed */
  bool z_done;  /* the last gzip member ended and no input follows */
  z_stream z;
  unsigned char *inbuf; /* a chunk of a gzipped FILE */
} idx_src;

static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
  (void)opaque;
  size_t n;
  if (!kiln_mul_size(items, size, &n)) return Z_NULL;
  return kiln_alloc(n);
}

static void z_free(voidpf opaque, voidpf p) {
  (void)opaque;
  kiln_free(p);
}

static kiln_status src_open_gz(idx_src *s) {
  s->gz = true;
  memset(&s->z, 0, sizeof s->z);
  s->z.zalloc = z_alloc;
  s->z.zfree = z_free;
  if (s->f) {
    s->inbuf = kiln_alloc(IDX_CHUNK);
    if (!s->inbuf) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_load_idx: %s: out of memory", s->path);
  }
  /* 16 + MAX_WBITS: a gzip wrapper, whose CRC-32 and length zlib checks. */
  int r = inflateInit2(&s->z, 16 + MAX_WBITS);
  if (r != Z_OK)
    return kiln_errorf(r == Z_MEM_ERROR ? KILN_ERR_OUT_OF_MEMORY : KILN_ERR_INTERNAL,
                       "kiln_load_idx: %s: cannot start zlib: %s", s->path, s->z.msg ? s->z.msg : zError(r));
  s->z_ready = true;
  return KILN_OK;
}

static void src_close(idx_src *s) {
  if (s->z_ready) inflateEnd(&s->z);
  kiln_free(s->inbuf);
  s->z_ready = false;
  s->inbuf = NULL;
}

/* Gives zlib more compressed bytes when it has none; false on a read error. */
static bool refill(idx_src *s) {
  if (s->z.avail_in > 0 || s->raw_pos >= s->size) return true;
  if (s->mem) {
    uint64_t left = s->size - s->raw_pos;
    s->z.next_in = (Bytef *)(uintptr_t)(s->mem + s->raw_pos);
    s->z.avail_in = (uInt)(left < (1u << 30) ? left : (1u << 30));
  } else {
    size_t got = fread(s->inbuf, 1, IDX_CHUNK, s->f);
    if (got == 0 && ferror(s->f)) return false;
    /* A file that shrank under us ends early; the size check catches it. */
    if (got == 0) s->size = s->raw_pos;
    s->z.next_in = s->inbuf;
    s->z.avail_in = (uInt)got;
  }
  s->raw_pos += s->z.avail_in;
  return true;
}

static kiln_status gz_read(idx_src *s, unsigned char *buf, size_t n, size_t *got) {
  size_t done = 0;
  while (done < n && !s->z_done) {
    size_t want = n - done < (1u << 30) ? n - done : (1u << 30);
    s->z.next_out = buf + done;
    s->z.avail_out = (uInt)want;
    if (!refill(s)) return kiln_errorf(KILN_ERR_IO, "kiln_load_idx: %s: read error: %s", s->path, strerror(errno));
    bool no_more_input = s->z.avail_in == 0 && s->raw_pos >= s->size;
    int r = inflate(&s->z, Z_NO_FLUSH);
    done += want - s->z.avail_out;
    if (r == Z_STREAM_END) {
      /* Another member may follow; inflate checks that it is one. */
      if (!refill(s)) return kiln_errorf(KILN_ERR_IO, "kiln_load_idx: %s: read error: %s", s->path, strerror(errno));
      if (s->z.avail_in == 0) {
        s->z_done = true;
      } else if (inflateReset(&s->z) != Z_OK) {
        return kiln_errorf(KILN_ERR_INTERNAL, "kiln_load_idx: %s: zlib could not reset", s->path);
      }
    } else if (r == Z_BUF_ERROR) {
      /* No progress: with no input left, the stream stops before its end. */
      if (no_more_input)
        return kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_idx: %s: truncated gzip stream (it ends before its end marker)",
                           s->path);
    } else if (r == Z_MEM_ERROR) {
      return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_load_idx: %s: out of memory inflating", s->path);
    } else if (r != Z_OK) {
      return kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_idx: %s: corrupt gzip data: %s", s->path,
                         s->z.msg ? s->z.msg : zError(r));
    }
  }
  *got = done;
  return KILN_OK;
}

/* Up to n bytes of content into buf; *got < n only at its end. */
static kiln_status src_read(idx_src *s, void *buf, size_t n, size_t *got) {
  if (s->gz) return gz_read(s, buf, n, got);
  if (s->mem) {
    uint64_t left = s->size - s->raw_pos;
    size_t k = left < n ? (size_t)left : n;
    if (k) memcpy(buf, s->mem + s->raw_pos, k);
    s->raw_pos += k;
    *got = k;
    return KILN_OK;
  }
  *got = fread(buf, 1, n, s->f);
  s->raw_pos += *got;
  if (*got < n && ferror(s->f))
    return kiln_errorf(KILN_ERR_IO, "kiln_load_idx: %s: read error: %s", s->path, strerror(errno));
  return KILN_OK;
}

/* ------------------------------------------------------------ parse */

typedef struct {
  unsigned char code;
  const char *name;
  size_t size; /* in the file */
  kiln_dtype dtype;
} idx_type;

static const idx_type idx_types[] = {
    {0x08, "unsigned byte", 1, KILN_U8}, {0x09, "signed byte", 1, KILN_I32}, {0x0B, "int16", 2, KILN_I32},
    {0x0C, "int32", 4, KILN_I32},        {0x0D, "float32", 4, KILN_F32},     {0x0E, "float64", 8, KILN_F64},
};

static uint32_t be32(const unsigned char *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

static uint64_t be64(const unsigned char *b) { return (uint64_t)be32(b) << 32 | be32(b + 4); }

/* Turns n big-endian elements of type ty, packed at the start of data, into
 * kiln's native elements in place. Widening runs from the last element
 * down: element i's output [i*os, (i+1)*os) only covers input of elements
 * i and above, which have been read by then. */
static void convert(const idx_type *ty, void *data, int64_t n) {
  unsigned char *b = data;
  switch (ty->code) {
  case 0x08: break;
  case 0x09:
    for (int64_t i = n - 1; i >= 0; i--) {
      int32_t v = (int32_t)(int8_t)b[i];
      memcpy(b + 4 * i, &v, 4);
    }
    break;
  case 0x0B:
    for (int64_t i = n - 1; i >= 0; i--) {
      int32_t v = (int32_t)(int16_t)(uint16_t)((unsigned)b[2 * i] << 8 | b[2 * i + 1]);
      memcpy(b + 4 * i, &v, 4);
    }
    break;
  case 0x0C:
  case 0x0D:
    /* Same width: the bits are kept, so NaN payloads survive. */
    for (int64_t i = 0; i < n; i++) {
      uint32_t v = be32(b + 4 * i);
      memcpy(b + 4 * i, &v, 4);
    }
    break;
  case 0x0E:
    for (int64_t i = 0; i < n; i++) {
      uint64_t v = be64(b + 8 * i);
      memcpy(b + 8 * i, &v, 8);
    }
    break;
  default: break;
  }
}

static kiln_status load(idx_src *s, kiln_tensor **out) {
  const char *path = s->path;
  const char *whose = s->gz ? "the decompressed file" : "the file";
  unsigned char head[4 + 4 * 255];
  size_t got;
  kiln_status st = src_read(s, head, 4, &got);
  if (st != KILN_OK) return st;
  if (got < 4)
    return kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_idx: %s: truncated header: %s has %zu bytes, an IDX header needs 4",
                       path, whose, got);
  if (head[0] != 0 || head[1] != 0)
    return kiln_errorf(KILN_ERR_CORRUPT,
                       "kiln_load_idx: %s: bad magic %02x %02x %02x %02x (an IDX file starts with two zero bytes)", path,
                       head[0], head[1], head[2], head[3]);
  const idx_type *ty = NULL;
  for (size_t i = 0; i < sizeof idx_types / sizeof idx_types[0]; i++)
    if (idx_types[i].code == head[2]) ty = &idx_types[i];
  if (!ty)
    return kiln_errorf(KILN_ERR_CORRUPT,
                       "kiln_load_idx: %s: unknown data type 0x%02x (IDX defines 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E)",
                       path, head[2]);
  int ndim = head[3];
  if (ndim == 0)
    return kiln_errorf(KILN_ERR_CORRUPT, "kiln_load_idx: %s: 0 dimensions (an IDX file has at least 1)", path);
  if (ndim > KILN_MAX_DIMS)
    return kiln_errorf(KILN_ERR_UNSUPPORTED, "kiln_load_idx: %s: %d dimensions (kiln supports at most %d)", path, ndim,
                       KILN_MAX_DIMS);
  size_t dim_bytes = 4 * (size_t)ndim;
  st = src_read(s, head + 4, dim_bytes, &got);
  if (st != KILN_OK) return st;
  if (got < dim_bytes)
    return kiln_errorf(KILN_ERR_CORRUPT,
                       "kiln_load_idx: %s: truncated header: %d dimensions need %zu bytes of sizes, %s has %zu", path,
                       ndim, dim_bytes, whose, got);
  int64_t shape[KILN_MAX_DIMS];
  for (int i = 0; i < ndim; i++) shape[i] = be32(head + 4 + 4 * i);
  char sbuf[KILN_SHAPE_STR_MAX];
  kiln_shape_str(sbuf, sizeof sbuf, ndim, shape);
  /* Elements, bytes in the file and bytes in memory (wider for 0x09 and
   * 0x0B) must all fit. */
  int64_t numel = 1, file_bytes, mem_bytes;
  for (int i = 0; i < ndim; i++)
    if (!kiln_mul_i64(numel, shape[i], &numel))
      return kiln_errorf(KILN_ERR_OVERFLOW, "kiln_load_idx: %s: the element count of the dimensions %s overflows", path,
                         sbuf);
  if (!kiln_mul_i64(numel, (int64_t)ty->size, &file_bytes) ||
      !kiln_mul_i64(numel, (int64_t)kiln_dtype_size(ty->dtype), &mem_bytes))
    return kiln_errorf(KILN_ERR_OVERFLOW, "kiln_load_idx: %s: the byte size of the dimensions %s overflows", path, sbuf);

  uint64_t header_bytes = 4 + dim_bytes;
  if (!s->gz) {
    uint64_t have = s->size > header_bytes ? s->size - header_bytes : 0;
    if (have < (uint64_t)file_bytes)
      return kiln_errorf(KILN_ERR_CORRUPT,
                         "kiln_load_idx: %s: truncated data: dimensions %s of %s need %lld bytes, the file has %llu", path,
                         sbuf, ty->name, (long long)file_bytes, (unsigned long long)have);
    if (have > (uint64_t)file_bytes)
      return kiln_errorf(KILN_ERR_CORRUPT,
                         "kiln_load_idx: %s: trailing data: %llu bytes after the %lld that dimensions %s of %s need",
                         path, (unsigned long long)(have - (uint64_t)file_bytes), (long long)file_bytes, sbuf, ty->name);
  } else {
    uint64_t most = s->size > UINT64_MAX / DEFLATE_MAX_RATIO ? UINT64_MAX : s->size * DEFLATE_MAX_RATIO;
    if ((uint64_t)file_bytes + header_bytes > most)
      return kiln_errorf(KILN_ERR_CORRUPT,
                         "kiln_load_idx: %s: truncated data: dimensions %s of %s need %lld bytes, more than a %llu-byte "
                         "gzip file can hold",
                         path, sbuf, ty->name, (long long)file_bytes, (unsigned long long)s->size);
  }

  kiln_tensor *t = tensor_new(ty->dtype, ndim, shape);
  if (tensor_failed(t)) {
    st = kiln_errorf(t->status, "kiln_load_idx: %s: %s", path, t->error);
    kiln_tensor_release(t);
    return st;
  }
  if (file_bytes > 0) {
    st = src_read(s, tensor_data(t), (size_t)file_bytes, &got);
    if (st == KILN_OK && got < (size_t)file_bytes)
      st = kiln_errorf(KILN_ERR_CORRUPT,
                       "kiln_load_idx: %s: truncated data: dimensions %s of %s need %lld bytes, %s has %zu", path, sbuf,
                       ty->name, (long long)file_bytes, whose, got);
    if (st != KILN_OK) {
      kiln_tensor_release(t);
      return st;
    }
  }
  if (s->gz) {
    /* The content must end here; count what follows to say how much. */
    unsigned char scratch[4096];
    uint64_t extra = 0;
    do {
      st = src_read(s, scratch, sizeof scratch, &got);
      extra += got;
    } while (st == KILN_OK && got == sizeof scratch);
    if (st == KILN_OK && extra > 0)
      st = kiln_errorf(KILN_ERR_CORRUPT,
                       "kiln_load_idx: %s: trailing data: %llu bytes after the %lld that dimensions %s of %s need", path,
                       (unsigned long long)extra, (long long)file_bytes, sbuf, ty->name);
    if (st != KILN_OK) {
      kiln_tensor_release(t);
      return st;
    }
  }
  convert(ty, tensor_data(t), numel);
  *out = t;
  return KILN_OK;
}

static bool is_gzip(const unsigned char *b, uint64_t n) { return n >= 2 && b[0] == 0x1f && b[1] == 0x8b; }

kiln_status idx_load_memory(const void *data, size_t size, const char *name, kiln_tensor **out) {
  *out = NULL;
  if (!data && size) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_load_idx: %s: data is NULL", name);
  static const unsigned char empty[1] = {0};
  idx_src s = {.path = name, .mem = data ? data : empty, .size = size};
  kiln_status st = is_gzip(s.mem, size) ? src_open_gz(&s) : KILN_OK;
  if (st == KILN_OK) st = load(&s, out);
  src_close(&s);
  return st;
}

/* A new tensor (not autoreleased) read from path. */
static kiln_status load_path(const char *path, kiln_tensor **out) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return kiln_errorf(KILN_ERR_IO, "kiln_load_idx: %s: cannot open: %s", path, strerror(errno));
  struct stat sb;
  kiln_status st;
  unsigned char magic[2];
  if (fstat(fileno(f), &sb) != 0) {
    st = kiln_errorf(KILN_ERR_IO, "kiln_load_idx: %s: cannot stat: %s", path, strerror(errno));
  } else if (!S_ISREG(sb.st_mode)) {
    st = kiln_errorf(KILN_ERR_IO, "kiln_load_idx: %s: not a regular file", path);
  } else {
    size_t n = fread(magic, 1, 2, f);
    if (n < 2 && ferror(f)) {
      st = kiln_errorf(KILN_ERR_IO, "kiln_load_idx: %s: read error: %s", path, strerror(errno));
    } else if (fseek(f, 0, SEEK_SET) != 0) {
      st = kiln_errorf(KILN_ERR_IO, "kiln_load_idx: %s: cannot seek: %s", path, strerror(errno));
    } else {
      idx_src s = {.path = path, .f = f, .size = (uint64_t)sb.st_size};
      st = is_gzip(magic, n) ? src_open_gz(&s) : KILN_OK;
      if (st == KILN_OK) st = load(&s, out);
      src_close(&s);
    }
  }
  fclose(f);
  return st;
}

kiln_tensor *kiln_load_idx(const char *path) {
  kiln_tensor *t = NULL;
  kiln_status st = path ? load_path(path, &t) : kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_load_idx: path is NULL");
  if (st != KILN_OK) return tensor_autorelease(tensor_new_failed(st, kiln_last_error()));
  return tensor_autorelease(t);
}

/* ------------------------------------------------------------ Fashion-MNIST */

#define FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* dir/name.gz, or dir/name when only that exists; a missing file names the
 * .gz path and the Debian package. */
static kiln_status load_member(const char *dir, const char *name, kiln_tensor **out) {
  char gz[4096], plain[4096];
  int n1 = snprintf(gz, sizeof gz, "%s/%s.gz", dir, name);
  int n2 = snprintf(plain, sizeof plain, "%s/%s", dir, name);
  if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof gz || (size_t)n2 >= sizeof plain)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_fashion_mnist_load: directory name too long: %.64s...", dir);
  struct stat sb;
  const char *path = stat(gz, &sb) == 0 ? gz : stat(plain, &sb) == 0 ? plain : NULL;
  if (!path)
    return kiln_errorf(KILN_ERR_IO,
                       "kiln_fashion_mnist_load: %s: no such file (install Debian's dataset-fashion-mnist package, "
                       "or pass the directory that holds the Fashion-MNIST files)",
                       gz);
  return load_path(path, out);
}

kiln_status kiln_fashion_mnist_load(const char *dir, bool train, kiln_tensor **images, kiln_tensor **labels) {
  if (!images || !labels)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_fashion_mnist_load: %s is NULL", images ? "labels" : "images");
  *images = *labels = NULL;
  if (!dir) dir = FASHION_MNIST_DIR;
  const char *split = train ? "train" : "t10k";
  char iname[64], lname[64];
  snprintf(iname, sizeof iname, "%s-images-idx3-ubyte", split);
  snprintf(lname, sizeof lname, "%s-labels-idx1-ubyte", split);
  kiln_tensor *im = NULL, *lb = NULL;
  kiln_status st = load_member(dir, iname, &im);
  if (st == KILN_OK) st = load_member(dir, lname, &lb);
  if (st == KILN_OK) {
    char ibuf[KILN_SHAPE_STR_MAX], lbuf[KILN_SHAPE_STR_MAX];
    kiln_shape_str(ibuf, sizeof ibuf, im->ndim, im->shape);
    kiln_shape_str(lbuf, sizeof lbuf, lb->ndim, lb->shape);
    if (im->dtype != KILN_U8 || im->ndim != 3 || im->shape[1] != 28 || im->shape[2] != 28)
      st = kiln_errorf(KILN_ERR_CORRUPT,
                       "kiln_fashion_mnist_load: %s/%s: images are %s %s, not uint8 [N, 28, 28]", dir, iname,
                       kiln_dtype_name(im->dtype), ibuf);
    else if (lb->dtype != KILN_U8 || lb->ndim != 1 || lb->shape[0] != im->shape[0])
      st = kiln_errorf(KILN_ERR_CORRUPT, "kiln_fashion_mnist_load: %s/%s: labels are %s %s, the images %s", dir, lname,
                       kiln_dtype_name(lb->dtype), lbuf, ibuf);
  }
  if (st == KILN_OK) {
    const unsigned char *v = tensor_data(lb);
    for (int64_t i = 0; i < lb->shape[0]; i++)
      if (v[i] > 9) {
        st = kiln_errorf(KILN_ERR_CORRUPT, "kiln_fashion_mnist_load: %s/%s: label %lld is %u, not a class 0 to 9", dir,
                         lname, (long long)i, v[i]);
        break;
      }
  }
  if (st != KILN_OK) {
    kiln_tensor_release(im);
    kiln_tensor_release(lb);
    return st;
  }
  *images = tensor_autorelease(im);
  *labels = tensor_autorelease(lb);
  return KILN_OK;
}
