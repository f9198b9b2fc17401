/* Tests of the strict JSON reader and the string escaper (src/io/json.c).
 *
 * Every value type through the accessors; escapes and surrogate pairs;
 * numbers at the edges of int64 and double; one test per error path, each
 * asserting the status and the whole message, offset included, since
 * loaders pass these messages on to users; the depth and value limits;
 * duplicate keys and lookups in small and large objects; the escaper
 * against the reader; and each allocation failing in turn. */
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"
#include "testutil.h"

static json_doc *parse_ok(const char *text) {
  json_doc *d = NULL;
  kiln_status st = json_parse(text, strlen(text), NULL, &d);
  if (st != KILN_OK) {
    fprintf(stderr, "parsing %s: %s\n", text, kiln_last_error());
    fail();
  }
  assert_non_null(d);
  return d;
}

/* Parses text[0, len) and asserts the status and the exact message. */
static void expect_errorn(const char *text, size_t len, kiln_status want, const char *message) {
  json_doc *d = (json_doc *)1;
  kiln_status st = json_parse(text, len, NULL, &d);
  if (st != want || strcmp(kiln_last_error(), message) != 0) {
    fprintf(stderr, "parsing %.*s\n  got %s: %s\n  want %s: %s\n", (int)len, text, kiln_status_name(st),
            kiln_last_error(), kiln_status_name(want), message);
    fail();
  }
  assert_null(d);
}

static void expect_error(const char *text, kiln_status want, const char *message) {
  expect_errorn(text, strlen(text), want, message);
}

/* ------------------------------------------------------------ values */

static void every_type_through_the_accessors(void **state) {
  (void)state;
  const char *text = " {\"n\": null, \"t\": true, \"f\": false, \"i\": -42, \"x\": 2.5, \"s\": \"hi\","
                     " \"a\": [1, [], {}], \"o\": {\"k\": \"v\"}} ";
  json_doc *d = parse_ok(text);
  const json_value *r = json_root(d);
  assert_int_equal(json_type_of(r), JSON_OBJECT);
  assert_int_equal(json_offset(r), 1);
  assert_int_equal(json_object_size(r), 8);
  static const char *const keys[] = {"n", "t", "f", "i", "x", "s", "a", "o"};
  static const json_type types[] = {JSON_NULL,   JSON_BOOL,   JSON_BOOL,  JSON_NUMBER,
                                    JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT};
  for (size_t i = 0; i < 8; i++) {
    size_t len = 99;
    assert_string_equal(json_object_key(r, i, &len), keys[i]);
    assert_int_equal(len, 1);
    assert_int_equal(json_type_of(json_object_value(r, i)), types[i]);
    assert_ptr_equal(json_object_get(r, keys[i]), json_object_value(r, i));
  }
  bool b = false;
  assert_true(json_get_bool(json_object_get(r, "t"), &b) && b);
  assert_true(json_get_bool(json_object_get(r, "f"), &b) && !b);
  int64_t i64 = 0;
  assert_int_equal(json_get_int64(json_object_get(r, "i"), &i64), JSON_INT_OK);
  assert_int_equal(i64, -42);
  double x = 0;
  assert_true(json_get_double(json_object_get(r, "x"), &x));
  assert_true(x == 2.5);
  assert_int_equal(json_get_int64(json_object_get(r, "x"), &i64), JSON_INT_NOT_INTEGER);
  size_t len = 0;
  assert_string_equal(json_string(json_object_get(r, "s"), &len), "hi");
  assert_int_equal(len, 2);
  const json_value *a = json_object_get(r, "a");
  assert_int_equal(json_array_size(a), 3);
  assert_int_equal(json_array_size(json_array_at(a, 1)), 0);
  assert_int_equal(json_type_of(json_array_at(a, 1)), JSON_ARRAY);
  assert_int_equal(json_object_size(json_array_at(a, 2)), 0);
  assert_null(json_array_at(a, 3));
  assert_string_equal(json_string(json_object_get(json_object_get(r, "o"), "k"), NULL), "v");
  /* Offsets point at each value's first byte. */
  assert_int_equal(json_offset(json_object_get(r, "i")), strstr(text, "-42") - text);
  assert_int_equal(json_offset(json_object_get(r, "o")), strstr(text, "{\"k") - text);

  /* Wrong types and NULL answer "absent". */
  const json_value *s = json_object_get(r, "s");
  assert_null(json_object_get(s, "x"));
  assert_null(json_array_at(s, 0));
  assert_int_equal(json_array_size(s), 0);
  assert_int_equal(json_object_size(s), 0);
  assert_null(json_object_key(s, 0, NULL));
  assert_null(json_object_value(s, 0));
  assert_false(json_get_bool(s, &b));
  assert_false(json_get_double(s, &x));
  assert_int_equal(json_get_int64(s, &i64), JSON_INT_NOT_NUMBER);
  assert_null(json_string(json_array_at(a, 0), NULL));
  assert_null(json_object_get(NULL, "x"));
  assert_null(json_object_get(r, NULL));
  assert_null(json_object_get(r, "missing"));
  assert_int_equal(json_type_of(NULL), JSON_NULL);
  assert_null(json_root(NULL));
  assert_false(json_object_duplicate(r, NULL));
  assert_string_equal(json_type_name(JSON_ARRAY), "an array");
  json_free(d);
  json_free(NULL);

  /* Any value may be the root. */
  static const char *const roots[] = {"3", "\"s\"", "null", "true", "[]", "{}", "\t\n\r -0 \n"};
  for (size_t k = 0; k < sizeof roots / sizeof roots[0]; k++) json_free(parse_ok(roots[k]));
}

static void string_escapes_and_utf8(void **state) {
  (void)state;
  static const struct {
    const char *json, *want;
    size_t len;
  } cases[] = {
      {"\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"", "\" \\ / \b \f \n \r \t", 15},
      {"\"\\u0041\\u00e9\\u00E9\\u4e2d\"", "A\xc3\xa9\xc3\xa9\xe4\xb8\xad", 8},
      {"\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80", 4}, /* U+1F600 from a surrogate pair */
      {"\"\\uDBFF\\uDFFF\"", "\xf4\x8f\xbf\xbf", 4}, /* U+10FFFF, the last code point */
      {"\"\\uD800\\uDC00\"", "\xf0\x90\x80\x80", 4}, /* U+10000, the first pair */
      {"\"\\u07ff\\u0800\\uffff\"", "\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf", 8},
      {"\"caf\xc3\xa9 \xf0\x9f\x98\x80 \x7f\"", "caf\xc3\xa9 \xf0\x9f\x98\x80 \x7f", 12},
      {"\"\"", "", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    json_doc *d = parse_ok(cases[i].json);
    size_t len = 0;
    const char *s = json_string(json_root(d), &len);
    assert_non_null(s);
    assert_int_equal(len, cases[i].len);
    assert_memory_equal(s, cases[i].want, len);
    assert_int_equal(s[len], '\0');
    json_free(d);
  }
  /* \u0000 is a character: the length says where the string ends. */
  json_doc *d = parse_ok("{\"a\\u0000b\": \"x\\u0000y\"}");
  size_t len = 0;
  const char *k = json_object_key(json_root(d), 0, &len);
  assert_int_equal(len, 3);
  assert_memory_equal(k, "a\0b", 3);
  assert_non_null(json_object_getn(json_root(d), "a\0b", 3));
  assert_null(json_object_get(json_root(d), "a"));
  assert_int_equal(strlen(json_string(json_object_value(json_root(d), 0), &len)), 1);
  assert_int_equal(len, 3);
  json_free(d);
}

static void string_errors(void **state) {
  (void)state;
  const kiln_status C = KILN_ERR_CORRUPT;
  expect_error("\"abc", C, "json: offset 0: string not closed before the end of the input");
  expect_error("[\"a\\", C, "json: offset 1: string not closed before the end of the input");
  expect_error("\"a\nb\"", C, "json: offset 2: control character 0x0A in a string (it must be escaped)");
  expect_errorn("\"a\0b\"", 5, C, "json: offset 2: control character 0x00 in a string (it must be escaped)");
  expect_error("\"a\x1f\"", C, "json: offset 2: control character 0x1F in a string (it must be escaped)");
  expect_error("\"\\q\"", C, "json: offset 1: invalid escape: backslash followed by 'q'");
  expect_error("\"\\x41\"", C, "json: offset 1: invalid escape: backslash followed by 'x'");
  expect_error("\"\\U0041\"", C, "json: offset 1: invalid escape: backslash followed by 'U'");
  expect_error("\"\\u12\"", C, "json: offset 1: \\u escape needs 4 hex digits");
  expect_error("\"\\u12", C, "json: offset 1: \\u escape needs 4 hex digits, found the end of the input");
  expect_error("\"\\uZZZZ\"", C, "json: offset 1: \\u escape needs 4 hex digits");
  expect_error("\"\\u+123\"", C, "json: offset 1: \\u escape needs 4 hex digits");
  expect_error("\"x\\ud83d\"", C, "json: offset 2: high surrogate \\uD83D not followed by a low surrogate");
  expect_error("\"\\ud83dx\"", C, "json: offset 1: high surrogate \\uD83D not followed by a low surrogate");
  expect_error("\"\\ud83d\\n\"", C, "json: offset 1: high surrogate \\uD83D not followed by a low surrogate");
  expect_error("\"\\ud83d\\u0041\"", C,
               "json: offset 1: high surrogate \\uD83D followed by \\u0041, not a low surrogate");
  expect_error("\"\\ud83d\\ud83d\"", C,
               "json: offset 1: high surrogate \\uD83D followed by \\uD83D, not a low surrogate");
  expect_error("\"\\ude00\"", C, "json: offset 1: unpaired low surrogate \\uDE00");
  /* Invalid UTF-8: a lone continuation byte, overlong forms, an encoded
   * surrogate, past U+10FFFF, bytes never valid, a truncated sequence. */
  static const char *const bad_utf8[] = {"\"\x80\"",
                                         "\"\xc0\xaf\"",
                                         "\"\xc1\xbf\"",
                                         "\"\xe0\x80\xaf\"",
                                         "\"\xed\xa0\x80\"",
                                         "\"\xf0\x80\x80\xaf\"",
                                         "\"\xf4\x90\x80\x80\"",
                                         "\"\xf5\x80\x80\x80\"",
                                         "\"\xff\"",
                                         "\"\xe4\xb8\"",
                                         "\"\xc3\""};
  for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++)
    expect_error(bad_utf8[i], C, "json: offset 1: invalid UTF-8 in a string");
  expect_errorn("\"\xe4\xb8", 3, C, "json: offset 1: invalid UTF-8 in a string");
}

static void numbers(void **state) {
  (void)state;
  static const struct {
    const char *text;
    json_int_result kind;
    int64_t i;
    double d;
  } cases[] = {
      {"0", JSON_INT_OK, 0, 0.0},
      {"-0", JSON_INT_OK, 0, -0.0},
      {"7", JSON_INT_OK, 7, 7.0},
      {"-123", JSON_INT_OK, -123, -123.0},
      {"9223372036854775807", JSON_INT_OK, INT64_MAX, 9223372036854775807.0},
      {"-9223372036854775808", JSON_INT_OK, INT64_MIN, -9223372036854775808.0},
      {"9223372036854775808", JSON_INT_RANGE, 0, 9223372036854775808.0},
      {"-9223372036854775809", JSON_INT_RANGE, 0, -9223372036854775808.0},
      {"123456789012345678901234567890", JSON_INT_RANGE, 0, 123456789012345678901234567890.0},
      {"9007199254740993", JSON_INT_OK, 9007199254740993LL, 9007199254740992.0}, /* 2^53 + 1 rounds to even */
      {"1.5", JSON_INT_NOT_INTEGER, 0, 1.5},
      {"-2.5e-3", JSON_INT_NOT_INTEGER, 0, -2.5e-3},
      {"1E+2", JSON_INT_NOT_INTEGER, 0, 100.0},
      {"1e2", JSON_INT_NOT_INTEGER, 0, 100.0},
      {"2.0", JSON_INT_NOT_INTEGER, 0, 2.0},
      {"0.1", JSON_INT_NOT_INTEGER, 0, 0.1},
      {"1.7976931348623157e308", JSON_INT_NOT_INTEGER, 0, 1.7976931348623157e308},
      {"4.9406564584124654e-324", JSON_INT_NOT_INTEGER, 0, 4.9406564584124654e-324},
      {"1e-400", JSON_INT_NOT_INTEGER, 0, 0.0},
      {"0e0", JSON_INT_NOT_INTEGER, 0, 0.0},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    json_doc *d = parse_ok(cases[k].text);
    const json_value *v = json_root(d);
    assert_int_equal(json_type_of(v), JSON_NUMBER);
    int64_t i = 12345;
    json_int_result r = json_get_int64(v, &i);
    double x = 0;
    assert_true(json_get_double(v, &x));
    if (r != cases[k].kind || (r == JSON_INT_OK && i != cases[k].i) || x != cases[k].d ||
        signbit(x) != signbit(cases[k].d)) {
      fprintf(stderr, "%s: kind %d value %lld %.17g, want kind %d value %lld %.17g\n", cases[k].text, (int)r,
              (long long)i, x, (int)cases[k].kind, (long long)cases[k].i, cases[k].d);
      fail();
    }
    if (r != JSON_INT_OK) assert_int_equal(i, 12345); /* untouched */
    json_free(d);
  }
  /* A long number goes through a heap copy for strtod. */
  char big[400];
  memset(big, '1', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  big[1] = '.';
  json_doc *d = parse_ok(big);
  double x = 0;
  assert_true(json_get_double(json_root(d), &x));
  assert_true(x > 1.11111 && x < 1.11112);
  json_free(d);
}

static void number_errors(void **state) {
  (void)state;
  const kiln_status C = KILN_ERR_CORRUPT;
  expect_error("01", C, "json: offset 0: number with a leading zero");
  expect_error("[-012]", C, "json: offset 1: number with a leading zero");
  expect_error("-", C, "json: offset 1: expected a digit after '-', found the end of the input");
  expect_error("-a", C, "json: offset 1: expected a digit after '-', found 'a'");
  expect_error("- 1", C, "json: offset 1: expected a digit after '-', found byte 0x20");
  expect_error("1.", C, "json: offset 2: expected a digit after '.', found the end of the input");
  expect_error("1.e3", C, "json: offset 2: expected a digit after '.', found 'e'");
  expect_error(".5", C, "json: offset 0: expected a value, found '.'");
  expect_error("+1", C, "json: offset 0: expected a value, found '+'");
  expect_error("1e", C, "json: offset 2: expected a digit in the exponent, found the end of the input");
  expect_error("1e+", C, "json: offset 3: expected a digit in the exponent, found the end of the input");
  expect_error("1e-x", C, "json: offset 3: expected a digit in the exponent, found 'x'");
  expect_error("0x10", C, "json: offset 1: expected nothing after the value, found 'x'");
  expect_error("1.5.3", C, "json: offset 3: expected nothing after the value, found '.'");
  expect_error("NaN", C, "json: offset 0: expected a value, found 'N'");
  expect_error("Infinity", C, "json: offset 0: expected a value, found 'I'");
  expect_error("-Infinity", C, "json: offset 1: expected a digit after '-', found 'I'");
  expect_error("[1e309]", KILN_ERR_UNSUPPORTED, "json: offset 1: number out of the range of a double");
  expect_error("-1e400", KILN_ERR_UNSUPPORTED, "json: offset 0: number out of the range of a double");
}

/* strtod follows LC_NUMERIC; the reader must not. Runs only where a locale
 * with a decimal comma is installed. */
static void numbers_ignore_the_locale(void **state) {
  (void)state;
  static const char *const names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"};
  const char *set = NULL;
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !set; i++) set = setlocale(LC_NUMERIC, names[i]);
  if (!set) skip();
  json_doc *d = parse_ok("[1.5, 2.25e1]");
  setlocale(LC_NUMERIC, "C");
  double x = 0;
  assert_true(json_get_double(json_array_at(json_root(d), 0), &x) && x == 1.5);
  assert_true(json_get_double(json_array_at(json_root(d), 1), &x) && x == 22.5);
  json_free(d);
}

static void literal_and_structure_errors(void **state) {
  (void)state;
  const kiln_status C = KILN_ERR_CORRUPT;
  expect_error("", C, "json: offset 0: expected a value, found the end of the input");
  expect_error(" \n\t\r", C, "json: offset 4: expected a value, found the end of the input");
  expect_error("tru", C, "json: offset 0: expected a value, found 't'");
  expect_error("True", C, "json: offset 0: expected a value, found 'T'");
  expect_error("nul", C, "json: offset 0: expected a value, found 'n'");
  expect_error("truex", C, "json: offset 4: expected nothing after the value, found 'x'");
  expect_error("[1,]", C, "json: offset 3: expected a value, found ']'");
  expect_error("[,1]", C, "json: offset 1: expected a value, found ','");
  expect_error("[1 2]", C, "json: offset 3: expected ',' or ']' in an array, found '2'");
  expect_error("[1", C, "json: offset 2: expected ',' or ']' in an array, found the end of the input");
  expect_error("[", C, "json: offset 1: expected a value, found the end of the input");
  expect_error("]", C, "json: offset 0: expected a value, found ']'");
  expect_error("{", C, "json: offset 1: expected a string key or '}', found the end of the input");
  expect_error("}", C, "json: offset 0: expected a value, found '}'");
  expect_error("{\"a\" 1}", C, "json: offset 5: expected ':' after an object key, found '1'");
  expect_error("{\"a\":}", C, "json: offset 5: expected a value, found '}'");
  expect_error("{1:2}", C, "json: offset 1: expected a string key or '}', found '1'");
  expect_error("{'a':2}", C, "json: offset 1: expected a string key or '}', found '''");
  expect_error("{\"a\":1,}", C, "json: offset 7: expected a string key after ',', found '}'");
  expect_error("{\"a\":1 \"b\":2}", C, "json: offset 7: expected ',' or '}' in an object, found '\"'");
  expect_error("{\"a\":1", C, "json: offset 6: expected ',' or '}' in an object, found the end of the input");
  expect_error("[1]]", C, "json: offset 3: expected nothing after the value, found ']'");
  expect_error("{\"a\":1}{}", C, "json: offset 7: expected nothing after the value, found '{'");
  expect_error("[1] x", C, "json: offset 4: expected nothing after the value, found 'x'");
  expect_error("/* c */ 1", C, "json: offset 0: expected a value, found '/'");
  expect_error("\xef\xbb\xbf{}", C, "json: offset 0: expected a value, found byte 0xEF");
  /* Only space, tab, newline and carriage return are whitespace. */
  expect_error("\f1", C, "json: offset 0: expected a value, found byte 0x0C");
  expect_error("1\v", C, "json: offset 1: expected nothing after the value, found byte 0x0B");
  expect_error("[1,\xc2\xa0 2]", C, "json: offset 3: expected a value, found byte 0xC2");
  expect_errorn("1\0", 2, C, "json: offset 1: expected nothing after the value, found byte 0x00");
  /* The length bounds the text: what follows it is never read. */
  json_doc *d = NULL;
  assert_int_equal(json_parse("[1]garbage", 3, NULL, &d), KILN_OK);
  json_free(d);
  assert_int_equal(json_parse("[1]", 2, NULL, &d), KILN_ERR_CORRUPT);
  assert_null(d);
  assert_int_equal(json_parse(NULL, 0, NULL, &d), KILN_ERR_CORRUPT);
  assert_int_equal(json_parse(NULL, 1, NULL, &d), KILN_ERR_INVALID_ARGUMENT);
  assert_int_equal(json_parse("1", 1, NULL, NULL), KILN_ERR_INVALID_ARGUMENT);
}

/* ------------------------------------------------------------ limits */

static char *nested(const char *open, const char *close, int depth) {
  size_t lo = strlen(open), lc = strlen(close);
  char *s = malloc((size_t)depth * (lo + lc) + 2);
  size_t n = 0;
  for (int i = 0; i < depth; i++, n += lo) memcpy(s + n, open, lo);
  s[n++] = '1';
  for (int i = 0; i < depth; i++, n += lc) memcpy(s + n, close, lc);
  s[n] = '\0';
  return s;
}

static void depth_and_value_limits(void **state) {
  (void)state;
  char *ok = nested("[", "]", 64), *deep = nested("[", "]", 65);
  json_free(parse_ok(ok));
  expect_error(deep, KILN_ERR_UNSUPPORTED, "json: offset 64: nesting deeper than 64 levels (the limit)");
  free(ok);
  free(deep);
  ok = nested("{\"k\":", "}", 64);
  deep = nested("{\"k\":", "}", 65);
  json_free(parse_ok(ok));
  expect_error(deep, KILN_ERR_UNSUPPORTED, "json: offset 320: nesting deeper than 64 levels (the limit)");
  free(ok);
  free(deep);
  /* Far deeper than any stack would survive without the limit. */
  deep = nested("[", "]", 100000);
  json_doc *d = NULL;
  assert_int_equal(json_parse(deep, strlen(deep), NULL, &d), KILN_ERR_UNSUPPORTED);
  free(deep);

  json_limits lim = json_default_limits();
  assert_int_equal(lim.max_depth, JSON_DEFAULT_MAX_DEPTH);
  assert_int_equal(lim.max_values, JSON_DEFAULT_MAX_VALUES);
  lim.max_depth = 2;
  assert_int_equal(json_parse("[[1]]", 5, &lim, &d), KILN_OK);
  json_free(d);
  assert_int_equal(json_parse("[[[1]]]", 7, &lim, &d), KILN_ERR_UNSUPPORTED);
  assert_string_equal(kiln_last_error(), "json: offset 2: nesting deeper than 2 levels (the limit)");
  lim.max_depth = 0;
  assert_int_equal(json_parse("5", 1, &lim, &d), KILN_OK);
  json_free(d);
  assert_int_equal(json_parse("[]", 2, &lim, &d), KILN_ERR_UNSUPPORTED);

  lim = json_default_limits();
  lim.max_values = 3;
  assert_int_equal(json_parse("[1,2]", 5, &lim, &d), KILN_OK);
  json_free(d);
  assert_int_equal(json_parse("{\"a\":1,\"b\":[]}", 14, &lim, &d), KILN_OK);
  json_free(d);
  assert_int_equal(json_parse("[1,2,3]", 7, &lim, &d), KILN_ERR_UNSUPPORTED);
  assert_string_equal(kiln_last_error(), "json: offset 5: more than 3 values (the limit)");
  assert_null(d);
}

/* ------------------------------------------------------------ objects */

static void duplicate_keys_and_lookup(void **state) {
  (void)state;
  size_t at = 99;
  json_doc *d = parse_ok("{\"a\":1,\"b\":2,\"a\":3,\"b\":4}");
  assert_true(json_object_duplicate(json_root(d), &at));
  assert_int_equal(at, 2);
  int64_t v = 0;
  assert_int_equal(json_get_int64(json_object_get(json_root(d), "a"), &v), JSON_INT_OK);
  assert_int_equal(v, 1); /* the first one */
  json_free(d);
  d = parse_ok("{\"a\":1,\"ab\":2,\"\":3,\"b\":{\"x\":1,\"x\":2}}");
  assert_false(json_object_duplicate(json_root(d), NULL));
  assert_true(json_object_duplicate(json_object_get(json_root(d), "b"), &at));
  assert_int_equal(at, 1);
  assert_int_equal(json_get_int64(json_object_get(json_root(d), ""), &v), JSON_INT_OK);
  assert_int_equal(v, 3);
  assert_int_equal(json_get_int64(json_object_get(json_root(d), "ab"), &v), JSON_INT_OK);
  assert_int_equal(v, 2);
  assert_null(json_object_getn(json_root(d), "abc", 3));
  assert_ptr_equal(json_object_getn(json_root(d), "abc", 0), json_object_get(json_root(d), ""));
  json_free(d);

  /* Large objects take the sorted index: build one of 3000 members whose
   * keys are prefixes of one another and out of order, with a repeat near
   * the end. */
  enum { N = 3000 };
  size_t cap = (size_t)N * 32 + 64, len = 0;
  char *text = malloc(cap);
  len += (size_t)snprintf(text + len, cap - len, "{");
  for (int i = 0; i < N; i++)
    len += (size_t)snprintf(text + len, cap - len, "%s\"k%d\":%d", i ? "," : "", (i * 7919) % N, i);
  len += (size_t)snprintf(text + len, cap - len, ",\"k17\":-1,\"k\":-2}");
  d = NULL;
  assert_int_equal(json_parse(text, len, NULL, &d), KILN_OK);
  const json_value *r = json_root(d);
  assert_int_equal(json_object_size(r), N + 2);
  for (int i = 0; i < N; i++) {
    char key[32];
    snprintf(key, sizeof key, "k%d", (i * 7919) % N);
    assert_int_equal(json_get_int64(json_object_get(r, key), &v), JSON_INT_OK);
    assert_int_equal(v, i);
  }
  assert_true(json_object_duplicate(r, &at));
  assert_int_equal(at, N);
  assert_int_equal(json_get_int64(json_object_get(r, "k"), &v), JSON_INT_OK);
  assert_int_equal(v, -2);
  assert_null(json_object_get(r, "k3000"));
  assert_null(json_object_get(r, "j"));
  assert_null(json_object_get(r, "l"));
  json_free(d);
  /* The same without the repeat: no duplicate. */
  len -= strlen(",\"k17\":-1,\"k\":-2}");
  len += (size_t)snprintf(text + len, cap - len, "}");
  assert_int_equal(json_parse(text, len, NULL, &d), KILN_OK);
  assert_false(json_object_duplicate(json_root(d), &at));
  json_free(d);
  free(text);
}

/* ------------------------------------------------------------ writing */

static void escaping(void **state) {
  (void)state;
  static const struct {
    const char *in;
    size_t len;
    const char *out;
  } cases[] = {
      {"plain", 5, "\"plain\""},
      {"", 0, "\"\""},
      {"q\"b\\s/", 6, "\"q\\\"b\\\\s/\""},
      {"\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\""},
      {"\x01\x1f\x7f", 3, "\"\\u0001\\u001f\x7f\""},
      {"a\0b", 3, "\"a\\u0000b\""},
      {"caf\xc3\xa9 \xf0\x9f\x98\x80", 10, "\"caf\xc3\xa9 \xf0\x9f\x98\x80\""},
      {"bad\xff\xc3", 5, "\"bad\\ufffd\\ufffd\""},
      {"\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char buf[128];
    size_t n = json_escape(buf, sizeof buf, cases[i].in, cases[i].len);
    assert_int_equal(n, strlen(cases[i].out));
    assert_string_equal(buf, cases[i].out);
    /* Whatever it writes parses back, to the input when that was UTF-8. */
    json_doc *d = parse_ok(buf);
    size_t len = 0;
    const char *s = json_string(json_root(d), &len);
    if (json_utf8_valid(cases[i].in, cases[i].len)) {
      assert_int_equal(len, cases[i].len);
      assert_memory_equal(s, cases[i].in, len);
    }
    json_free(d);
  }
  /* Like snprintf: truncated, terminated, the full length returned. */
  char small[5] = "xxxx";
  assert_int_equal(json_escape(small, sizeof small, "a\nbc", 4), 7);
  assert_string_equal(small, "\"a\\n");
  assert_int_equal(json_escape(NULL, 0, "a\nbc", 4), 7);
  char one[1] = {'x'};
  assert_int_equal(json_escape(one, 1, "abc", 3), 5);
  assert_int_equal(one[0], '\0');

  FILE *f = tmpfile();
  assert_non_null(f);
  assert_true(json_write_string(f, "tab\there \"q\""));
  rewind(f);
  char back[64] = {0};
  assert_true(fread(back, 1, sizeof back - 1, f) > 0);
  assert_string_equal(back, "\"tab\\there \\\"q\\\"\"");
  fclose(f);
  assert_false(json_write_string(NULL, "x"));

  /* Random byte strings: valid UTF-8 round-trips exactly, anything else
   * still gives valid JSON. */
  uint64_t rng = 5;
  for (int it = 0; it < 2000; it++) {
    char in[24], out[24 * 6 + 3];
    size_t n = (size_t)(tu_rng_next(&rng) % sizeof in);
    for (size_t i = 0; i < n; i++) {
      uint64_t r = tu_rng_next(&rng);
      in[i] = (char)(r % 3 == 0 ? r >> 8 & 0xff : r % 3 == 1 ? 0x20 + (r >> 8) % 0x60 : (r >> 8) % 0x20);
    }
    json_escape(out, sizeof out, in, n);
    json_doc *d = parse_ok(out);
    size_t len = 0;
    const char *s = json_string(json_root(d), &len);
    assert_true(json_utf8_valid(s, len));
    if (json_utf8_valid(in, n)) {
      assert_int_equal(len, n);
      assert_memory_equal(s, in, n);
    }
    json_free(d);
  }
}

static void utf8_validation(void **state) {
  (void)state;
  assert_true(json_utf8_valid("", 0));
  assert_true(json_utf8_valid("ascii \x7f", 7));
  assert_true(json_utf8_valid("\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 18));
  assert_true(json_utf8_valid("\xee\x80\x80", 3)); /* U+E000, just after the surrogates */
  assert_false(json_utf8_valid("\xc2", 1));
  assert_false(json_utf8_valid("\xc2\x41", 2));
  assert_false(json_utf8_valid("\xc0\x80", 2));
  assert_false(json_utf8_valid("\xe0\x9f\xbf", 3));
  assert_false(json_utf8_valid("\xed\xbf\xbf", 3));
  assert_false(json_utf8_valid("\xf0\x8f\xbf\xbf", 4));
  assert_false(json_utf8_valid("\xf4\x90\x80\x80", 4));
  assert_false(json_utf8_valid("\xf8\x88\x80\x80\x80", 5));
  assert_false(json_utf8_valid("\x80", 1));
}

/* ------------------------------------------------------------ allocation failures */

/* Each allocation of a parse fails in turn (arena chunks, the scratch
 * stack as it grows, an object's index, a long number's copy): the outcome
 * is success or KILN_ERR_OUT_OF_MEMORY, never a crash or a leak. */
static void allocation_failures(void **state) {
  (void)state;
  size_t cap = 200000, len = 0;
  char *text = malloc(cap);
  len += (size_t)snprintf(text + len, cap - len, "{\"n\":1.");
  for (int i = 0; i < 300; i++) text[len++] = '5';
  for (int i = 0; i < 2000; i++)
    len += (size_t)snprintf(text + len, cap - len, ",\"key%d\":[%d,\"s\\u00e9\",{}]", i, i);
  len += (size_t)snprintf(text + len, cap - len, "}");
  long fail_at;
  for (fail_at = 0;; fail_at++) {
    tu_fail_allocation(fail_at);
    json_doc *d = NULL;
    kiln_status st = json_parse(text, len, NULL, &d);
    tu_restore_allocator();
    assert_true(st == KILN_OK || st == KILN_ERR_OUT_OF_MEMORY);
    assert_true((st == KILN_OK) == (d != NULL));
    if (st == KILN_ERR_OUT_OF_MEMORY) assert_non_null(strstr(kiln_last_error(), "out of memory"));
    if (st == KILN_OK) assert_int_equal(json_object_size(json_root(d)), 2001);
    json_free(d);
    if (st == KILN_OK && tu_allocations() <= fail_at) break;
  }
  assert_true(fail_at > 10);
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define TEST(f) cmocka_unit_test_teardown(f, tu_release_tracked)
      TEST(every_type_through_the_accessors),
      TEST(string_escapes_and_utf8),
      TEST(string_errors),
      TEST(numbers),
      TEST(number_errors),
      TEST(numbers_ignore_the_locale),
      TEST(literal_and_structure_errors),
      TEST(depth_and_value_limits),
      TEST(duplicate_keys_and_lookup),
      TEST(escaping),
      TEST(utf8_validation),
      TEST(allocation_failures),
#undef TEST
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
