/* Reading values out of tensors: copy to a caller's buffer, item, and the
 * numpy-like printer. These are the implicit barriers of 2/8: each will wait
 * for the tensor's pending writes before touching its storage. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/elementwise.h"
#include "tensor/tensor.h"

/* Reading a value is a barrier: wait for the work that writes it. */
static kiln_status readable(const kiln_tensor *t, const char *fn) {
  if (!t) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "%s: tensor is NULL", fn);
  if (t->sym)
    return kiln_errorf(KILN_ERR_INVALID_ARGUMENT,
                       "%s: the output of %s is symbolic (a graph is being traced or built): it has no value until "
                       "the compiled plan runs; read it after the call, or keep this block imperative",
                       fn, tensor_sym_origin(t->sym));
  const char *msg;
  kiln_status st = tensor_wait(t, &msg);
  return st == KILN_OK ? st : kiln_errorf(st, "%s", msg);
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

/* Floats print as numpy does: positional with up to 8 fractional digits,
 * the integer parts right-aligned and the fractions left-aligned to the
 * longest ("1. " beside "2.5"), or scientific when the magnitudes span too
 * much (>= 1e8, < 1e-4, or a ratio over 1e3). */
typedef struct {
  const kiln_tensor *t;
  kk_view v;
  bool summarise;
  bool is_float, scientific;
  double max_abs, min_abs; /* over finite nonzero displayed values */
  int int_width, frac_width, width, sci_digits;
} printer;

/* Stats decide the float mode, measure finds the digits and widths, and
 * width (scientific only) the width of the final texts. */
typedef enum { PASS_STATS, PASS_MEASURE, PASS_WIDTH, PASS_PRINT } pass;

/* Positional text of a finite float with the fewest fractional digits
 * (at most 8) that read back as the same value in its own precision, as
 * numpy's unique repr does; the point stays ("1."). */
static void positional(double x, kiln_dtype dt, char *out, size_t cap) {
  for (int digits = 0; digits <= 8; digits++) {
    snprintf(out, cap, "%.*f", digits, x);
    double back = strtod(out, NULL);
    if (dt == KILN_F32 ? (float)back == (float)x : back == x) break;
  }
  if (!strchr(out, '.')) strncat(out, ".", cap - strlen(out) - 1);
}

/* Scientific text with `digits` mantissa decimals; numpy keeps the point
 * even without decimals ("1.e-05"). */
static void scientific(double x, int digits, char *out, size_t cap) {
  snprintf(out, cap, "%.*e", digits, x);
  if (digits == 0) {
    char *e = strchr(out, 'e');
    if (e && cap > strlen(out) + 1) {
      memmove(e + 1, e, strlen(e) + 1);
      *e = '.';
    }
  }
}

/* Fewest mantissa decimals (<= 8) that print x as %.8e does. */
static int sci_digits_needed(double x) {
  char buf[64];
  snprintf(buf, sizeof buf, "%.8e", x);
  char *e = strchr(buf, 'e'), *p = e - 1;
  int digits = 8;
  while (digits > 0 && *p == '0') p--, digits--;
  return digits;
}

static void visit(printer *p, sink *s, pass ps, const char *ptr) {
  kiln_dtype dt = p->t->dtype;
  char text[96];
  if (!p->is_float) {
    if (dt == KILN_BOOL) snprintf(text, sizeof text, "%s", *ptr ? "True" : "False");
    else snprintf(text, sizeof text, "%lld", (long long)kk_get_i64(dt, ptr));
    int len = (int)strlen(text);
    if (ps == PASS_MEASURE && len > p->width) p->width = len;
    if (ps == PASS_PRINT) {
      for (int k = len; k < p->width; k++) puts_(s, " ");
      puts_(s, text);
    }
    return;
  }
  double x = kk_get_f64(dt, ptr);
  if (ps == PASS_STATS) {
    double a = fabs(x);
    if (isfinite(x) && a > 0) {
      if (a > p->max_abs) p->max_abs = a;
      if (a < p->min_abs) p->min_abs = a;
    }
    return;
  }
  if (!isfinite(x)) {
    snprintf(text, sizeof text, "%s", isnan(x) ? "nan" : x > 0 ? "inf" : "-inf");
    int len = (int)strlen(text);
    if (ps != PASS_PRINT && len > p->width) p->width = len;
    if (ps == PASS_PRINT) {
      for (int k = len; k < p->width; k++) puts_(s, " ");
      puts_(s, text);
    }
    return;
  }
  if (p->scientific) {
    if (ps == PASS_MEASURE) {
      int d = sci_digits_needed(x);
      if (d > p->sci_digits) p->sci_digits = d;
      return;
    }
    scientific(x, p->sci_digits, text, sizeof text);
    if (ps == PASS_WIDTH) {
      if ((int)strlen(text) > p->width) p->width = (int)strlen(text);
      return;
    }
    for (int k = (int)strlen(text); k < p->width; k++) puts_(s, " ");
    puts_(s, text);
    return;
  }
  positional(x, dt, text, sizeof text);
  int int_len = (int)(strchr(text, '.') - text), frac_len = (int)strlen(text) - int_len - 1;
  if (ps == PASS_MEASURE) {
    if (int_len > p->int_width) p->int_width = int_len;
    if (frac_len > p->frac_width) p->frac_width = frac_len;
    return;
  }
  int pad_left = p->width - (p->int_width + 1 + p->frac_width);
  for (int k = 0; k < pad_left + p->int_width - int_len; k++) puts_(s, " ");
  puts_(s, text);
  for (int k = frac_len; k < p->frac_width; k++) puts_(s, " ");
}

static bool skipped(const printer *p, int d, int64_t i) {
  return p->summarise && p->v.shape[d] > 2 * EDGE_ITEMS && i >= EDGE_ITEMS && i < p->v.shape[d] - EDGE_ITEMS;
}

/* Visits the displayed elements in order; in the print pass also writes the
 * brackets, separators and summary marks. */
static void walk(printer *p, sink *s, pass ps, int d, const char *ptr, int indent) {
  int nd = p->v.ndim;
  int64_t es = (int64_t)kiln_dtype_size(p->t->dtype);
  bool print = ps == PASS_PRINT;
  if (d == nd) {
    visit(p, s, ps, ptr);
    return;
  }
  if (print) puts_(s, "[");
  for (int64_t i = 0; i < p->v.shape[d]; i++) {
    if (skipped(p, d, i)) {
      if (print) {
        puts_(s, d == nd - 1 ? "..., " : "...,");
        if (d < nd - 1) {
          for (int k = 0; k < nd - 1 - d; k++) puts_(s, "\n");
          for (int k = 0; k < indent + d + 1; k++) puts_(s, " ");
        }
      }
      i = p->v.shape[d] - EDGE_ITEMS - 1;
      continue;
    }
    walk(p, s, ps, d + 1, ptr + i * p->v.strides[d] * es, indent);
    if (print && i + 1 < p->v.shape[d]) {
      puts_(s, ",");
      if (d == nd - 1) {
        puts_(s, " ");
      } else {
        for (int k = 0; k < nd - 1 - d; k++) puts_(s, "\n");
        for (int k = 0; k < indent + d + 1; k++) puts_(s, " ");
      }
    }
  }
  if (print) puts_(s, "]");
}

static void print_values(printer *p, sink *s) {
  enum { INDENT = 6 }; /* strlen("array(") */
  if (p->is_float) {
    p->max_abs = 0;
    p->min_abs = INFINITY;
    walk(p, s, PASS_STATS, 0, p->v.data, INDENT);
    p->scientific = p->max_abs >= 1e8 || (p->max_abs > 0 && (p->min_abs < 1e-4 || p->max_abs / p->min_abs > 1e3));
  }
  walk(p, s, PASS_MEASURE, 0, p->v.data, INDENT);
  if (p->is_float && !p->scientific && p->int_width + 1 + p->frac_width > p->width)
    p->width = p->int_width + 1 + p->frac_width;
  if (p->is_float && p->scientific) walk(p, s, PASS_WIDTH, 0, p->v.data, INDENT);
  walk(p, s, PASS_PRINT, 0, p->v.data, INDENT);
}

kiln_status kiln_tensor_format(const kiln_tensor *t, char *buf, size_t cap, size_t *needed) {
  sink s = {buf, cap, 0};
  if (!t) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_tensor_format: tensor is NULL");
  if (!buf && cap) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_tensor_format: buf is NULL");
  const char *failure;
  if (tensor_wait(t, &failure) != KILN_OK) {
    puts_(&s, "<error: ");
    puts_(&s, failure);
    puts_(&s, ">");
  } else {
    printer p = {.t = t, .v = tensor_view_of(t), .summarise = kiln_tensor_numel(t) > SUMMARY_THRESHOLD,
                 .is_float = kk_is_float(t->dtype)};
    puts_(&s, "array(");
    if (kiln_tensor_numel(t) == 0) {
      /* numpy writes the shape as a tuple: (0, 3) or (0,). */
      char dim[24];
      puts_(&s, "[], shape=(");
      for (int i = 0; i < t->ndim; i++) {
        snprintf(dim, sizeof dim, i ? ", %lld" : "%lld", (long long)t->shape[i]);
        puts_(&s, dim);
      }
      puts_(&s, t->ndim == 1 ? ",)" : ")");
    } else {
      print_values(&p, &s);
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
