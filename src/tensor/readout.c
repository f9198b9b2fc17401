/* Reading values out of tensors: copy to a caller's buffer, item, and the
 * numpy-like printer. These are the implicit barriers of 2/8: each will wait
 * for the tensor's pending writes before touching its storage. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels/elementwise.h"
#include "tensor/tensor.h"

static kiln_status readable(const kiln_tensor *t, const char *fn) {
  if (!t) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: tensor is NULL", fn);
  if (tensor_failed(t)) return kiln_errorf(t->status, "%s", t->error);
  return KILN_OK;
}

kiln_status kiln_tensor_copy_to(const kiln_tensor *t, void *buf, size_t buf_bytes) {
  kiln_status st = readable(t, "kiln_tensor_copy_to");
  if (st != KILN_OK) return st;
  size_t need = (size_t)kiln_tensor_numel(t) * kiln_dtype_size(t->dtype);
  if (buf_bytes < need)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_tensor_copy_to: buffer of %zu bytes, %zu needed", buf_bytes,
                       need);
  if (need == 0) return KILN_OK;
  if (!buf) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_tensor_copy_to: buffer is NULL");
  kk_view src = tensor_view_of(t), dst = src;
  dst.data = buf;
  contiguous_strides(dst.ndim, dst.shape, dst.strides);
  kk_copy(&src, &dst);
  return KILN_OK;
}

kiln_status kiln_tensor_item(const kiln_tensor *t, double *out) {
  kiln_status st = readable(t, "kiln_tensor_item");
  if (st != KILN_OK) return st;
  if (!out) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_tensor_item: out is NULL");
  if (kiln_tensor_numel(t) != 1) {
    char buf[KILN_SHAPE_STR_MAX];
    return kiln_errorf(KILN_ERR_SHAPE, "kiln_tensor_item: tensor of shape %s has %lld elements, not 1",
                       kiln_shape_str(buf, sizeof buf, t->ndim, t->shape), (long long)kiln_tensor_numel(t));
  }
  *out = kk_get_f64(t->dtype, tensor_data(t));
  return KILN_OK;
}

/* ------------------------------------------------------------------ printer */

/* numpy's defaults: summarise past 1000 elements, 3 at each edge. */
enum { SUMMARY_THRESHOLD = 1000, EDGE_ITEMS = 3 };

typedef struct {
  char *buf; /* caller's buffer; writes past cap are counted, not stored */
  size_t cap, len;
} sink;

static void put(sink *s, const char *text, size_t n) {
  if (s->len < s->cap) {
    size_t room = s->cap - s->len;
    memcpy(s->buf + s->len, text, n < room ? n : room);
  }
  s->len += n;
}
static void puts_(sink *s, const char *text) { put(s, text, strlen(text)); }

typedef struct {
  const kiln_tensor *t;
  kk_view v;
  bool summarise;
  int width;
  bool is_float;
} printer;

static void format_element(const printer *p, const char *ptr, char *out, size_t cap) {
  kiln_dtype dt = p->t->dtype;
  if (dt == KILN_BOOL) {
    snprintf(out, cap, "%s", *ptr ? "True" : "False");
  } else if (p->is_float) {
    double x = kk_get_f64(dt, ptr);
    if (isnan(x)) snprintf(out, cap, "nan");
    else if (isinf(x)) snprintf(out, cap, x > 0 ? "inf" : "-inf");
    else {
      snprintf(out, cap, dt == KILN_F32 ? "%.7g" : "%.15g", x);
      if (!strpbrk(out, ".e")) strncat(out, ".", cap - strlen(out) - 1); /* 1 -> "1." as numpy */
    }
  } else {
    snprintf(out, cap, "%lld", (long long)kk_get_i64(dt, ptr));
  }
}

static bool skipped(const printer *p, int d, int64_t i) {
  return p->summarise && p->v.shape[d] > 2 * EDGE_ITEMS && i >= EDGE_ITEMS && i < p->v.shape[d] - EDGE_ITEMS;
}

/* Visits displayed elements (for the column width) or prints them. */
static void walk(const printer *p, sink *s, int d, const char *ptr, int indent, int *width) {
  int nd = p->v.ndim;
  int64_t es = (int64_t)kiln_dtype_size(p->t->dtype);
  if (d == nd) {
    char text[64];
    format_element(p, ptr, text, sizeof text);
    int len = (int)strlen(text);
    if (width) {
      if (len > *width) *width = len;
    } else {
      for (int k = len; k < p->width; k++) puts_(s, " ");
      puts_(s, text);
    }
    return;
  }
  if (!width) puts_(s, "[");
  for (int64_t i = 0; i < p->v.shape[d]; i++) {
    if (skipped(p, d, i)) {
      if (!width) {
        puts_(s, d == nd - 1 ? "..., " : "...,");
        if (d < nd - 1) {
          for (int k = 0; k < nd - 1 - d; k++) puts_(s, "\n");
          for (int k = 0; k < indent + d + 1; k++) puts_(s, " ");
        }
      }
      i = p->v.shape[d] - EDGE_ITEMS - 1;
      continue;
    }
    walk(p, s, d + 1, ptr + i * p->v.strides[d] * es, indent, width);
    if (!width && i + 1 < p->v.shape[d]) {
      puts_(s, ",");
      if (d == nd - 1) {
        puts_(s, " ");
      } else {
        for (int k = 0; k < nd - 1 - d; k++) puts_(s, "\n");
        for (int k = 0; k < indent + d + 1; k++) puts_(s, " ");
      }
    }
  }
  if (!width) puts_(s, "]");
}

kiln_status kiln_tensor_format(const kiln_tensor *t, char *buf, size_t cap, size_t *needed) {
  sink s = {buf, cap, 0};
  if (!t) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_tensor_format: tensor is NULL");
  if (!buf && cap) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_tensor_format: buf is NULL");
  if (tensor_failed(t)) {
    puts_(&s, "<error: ");
    puts_(&s, t->error);
    puts_(&s, ">");
  } else {
    printer p = {.t = t, .v = tensor_view_of(t), .summarise = kiln_tensor_numel(t) > SUMMARY_THRESHOLD,
                 .is_float = kk_is_float(t->dtype)};
    puts_(&s, "array(");
    if (kiln_tensor_numel(t) == 0) {
      char shape[KILN_SHAPE_STR_MAX];
      puts_(&s, "[], shape=");
      puts_(&s, kiln_shape_str(shape, sizeof shape, t->ndim, t->shape));
    } else {
      walk(&p, &s, 0, p.v.data, 6, &p.width);
      walk(&p, &s, 0, p.v.data, 6, NULL);
    }
    puts_(&s, ", dtype=");
    puts_(&s, kiln_dtype_name(t->dtype));
    puts_(&s, ")");
  }
  if (needed) *needed = s.len;
  if (cap) buf[s.len < cap ? s.len : cap - 1] = '\0';
  return KILN_OK;
}

kiln_status kiln_tensor_print(const kiln_tensor *t, FILE *out) {
  if (!out) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_tensor_print: out is NULL");
  size_t need = 0;
  kiln_status st = kiln_tensor_format(t, NULL, 0, &need);
  if (st != KILN_OK) return st;
  char *text = kiln_alloc(need + 1);
  if (!text) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_tensor_print: out of memory");
  kiln_tensor_format(t, text, need + 1, NULL);
  int rc = fprintf(out, "%s\n", text);
  kiln_free(text);
  return rc < 0 ? kiln_errorf(KILN_ERR_IO, "kiln_tensor_print: write failed") : KILN_OK;
}
