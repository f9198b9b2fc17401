/* The strict JSON reader and the string escaper (see json.h for the
 * contract).
 *
 * The parser is recursive descent; recursion is bounded by max_depth, so
 * the C stack is too. Children of the containers still open wait on one
 * growable scratch stack and move into the arena, as one exact-size array,
 * when their container closes: the tree has no per-node allocations and no
 * slack. Strings are decoded straight into the arena. Objects of more than
 * a few members get a sorted index, built once, so lookups and the
 * duplicate check are O(log n) and O(n log n) instead of quadratic in the
 * member count of a hostile file. */
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"

/* ------------------------------------------------------------ tree */

typedef struct json_member json_member;
typedef struct json_object json_object;

struct json_value {
  uint8_t type;
  uint8_t flag; /* JSON_BOOL: the value; JSON_NUMBER: a json_int_result other than NOT_NUMBER */
  size_t offset;
  union {
    struct {
      const char *s;
      size_t len;
    } str;
    struct {
      double d;
      int64_t i;
    } num;
    struct {
      json_value *items;
      size_t n;
    } arr;
    json_object *obj;
  } u;
};

struct json_member {
  const char *key;
  size_t key_len;
  json_value value;
};

/* Objects at most this size are searched linearly; the sorted index would
 * cost more than it saves. */
enum { SMALL_OBJECT = 8 };

struct json_object {
  json_member *members;
  size_t n;
  const json_member **sorted; /* by key, then position; NULL for small objects */
  size_t dup;                 /* first repeated member, or n when none */
};

/* ------------------------------------------------------------ arena */

typedef struct arena_chunk {
  struct arena_chunk *next;
  size_t cap, used;
} arena_chunk;

#define CHUNK_HEADER ((sizeof(arena_chunk) + 15) / 16 * 16)

struct json_doc {
  arena_chunk *chunks;
  size_t next_chunk;
  json_value root;
};

static void *arena_alloc(json_doc *d, size_t n) {
  n = (n + 7) / 8 * 8;
  arena_chunk *c = d->chunks;
  if (!c || c->cap - c->used < n) {
    size_t cap = n > d->next_chunk ? n : d->next_chunk;
    if (cap > SIZE_MAX - CHUNK_HEADER) return NULL;
    c = kiln_alloc(CHUNK_HEADER + cap);
    if (!c) return NULL;
    c->next = d->chunks;
    c->cap = cap;
    c->used = 0;
    d->chunks = c;
    if (d->next_chunk < ((size_t)16 << 20)) d->next_chunk *= 2;
  }
  void *p = (char *)c + CHUNK_HEADER + c->used;
  c->used += n;
  return p;
}

void json_free(json_doc *doc) {
  if (!doc) return;
  for (arena_chunk *c = doc->chunks; c;) {
    arena_chunk *next = c->next;
    kiln_free(c);
    c = next;
  }
  kiln_free(doc);
}

/* ------------------------------------------------------------ parser state */

typedef struct {
  const unsigned char *s;
  size_t len, pos;
  json_doc *doc;
  char *stack; /* children of the open containers, as bytes */
  size_t stack_len, stack_cap;
  size_t values, max_values;
  int max_depth;
} parser;

static kiln_status fail_at(size_t offset, kiln_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static kiln_status fail_at(size_t offset, kiln_status st, const char *fmt, ...) {
  char what[KILN_ERROR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return kiln_errorf(st, "json: offset %zu: %s", offset, what);
}

static kiln_status out_of_memory(const parser *p) { return fail_at(p->pos, KILN_ERR_OUT_OF_MEMORY, "out of memory"); }

/* A byte quoted for a message: 'x' when printable ASCII, else its value,
 * so a message never carries raw control bytes or broken UTF-8. */
static const char *describe(const parser *p, char *buf, size_t cap) {
  if (p->pos >= p->len) return "the end of the input";
  unsigned char c = p->s[p->pos];
  if (c > 0x20 && c < 0x7f)
    snprintf(buf, cap, "'%c'", c);
  else
    snprintf(buf, cap, "byte 0x%02X", c);
  return buf;
}

static kiln_status unexpected(const parser *p, const char *expected) {
  char b[16];
  return fail_at(p->pos, KILN_ERR_CORRUPT, "expected %s, found %s", expected, describe(p, b, sizeof b));
}

static void skip_ws(parser *p) {
  while (p->pos < p->len) {
    unsigned char c = p->s[p->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    p->pos++;
  }
}

static kiln_status push(parser *p, const void *item, size_t n) {
  if (p->stack_cap - p->stack_len < n) {
    size_t cap = p->stack_cap ? p->stack_cap : 1024;
    while (cap - p->stack_len < n) {
      if (cap > SIZE_MAX / 2) return out_of_memory(p);
      cap *= 2;
    }
    char *grown = kiln_alloc(cap);
    if (!grown) return out_of_memory(p);
    if (p->stack_len) memcpy(grown, p->stack, p->stack_len);
    kiln_free(p->stack);
    p->stack = grown;
    p->stack_cap = cap;
  }
  memcpy(p->stack + p->stack_len, item, n);
  p->stack_len += n;
  return KILN_OK;
}

/* Moves what the stack holds above base into one arena array. */
static void *pop_into_arena(parser *p, size_t base) {
  size_t bytes = p->stack_len - base;
  void *dst = arena_alloc(p->doc, bytes ? bytes : 1);
  if (!dst) return NULL;
  if (bytes) memcpy(dst, p->stack + base, bytes);
  p->stack_len = base;
  return dst;
}

/* ------------------------------------------------------------ UTF-8 */

/* Length of the valid UTF-8 sequence at s[0, n), or 0 when it is not one
 * (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF). */
static size_t utf8_sequence(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  if (c < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (n < need) return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < need; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return need;
}

bool json_utf8_valid(const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < len;) {
    size_t k = utf8_sequence(u + i, len - i);
    if (!k) return false;
    i += k;
  }
  return true;
}

static size_t utf8_encode(uint32_t cp, char *out) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | cp >> 12);
    out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | cp >> 18);
  out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* ------------------------------------------------------------ strings */

static int hex_digit(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* The four hex digits after "\u" at p->pos (which points at the 'u'). */
static kiln_status read_u_escape(parser *p, uint32_t *out) {
  size_t at = p->pos - 1; /* the backslash */
  uint32_t v = 0;
  for (size_t i = 1; i <= 4; i++) {
    if (p->pos + i >= p->len)
      return fail_at(at, KILN_ERR_CORRUPT, "\\u escape needs 4 hex digits, found the end of the input");
    int h = hex_digit(p->s[p->pos + i]);
    if (h < 0) return fail_at(at, KILN_ERR_CORRUPT, "\\u escape needs 4 hex digits");
    v = v << 4 | (uint32_t)h;
  }
  p->pos += 5;
  *out = v;
  return KILN_OK;
}

/* The string literal at p->pos (its opening quote), decoded into the arena. */
static kiln_status parse_string(parser *p, const char **out, size_t *out_len) {
  size_t start = p->pos++;
  /* The decoded text is never longer than the literal, so find where the
   * literal ends (or the input does) and size the buffer by that. */
  size_t end = p->pos;
  while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
  if (end > p->len) end = p->len;
  char *buf = arena_alloc(p->doc, end - p->pos + 1);
  if (!buf) return out_of_memory(p);
  size_t n = 0;
  for (;;) {
    if (p->pos >= p->len) return fail_at(start, KILN_ERR_CORRUPT, "string not closed before the end of the input");
    unsigned char c = p->s[p->pos];
    if (c == '"') {
      p->pos++;
      break;
    }
    if (c < 0x20)
      return fail_at(p->pos, KILN_ERR_CORRUPT, "control character 0x%02X in a string (it must be escaped)", c);
    if (c >= 0x80) {
      size_t k = utf8_sequence(p->s + p->pos, p->len - p->pos);
      if (!k) return fail_at(p->pos, KILN_ERR_CORRUPT, "invalid UTF-8 in a string");
      memcpy(buf + n, p->s + p->pos, k);
      n += k;
      p->pos += k;
      continue;
    }
    if (c != '\\') {
      buf[n++] = (char)c;
      p->pos++;
      continue;
    }
    size_t esc = p->pos++;
    if (p->pos >= p->len) return fail_at(start, KILN_ERR_CORRUPT, "string not closed before the end of the input");
    unsigned char e = p->s[p->pos];
    static const char simple_in[] = "\"\\/bfnrt", simple_out[] = "\"\\/\b\f\n\r\t";
    const char *hit = e ? strchr(simple_in, e) : NULL;
    if (hit) {
      buf[n++] = simple_out[hit - simple_in];
      p->pos++;
      continue;
    }
    if (e != 'u') {
      char b[16];
      return fail_at(esc, KILN_ERR_CORRUPT, "invalid escape: backslash followed by %s", describe(p, b, sizeof b));
    }
    uint32_t cp;
    kiln_status st = read_u_escape(p, &cp);
    if (st != KILN_OK) return st;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
      return fail_at(esc, KILN_ERR_CORRUPT, "unpaired low surrogate \\u%04X", (unsigned)cp);
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
        return fail_at(esc, KILN_ERR_CORRUPT, "high surrogate \\u%04X not followed by a low surrogate", (unsigned)cp);
      p->pos++;
      uint32_t lo;
      st = read_u_escape(p, &lo);
      if (st != KILN_OK) return st;
      if (lo < 0xDC00 || lo > 0xDFFF)
        return fail_at(esc, KILN_ERR_CORRUPT, "high surrogate \\u%04X followed by \\u%04X, not a low surrogate",
                       (unsigned)cp, (unsigned)lo);
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    n += utf8_encode(cp, buf + n);
  }
  buf[n] = '\0';
  *out = buf;
  *out_len = n;
  return KILN_OK;
}

/* ------------------------------------------------------------ numbers */

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void make_c_locale(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

static bool is_digit(const parser *p) { return p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9'; }

static kiln_status parse_number(parser *p, json_value *v) {
  size_t start = p->pos;
  bool neg = false;
  if (p->s[p->pos] == '-') {
    neg = true;
    p->pos++;
  }
  if (!is_digit(p)) return unexpected(p, "a digit after '-'");
  /* The magnitude of the integer part, while it fits; int64's range is
   * checked against it at the end. */
  uint64_t mag = 0;
  bool too_big = false;
  if (p->s[p->pos] == '0') {
    p->pos++;
    if (is_digit(p)) return fail_at(start, KILN_ERR_CORRUPT, "number with a leading zero");
  } else {
    while (is_digit(p)) {
      unsigned d = p->s[p->pos++] - '0';
      if (mag > (UINT64_MAX - d) / 10)
        too_big = true;
      else
        mag = mag * 10 + d;
    }
  }
  bool integer = true;
  if (p->pos < p->len && p->s[p->pos] == '.') {
    integer = false;
    p->pos++;
    if (!is_digit(p)) return unexpected(p, "a digit after '.'");
    while (is_digit(p)) p->pos++;
  }
  if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
    integer = false;
    p->pos++;
    if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
    if (!is_digit(p)) return unexpected(p, "a digit in the exponent");
    while (is_digit(p)) p->pos++;
  }
  v->type = JSON_NUMBER;
  v->u.num.i = 0;
  if (!integer) {
    v->flag = JSON_INT_NOT_INTEGER;
  } else if (too_big || mag > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)) {
    v->flag = JSON_INT_RANGE;
  } else {
    v->flag = JSON_INT_OK;
    v->u.num.i = neg ? (int64_t)(0 - mag) : (int64_t)mag;
  }
  /* Integers up to 2^53 convert exactly; everything else goes through
   * strtod, which rounds correctly, under the C locale so that a program's
   * setlocale cannot change what '.' means. */
  if (integer && !too_big && mag <= ((uint64_t)1 << 53)) {
    v->u.num.d = neg ? -(double)mag : (double)mag;
    return KILN_OK;
  }
  pthread_once(&c_locale_once, make_c_locale);
  if (c_locale == (locale_t)0) return fail_at(start, KILN_ERR_OUT_OF_MEMORY, "out of memory for the C locale");
  size_t n = p->pos - start;
  char small[128];
  char *text = n < sizeof small ? small : kiln_alloc(n + 1);
  if (!text) return out_of_memory(p);
  memcpy(text, p->s + start, n);
  text[n] = '\0';
  locale_t old = uselocale(c_locale);
  double d = strtod(text, NULL);
  uselocale(old);
  if (text != small) kiln_free(text);
  if (isinf(d)) return fail_at(start, KILN_ERR_UNSUPPORTED, "number out of the range of a double");
  v->u.num.d = d;
  return KILN_OK;
}

/* ------------------------------------------------------------ values */

static kiln_status parse_value(parser *p, int depth, json_value *v);

static bool literal(parser *p, const char *word) {
  size_t n = strlen(word);
  if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) return false;
  p->pos += n;
  return true;
}

static kiln_status parse_array(parser *p, int depth, json_value *v) {
  size_t base = p->stack_len, count = 0;
  p->pos++;
  skip_ws(p);
  if (p->pos < p->len && p->s[p->pos] == ']') {
    p->pos++;
  } else {
    for (;;) {
      json_value item;
      kiln_status st = parse_value(p, depth, &item);
      if (st == KILN_OK) st = push(p, &item, sizeof item);
      if (st != KILN_OK) return st;
      count++;
      skip_ws(p);
      if (p->pos < p->len && p->s[p->pos] == ',') {
        p->pos++;
        continue;
      }
      if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
        break;
      }
      return unexpected(p, "',' or ']' in an array");
    }
  }
  json_value *items = pop_into_arena(p, base);
  if (!items) return out_of_memory(p);
  v->type = JSON_ARRAY;
  v->u.arr.items = items;
  v->u.arr.n = count;
  return KILN_OK;
}

static int key_cmp(const char *a, size_t na, const char *b, size_t nb) {
  int c = memcmp(a, b, na < nb ? na : nb);
  if (c) return c;
  return na < nb ? -1 : na > nb;
}

static int member_cmp(const void *x, const void *y) {
  const json_member *a = *(const json_member *const *)x, *b = *(const json_member *const *)y;
  int c = key_cmp(a->key, a->key_len, b->key, b->key_len);
  if (c) return c;
  return a < b ? -1 : a > b; /* members are one array: address order is document order */
}

static bool same_key(const json_member *a, const json_member *b) {
  return a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0;
}

static kiln_status index_object(parser *p, json_object *o) {
  o->dup = o->n;
  o->sorted = NULL;
  if (o->n <= SMALL_OBJECT) {
    for (size_t j = 1; j < o->n && o->dup == o->n; j++)
      for (size_t i = 0; i < j; i++)
        if (same_key(&o->members[i], &o->members[j])) {
          o->dup = j;
          break;
        }
    return KILN_OK;
  }
  const json_member **s = arena_alloc(p->doc, o->n * sizeof *s);
  if (!s) return out_of_memory(p);
  for (size_t i = 0; i < o->n; i++) s[i] = &o->members[i];
  qsort(s, o->n, sizeof *s, member_cmp);
  /* In a run of equal keys every member after the first repeats it. */
  for (size_t i = 1; i < o->n; i++)
    if (same_key(s[i - 1], s[i])) {
      size_t at = (size_t)(s[i] - o->members);
      if (at < o->dup) o->dup = at;
    }
  o->sorted = s;
  return KILN_OK;
}

static kiln_status parse_object(parser *p, int depth, json_value *v) {
  size_t base = p->stack_len, count = 0;
  p->pos++;
  skip_ws(p);
  if (p->pos < p->len && p->s[p->pos] == '}') {
    p->pos++;
  } else {
    for (;;) {
      skip_ws(p);
      if (p->pos >= p->len || p->s[p->pos] != '"')
        return unexpected(p, count ? "a string key after ','" : "a string key or '}'");
      json_member m;
      kiln_status st = parse_string(p, &m.key, &m.key_len);
      if (st != KILN_OK) return st;
      skip_ws(p);
      if (p->pos >= p->len || p->s[p->pos] != ':') return unexpected(p, "':' after an object key");
      p->pos++;
      st = parse_value(p, depth, &m.value);
      if (st == KILN_OK) st = push(p, &m, sizeof m);
      if (st != KILN_OK) return st;
      count++;
      skip_ws(p);
      if (p->pos < p->len && p->s[p->pos] == ',') {
        p->pos++;
        continue;
      }
      if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
        break;
      }
      return unexpected(p, "',' or '}' in an object");
    }
  }
  json_object *o = arena_alloc(p->doc, sizeof *o);
  if (!o) return out_of_memory(p);
  o->members = pop_into_arena(p, base);
  if (!o->members) return out_of_memory(p);
  o->n = count;
  kiln_status st = index_object(p, o);
  if (st != KILN_OK) return st;
  v->type = JSON_OBJECT;
  v->u.obj = o;
  return KILN_OK;
}

static kiln_status parse_value(parser *p, int depth, json_value *v) {
  skip_ws(p);
  memset(v, 0, sizeof *v);
  v->offset = p->pos;
  if (p->pos >= p->len) return unexpected(p, "a value");
  if (++p->values > p->max_values)
    return fail_at(p->pos, KILN_ERR_UNSUPPORTED, "more than %zu values (the limit)", p->max_values);
  unsigned char c = p->s[p->pos];
  if (c == '{' || c == '[') {
    if (depth >= p->max_depth)
      return fail_at(p->pos, KILN_ERR_UNSUPPORTED, "nesting deeper than %d levels (the limit)", p->max_depth);
    return c == '{' ? parse_object(p, depth + 1, v) : parse_array(p, depth + 1, v);
  }
  if (c == '"') {
    v->type = JSON_STRING;
    return parse_string(p, &v->u.str.s, &v->u.str.len);
  }
  if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
  if (literal(p, "true") || literal(p, "false")) {
    v->type = JSON_BOOL;
    v->flag = p->s[v->offset] == 't';
    return KILN_OK;
  }
  if (literal(p, "null")) {
    v->type = JSON_NULL;
    return KILN_OK;
  }
  return unexpected(p, "a value");
}

json_limits json_default_limits(void) {
  return (json_limits){.max_depth = JSON_DEFAULT_MAX_DEPTH, .max_values = JSON_DEFAULT_MAX_VALUES};
}

kiln_status json_parse(const char *text, size_t len, const json_limits *limits, json_doc **out) {
  if (!out) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "json_parse: out is NULL");
  *out = NULL;
  if (!text && len) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "json_parse: text is NULL");
  json_limits lim = limits ? *limits : json_default_limits();
  json_doc *doc = kiln_alloc(sizeof *doc);
  if (!doc) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "json: out of memory");
  doc->chunks = NULL;
  /* Sized by the input, so a small document takes one chunk and a large
   * one does not start with a cascade of small chunks. */
  doc->next_chunk = len / 2 < 1024 ? 1024 : len / 2 < ((size_t)16 << 20) ? len / 2 : (size_t)16 << 20;
  parser p = {.s = (const unsigned char *)text,
              .len = len,
              .doc = doc,
              .max_values = lim.max_values,
              .max_depth = lim.max_depth};
  kiln_status st = parse_value(&p, 0, &doc->root);
  if (st == KILN_OK) {
    skip_ws(&p);
    if (p.pos < p.len) st = unexpected(&p, "nothing after the value");
  }
  kiln_free(p.stack);
  if (st != KILN_OK) {
    json_free(doc);
    return st;
  }
  *out = doc;
  return KILN_OK;
}

/* ------------------------------------------------------------ accessors */

const json_value *json_root(const json_doc *doc) { return doc ? &doc->root : NULL; }

json_type json_type_of(const json_value *v) { return v ? (json_type)v->type : JSON_NULL; }

const char *json_type_name(json_type t) {
  switch (t) {
  case JSON_NULL: return "null";
  case JSON_BOOL: return "a boolean";
  case JSON_NUMBER: return "a number";
  case JSON_STRING: return "a string";
  case JSON_ARRAY: return "an array";
  case JSON_OBJECT: return "an object";
  }
  return "an unknown value";
}

size_t json_offset(const json_value *v) { return v ? v->offset : 0; }

const char *json_string(const json_value *v, size_t *len) {
  if (!v || v->type != JSON_STRING) return NULL;
  if (len) *len = v->u.str.len;
  return v->u.str.s;
}

bool json_get_bool(const json_value *v, bool *out) {
  if (!v || v->type != JSON_BOOL) return false;
  *out = v->flag != 0;
  return true;
}

bool json_get_double(const json_value *v, double *out) {
  if (!v || v->type != JSON_NUMBER) return false;
  *out = v->u.num.d;
  return true;
}

json_int_result json_get_int64(const json_value *v, int64_t *out) {
  if (!v || v->type != JSON_NUMBER) return JSON_INT_NOT_NUMBER;
  if (v->flag == JSON_INT_OK) *out = v->u.num.i;
  return (json_int_result)v->flag;
}

size_t json_array_size(const json_value *v) { return v && v->type == JSON_ARRAY ? v->u.arr.n : 0; }

const json_value *json_array_at(const json_value *v, size_t i) {
  return v && v->type == JSON_ARRAY && i < v->u.arr.n ? &v->u.arr.items[i] : NULL;
}

size_t json_object_size(const json_value *v) { return v && v->type == JSON_OBJECT ? v->u.obj->n : 0; }

const char *json_object_key(const json_value *v, size_t i, size_t *len) {
  if (!v || v->type != JSON_OBJECT || i >= v->u.obj->n) return NULL;
  if (len) *len = v->u.obj->members[i].key_len;
  return v->u.obj->members[i].key;
}

const json_value *json_object_value(const json_value *v, size_t i) {
  if (!v || v->type != JSON_OBJECT || i >= v->u.obj->n) return NULL;
  return &v->u.obj->members[i].value;
}

const json_value *json_object_getn(const json_value *v, const char *key, size_t len) {
  if (!v || v->type != JSON_OBJECT || (!key && len)) return NULL;
  const json_object *o = v->u.obj;
  if (!o->sorted) {
    for (size_t i = 0; i < o->n; i++)
      if (o->members[i].key_len == len && memcmp(o->members[i].key, key, len) == 0) return &o->members[i].value;
    return NULL;
  }
  /* The lower bound: ties are in document order, so this is the first. */
  size_t lo = 0, hi = o->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (key_cmp(o->sorted[mid]->key, o->sorted[mid]->key_len, key, len) < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < o->n && o->sorted[lo]->key_len == len && memcmp(o->sorted[lo]->key, key, len) == 0)
    return &o->sorted[lo]->value;
  return NULL;
}

const json_value *json_object_get(const json_value *v, const char *key) {
  return key ? json_object_getn(v, key, strlen(key)) : NULL;
}

bool json_object_duplicate(const json_value *v, size_t *index) {
  if (!v || v->type != JSON_OBJECT || v->u.obj->dup == v->u.obj->n) return false;
  if (index) *index = v->u.obj->dup;
  return true;
}

/* ------------------------------------------------------------ escaping */

typedef struct {
  char *buf;
  size_t cap, len;
  FILE *f;
  bool ok;
} emitter;

static void emit(emitter *e, const char *s, size_t n) {
  if (e->f) {
    if (e->ok && n && fwrite(s, 1, n, e->f) != n) e->ok = false;
  } else if (e->len < e->cap) {
    size_t room = e->cap - e->len;
    memcpy(e->buf + e->len, s, n < room ? n : room);
  }
  e->len += n;
}

static void escape_to(emitter *e, const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  emit(e, "\"", 1);
  size_t i = 0;
  while (i < len) {
    /* Copy the longest run that needs no escaping in one go. */
    size_t run = i;
    while (run < len && u[run] >= 0x20 && u[run] != '"' && u[run] != '\\') {
      if (u[run] < 0x80) {
        run++;
        continue;
      }
      size_t k = utf8_sequence(u + run, len - run);
      if (!k) break;
      run += k;
    }
    if (run > i) emit(e, s + i, run - i);
    i = run;
    if (i >= len) break;
    unsigned char c = u[i++];
    char esc[8];
    switch (c) {
    case '"': emit(e, "\\\"", 2); break;
    case '\\': emit(e, "\\\\", 2); break;
    case '\b': emit(e, "\\b", 2); break;
    case '\f': emit(e, "\\f", 2); break;
    case '\n': emit(e, "\\n", 2); break;
    case '\r': emit(e, "\\r", 2); break;
    case '\t': emit(e, "\\t", 2); break;
    default:
      if (c < 0x20) {
        snprintf(esc, sizeof esc, "\\u%04x", c);
        emit(e, esc, 6);
      } else {
        emit(e, "\\ufffd", 6); /* a byte that starts no valid UTF-8 sequence */
      }
    }
  }
  emit(e, "\"", 1);
}

size_t json_escape(char *buf, size_t cap, const char *s, size_t len) {
  emitter e = {.buf = buf, .cap = cap, .ok = true};
  escape_to(&e, s, len);
  if (cap) buf[e.len < cap ? e.len : cap - 1] = '\0';
  return e.len;
}

bool json_write_string(FILE *f, const char *s) {
  if (!f || !s) return false;
  emitter e = {.f = f, .ok = true};
  escape_to(&e, s, strlen(s));
  return e.ok;
}
