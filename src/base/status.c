/* Status names and texts, generated from the one list in kiln.h, and the
 * thread-local message behind kiln_last_error. */
#include <stdio.h>
#include <string.h>

#include "base/base.h"

static const char *const status_names[] = {
#define NAME_(name, text) #name,
    KILN_STATUS_LIST(NAME_)
#undef NAME_
};
static const char *const status_texts[] = {
#define TEXT_(name, text) text,
    KILN_STATUS_LIST(TEXT_)
#undef TEXT_
};
_Static_assert(sizeof(status_names) / sizeof(status_names[0]) == KILN_STATUS_COUNT, "status list");

const char *kiln_status_name(kiln_status s) {
  return (unsigned)s < KILN_STATUS_COUNT ? status_names[s] : "unknown status";
}

const char *kiln_status_str(kiln_status s) {
  return (unsigned)s < KILN_STATUS_COUNT ? status_texts[s] : "unknown status";
}

static _Thread_local char last_error[KILN_ERROR_MAX];
static _Thread_local kiln_status last_status;

const char *kiln_last_error(void) { return last_error; }
const char *kiln_version(void) { return KILN_VERSION_STRING; }
kiln_status kiln_last_status(void) { return last_status; }

void kiln_error_clear(void) {
  last_error[0] = '\0';
  last_status = KILN_OK;
}

kiln_status kiln_verrorf(kiln_status status, const char *fmt, va_list ap) {
  /* Through a local buffer, so kiln_last_error() may be one of the
   * arguments (as when a message is wrapped with more context). */
  char msg[KILN_ERROR_MAX];
  vsnprintf(msg, sizeof msg, fmt, ap);
  memcpy(last_error, msg, sizeof msg);
  last_status = status;
  return status;
}

kiln_status kiln_errorf(kiln_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kiln_verrorf(status, fmt, ap);
  va_end(ap);
  return status;
}

const char *kiln_printable(char *buf, const char *s, size_t len) {
  size_t n = len < 64 ? len : 64;
  if (n < len)
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
  for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
  if (n < len) {
    memcpy(buf + n, "...", 3);
    n += 3;
  }
  buf[n] = '\0';
  return buf;
}

char *kiln_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
  size_t used = 0;
  if (cap == 0) return buf;
  buf[0] = '\0';
  used += (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < ndim && used < cap; i++)
    used += (size_t)snprintf(buf + used, cap - used, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (used < cap) snprintf(buf + used, cap - used, "]");
  return buf;
}
