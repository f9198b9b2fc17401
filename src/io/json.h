/* A strict JSON reader (RFC 8259) for data from outside, and the string
 * escaping writers need.
 *
 * json_parse builds a read-only tree from (text, len), which need not be
 * NUL-terminated and is not referenced once the call returns. It accepts
 * exactly RFC 8259: no comments, no trailing commas, no NaN or Infinity, no
 * leading zeros, no byte order mark, strings of valid UTF-8 without raw
 * control characters. Escapes, surrogate pairs included, are decoded to
 * UTF-8. Nesting and the number of values are bounded, so the memory a
 * document can make kiln allocate is bounded by its size. Every failure is
 * a kiln status and a message "json: offset 123: expected ':' after an
 * object key", the offset counted in bytes from the start of the text;
 * callers prefix their own context.
 *
 * Objects keep their members in document order. Duplicate keys are not an
 * error here (RFC 8259 leaves them to the application): json_object_duplicate
 * says whether there are any, and json_object_get returns the first match.
 *
 * The whole tree lives in one arena owned by the json_doc; every pointer an
 * accessor returns stays valid until json_free. Accessors accept NULL and
 * values of the wrong type, answering "absent" (NULL, 0 or false), so a
 * loader can chain them and check once. */
#ifndef KILN_IO_JSON_H
#define KILN_IO_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/base.h"

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_doc json_doc;
typedef struct json_value json_value;

#define JSON_DEFAULT_MAX_DEPTH 64
#define JSON_DEFAULT_MAX_VALUES ((size_t)1 << 22)

typedef struct {
  int max_depth;     /* arrays and objects nested deeper fail; the root container is level 1 */
  size_t max_values; /* every value counts, members' values and array elements included */
} json_limits;

/* The defaults: JSON_DEFAULT_MAX_DEPTH and JSON_DEFAULT_MAX_VALUES. */
json_limits json_default_limits(void);

/* Parses text[0, len) into *out (NULL on failure). limits NULL means the
 * defaults. Statuses: KILN_ERR_CORRUPT for anything not JSON,
 * KILN_ERR_UNSUPPORTED for valid JSON beyond the limits,
 * KILN_ERR_OUT_OF_MEMORY. */
kiln_status json_parse(const char *text, size_t len, const json_limits *limits, json_doc **out);
void json_free(json_doc *doc); /* NULL does nothing */

const json_value *json_root(const json_doc *doc);

json_type json_type_of(const json_value *v); /* JSON_NULL for NULL */
/* "null", "a boolean", "a number", "a string", "an array", "an object":
 * for messages such as "shape is a string, not an array". */
const char *json_type_name(json_type t);
/* Byte offset of the value's first character in the parsed text. */
size_t json_offset(const json_value *v);

/* The decoded UTF-8 bytes and their count; always NUL-terminated, but a
 * string may hold NUL itself (from \u0000), so use *len when that matters.
 * NULL when v is not a string. */
const char *json_string(const json_value *v, size_t *len);

bool json_get_bool(const json_value *v, bool *out);

/* The number's value as strtod reads its text (correctly rounded, in every
 * locale); false when v is not a number. Numbers too large for a double
 * are rejected by the parser, so *out is always finite. */
bool json_get_double(const json_value *v, double *out);

typedef enum {
  JSON_INT_OK,
  JSON_INT_NOT_NUMBER,  /* not a number at all */
  JSON_INT_NOT_INTEGER, /* written with a fraction or an exponent: 2.0 and 1e3 are not integers here */
  JSON_INT_RANGE        /* an integer outside int64 */
} json_int_result;
/* The exact value of a number written as an integer (digits only, with an
 * optional minus sign) that fits int64. */
json_int_result json_get_int64(const json_value *v, int64_t *out);

size_t json_array_size(const json_value *v);
const json_value *json_array_at(const json_value *v, size_t i);

size_t json_object_size(const json_value *v);
/* The i-th member in document order: its decoded key (NUL-terminated;
 * *len, when not NULL, gets its length) and its value. */
const char *json_object_key(const json_value *v, size_t i, size_t *len);
const json_value *json_object_value(const json_value *v, size_t i);
/* The value of the first member whose key is exactly key (len bytes, or a
 * C string for json_object_get), or NULL. O(log n) on large objects. */
const json_value *json_object_getn(const json_value *v, const char *key, size_t len);
const json_value *json_object_get(const json_value *v, const char *key);
/* True when some key occurs twice; *index (if not NULL) gets the position
 * of the first member, in document order, whose key an earlier member
 * already has. */
bool json_object_duplicate(const json_value *v, size_t *index);

/* ------------------------------------------------------------ writing */

/* True when s[0, len) is valid UTF-8 (no overlong forms, no surrogates,
 * nothing past U+10FFFF). */
bool json_utf8_valid(const char *s, size_t len);

/* s[0, len) as a JSON string literal, quotes included, written to buf like
 * snprintf: at most cap bytes, NUL-terminated when cap > 0, returning the
 * full length without the NUL. Escapes '"', '\\' and control characters
 * (\b \f \n \r \t, others as \u00xx) and leaves other bytes as they are, so
 * the output matches Python's json.dumps(ensure_ascii=False) and serde_json.
 * Bytes that are not valid UTF-8 become \ufffd, so the output is always
 * valid JSON; check json_utf8_valid first when that must not happen. */
size_t json_escape(char *buf, size_t cap, const char *s, size_t len);

/* json_escape of the C string s, to f; false on a write error. */
bool json_write_string(FILE *f, const char *s);

#endif
