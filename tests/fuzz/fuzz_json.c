/* libFuzzer target for the JSON reader: any bytes must give either a tree
 * or a status with a message, never a crash, a leak or undefined behaviour.
 * A tree is written back out (strings through json_escape, numbers as
 * their int64 or with 17 digits) and parsed again; the two trees must be
 * equal, which checks the reader, the accessors and the escaper against
 * each other. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
  char *buf;
  size_t len, cap;
} out_buf;

static void put(out_buf *o, const char *s, size_t n) {
  if (o->cap - o->len < n + 1) {
    size_t cap = (o->cap ? o->cap * 2 : 256) + n;
    o->buf = realloc(o->buf, cap);
    if (!o->buf) abort();
    o->cap = cap;
  }
  memcpy(o->buf + o->len, s, n);
  o->len += n;
}

static void put_string(out_buf *o, const char *s, size_t len) {
  if (!json_utf8_valid(s, len)) abort(); /* the reader only hands out UTF-8 */
  size_t need = json_escape(NULL, 0, s, len);
  char *tmp = malloc(need + 1);
  if (!tmp || json_escape(tmp, need + 1, s, len) != need || strlen(tmp) != need) abort();
  put(o, tmp, need);
  free(tmp);
}

static void write_value(out_buf *o, const json_value *v) {
  char num[64];
  switch (json_type_of(v)) {
  case JSON_NULL: put(o, "null", 4); break;
  case JSON_BOOL: {
    bool b;
    if (!json_get_bool(v, &b)) abort();
    put(o, b ? "true" : "false", b ? 4 : 5);
    break;
  }
  case JSON_NUMBER: {
    int64_t i;
    double d;
    if (!json_get_double(v, &d) || !isfinite(d)) abort();
    int k = json_get_int64(v, &i) == JSON_INT_OK ? snprintf(num, sizeof num, "%lld", (long long)i)
                                                 : snprintf(num, sizeof num, "%.17g", d);
    /* %.17g of an integral double has no '.', which would read back as an
     * integer: keep it a fraction-style number so the kinds compare. */
    if (json_get_int64(v, &i) != JSON_INT_OK && !strpbrk(num, ".e"))
      k += snprintf(num + k, sizeof num - (size_t)k, ".0");
    put(o, num, (size_t)k);
    break;
  }
  case JSON_STRING: {
    size_t len;
    const char *s = json_string(v, &len);
    put_string(o, s, len);
    break;
  }
  case JSON_ARRAY:
    put(o, "[", 1);
    for (size_t i = 0; i < json_array_size(v); i++) {
      if (i) put(o, ",", 1);
      write_value(o, json_array_at(v, i));
    }
    put(o, "]", 1);
    break;
  case JSON_OBJECT:
    put(o, "{", 1);
    for (size_t i = 0; i < json_object_size(v); i++) {
      size_t len;
      const char *k = json_object_key(v, i, &len);
      if (i) put(o, ",", 1);
      put_string(o, k, len);
      put(o, ":", 1);
      write_value(o, json_object_value(v, i));
      /* Lookup finds this key's first occurrence. */
      const json_value *first = json_object_getn(v, k, len);
      if (!first) abort();
      size_t dup;
      if (first != json_object_value(v, i) && (!json_object_duplicate(v, &dup) || dup > i)) abort();
    }
    put(o, "}", 1);
    break;
  }
}

static void same(const json_value *a, const json_value *b) {
  if (json_type_of(a) != json_type_of(b)) abort();
  switch (json_type_of(a)) {
  case JSON_NULL: break;
  case JSON_BOOL: {
    bool x, y;
    json_get_bool(a, &x);
    json_get_bool(b, &y);
    if (x != y) abort();
    break;
  }
  case JSON_NUMBER: {
    int64_t x = 0, y = 0;
    double dx, dy;
    json_int_result kx = json_get_int64(a, &x), ky = json_get_int64(b, &y);
    json_get_double(a, &dx);
    json_get_double(b, &dy);
    /* A number beyond int64 is written back as a double, a fraction-style
     * number then; everything else keeps its kind and value exactly. */
    if (kx == JSON_INT_RANGE ? ky == JSON_INT_OK : kx != ky) abort();
    if (kx == JSON_INT_OK && x != y) abort();
    if (dx != dy) abort();
    break;
  }
  case JSON_STRING: {
    size_t la, lb;
    const char *sa = json_string(a, &la), *sb = json_string(b, &lb);
    if (la != lb || memcmp(sa, sb, la) != 0 || sa[la] || sb[lb]) abort();
    break;
  }
  case JSON_ARRAY:
    if (json_array_size(a) != json_array_size(b)) abort();
    for (size_t i = 0; i < json_array_size(a); i++) same(json_array_at(a, i), json_array_at(b, i));
    break;
  case JSON_OBJECT:
    if (json_object_size(a) != json_object_size(b)) abort();
    for (size_t i = 0; i < json_object_size(a); i++) {
      size_t la, lb;
      const char *ka = json_object_key(a, i, &la), *kb = json_object_key(b, i, &lb);
      if (la != lb || memcmp(ka, kb, la) != 0) abort();
      same(json_object_value(a, i), json_object_value(b, i));
    }
    size_t da = 0, db = 0;
    bool ha = json_object_duplicate(a, &da), hb = json_object_duplicate(b, &db);
    if (ha != hb || da != db) abort();
    break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_doc *doc = NULL;
  if (json_parse((const char *)data, size, NULL, &doc) != KILN_OK) {
    if (doc || strncmp(kiln_last_error(), "json: offset ", 13) != 0) abort();
    return 0;
  }
  out_buf o = {0};
  write_value(&o, json_root(doc));
  json_doc *again = NULL;
  if (json_parse(o.buf, o.len, NULL, &again) != KILN_OK) abort();
  same(json_root(doc), json_root(again));
  json_free(again);
  json_free(doc);
  free(o.buf);
  return 0;
}
