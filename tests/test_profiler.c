/* The profiler writes Chrome trace-event JSON with one complete event per
 * op, on the row of the worker that ran it, and stops when asked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static kiln_status noop(void *data) {
  (void)data;
  return KILN_OK;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  size_t got = fread(buf, 1, (size_t)n, f);
  buf[got] = '\0';
  fclose(f);
  return buf;
}

static int count(const char *text, const char *needle) {
  int n = 0;
  for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle)) n++;
  return n;
}

static void records_each_op_on_its_worker(void **state) {
  (void)state;
  char path[64];
  snprintf(path, sizeof path, "/tmp/kiln_profile_%ld.json", (long)getpid());
  kiln_engine_params p = {KILN_ENGINE_THREADED, 2, 2};
  kiln_engine *e = kiln_engine_new(&p);
  assert_non_null(e);
  kiln_engine_var *v = kiln_engine_new_var(e);
  kiln_engine_push(e, noop, NULL, NULL, NULL, 0, &v, 1, "before_recording", 0);
  assert_int_equal(kiln_engine_wait_all(e), KILN_OK);
  assert_int_equal(kiln_engine_profile(e, path), KILN_OK);
  for (int i = 0; i < 10; i++) kiln_engine_push(e, noop, NULL, NULL, NULL, 0, &v, 1, "recorded_op", 0);
  assert_int_equal(kiln_engine_wait_var(e, v), KILN_OK);
  assert_int_equal(kiln_engine_profile(e, NULL), KILN_OK);
  kiln_engine_push(e, noop, NULL, NULL, NULL, 0, &v, 1, "after_recording", 0);
  kiln_engine_delete_var(e, v, NULL, NULL);
  kiln_engine_free(e);

  char *text = read_file(path);
  assert_non_null(text);
  assert_non_null(strstr(text, "\"traceEvents\""));
  assert_int_equal(count(text, "\"name\": \"recorded_op\""), 10);
  assert_int_equal(count(text, "\"ph\": \"X\""), 10);
  assert_int_equal(count(text, "before_recording"), 0);
  assert_int_equal(count(text, "after_recording"), 0);
  assert_int_equal(count(text, "\"tid\": 0"), 0); /* threaded: only worker rows */
  assert_int_equal(count(text, "\"dur\": "), 10);
  free(text);
  unlink(path);
}

static void bad_arguments(void **state) {
  (void)state;
  assert_int_equal(kiln_engine_profile(NULL, "/tmp/x.json"), KILN_ERR_INVALID_ARGUMENT);
  assert_non_null(strstr(kiln_last_error(), "kiln_engine_profile"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(records_each_op_on_its_worker),
      cmocka_unit_test(bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
