/* The single allocation hook. Every allocation of kiln goes through
 * kiln_alloc, so tests can make the Nth allocation fail and prove that
 * nothing leaks or crashes. Alignment is KILN_ALIGN, which suits AVX-512 and
 * cache lines. */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

static void *default_alloc(size_t size, size_t align, void *user) {
  KILN_UNUSED(user);
  void *p = NULL;
  if (posix_memalign(&p, align, size ? size : 1) != 0) return NULL;
  return p;
}

static void default_free(void *ptr, void *user) {
  KILN_UNUSED(user);
  free(ptr);
}

static kiln_alloc_fn alloc_hook = default_alloc;
static kiln_free_fn free_hook = default_free;
static void *hook_user;

void kiln_set_allocator(kiln_alloc_fn alloc, kiln_free_fn free_fn, void *user) {
  if (!alloc || !free_fn) {
    alloc_hook = default_alloc;
    free_hook = default_free;
    hook_user = NULL;
    return;
  }
  alloc_hook = alloc;
  free_hook = free_fn;
  hook_user = user;
}

void *kiln_alloc(size_t size) { return alloc_hook(size, KILN_ALIGN, hook_user); }

void *kiln_calloc(size_t count, size_t size) {
  size_t total;
  if (!kiln_mul_size(count, size, &total)) return NULL;
  void *p = kiln_alloc(total);
  if (p) memset(p, 0, total);
  return p;
}

void kiln_free(void *ptr) {
  if (ptr) free_hook(ptr, hook_user);
}

char *kiln_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = kiln_alloc(n);
  if (p) memcpy(p, s, n);
  return p;
}
