/* Base layer: the thread-local error message, the allocation hook and
 * overflow-checked size arithmetic. Everything above uses these; this layer
 * uses nothing of kiln. */
#ifndef KILN_BASE_H
#define KILN_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

#define KILN_ERROR_MAX 512

/* Records a message for kiln_last_error on this thread and returns status, so
 * a failing path reads `return kiln_errorf(KILN_ERR_SHAPE, "...")`. */
kiln_status kiln_errorf(kiln_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
kiln_status kiln_verrorf(kiln_status status, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void kiln_error_clear(void);
/* A string from outside (a name in a file) as it goes into a message: cut
 * at 64 bytes on a UTF-8 boundary with "..." after, control bytes as '?',
 * so a hostile name cannot fill a message or put raw control bytes in it.
 * buf holds KILN_PRINTABLE_MAX bytes. */
#define KILN_PRINTABLE_MAX 80
const char *kiln_printable(char *buf, const char *s, size_t len);

/* All allocations go through the hook set by kiln_set_allocator. Memory is
 * aligned to at least KILN_ALIGN bytes. kiln_alloc(0) returns a valid unique
 * pointer. kiln_alloc_or_error records an out-of-memory message. */
#define KILN_ALIGN 64
void *kiln_alloc(size_t size);
void *kiln_calloc(size_t count, size_t size);
void kiln_free(void *ptr);
char *kiln_strdup(const char *s);
/* Zeroed, aligned to 16 only (through the same hook): for small headers
 * that no kernel reads with vector loads. Freed with kiln_free. */
void *kiln_alloc_small(size_t size);

/* For tensor storage: freed blocks are reused from a small bounded cache
 * (see alloc.c for why). *actual receives the size to pass to
 * kiln_free_block. KILN_BLOCK_CACHE_MIN is where storage stops being
 * allocated together with its header. */
#define KILN_BLOCK_CACHE_MIN ((size_t)256 << 10)
void *kiln_alloc_block(size_t size, size_t *actual);
void kiln_free_block(void *ptr, size_t size);

/* Overflow-checked arithmetic: false when the result does not fit. */
static inline bool kiln_mul_size(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool kiln_mul_i64(int64_t a, int64_t b, int64_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool kiln_add_i64(int64_t a, int64_t b, int64_t *out) { return !__builtin_add_overflow(a, b, out); }

/* "[2, 3, 4]" into buf (always terminated); returns buf. */
char *kiln_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);
#define KILN_SHAPE_STR_MAX (KILN_MAX_DIMS * 22 + 4)

#define KILN_UNUSED(x) ((void)(x))

#endif
