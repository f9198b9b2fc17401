/* Scopes: per-thread autorelease pools. Handles created while a scope is
 * open are appended to one thread-local array; each open scope owns the tail
 * that starts at its mark. kiln_keep retains a handle and appends it tagged,
 * so the scope's end hands that reference to the enclosing scope (or to the
 * caller when none encloses it) instead of releasing it. */
#include <string.h>

#include "tensor/tensor.h"

typedef struct {
  uintptr_t *entries; /* kiln_tensor pointers; low bit set = kept */
  size_t count, cap;
  size_t *marks;
  size_t depth, marks_cap;
} scope_stack;

static _Thread_local scope_stack scopes;

static bool grow(void **arr, size_t *cap, size_t elem, size_t need) {
  if (need <= *cap) return true;
  size_t ncap = *cap ? *cap * 2 : 64;
  while (ncap < need) ncap *= 2;
  void *p = kiln_alloc(ncap * elem);
  if (!p) return false;
  if (*arr) memcpy(p, *arr, *cap * elem);
  kiln_free(*arr);
  *arr = p;
  *cap = ncap;
  return true;
}

static bool push_entry(uintptr_t e) {
  if (!grow((void **)&scopes.entries, &scopes.cap, sizeof(uintptr_t), scopes.count + 1)) return false;
  scopes.entries[scopes.count++] = e;
  return true;
}

kiln_status kiln_scope_begin(void) {
  if (!grow((void **)&scopes.marks, &scopes.marks_cap, sizeof(size_t), scopes.depth + 1))
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kiln_scope_begin: out of memory");
  scopes.marks[scopes.depth++] = scopes.count;
  return KILN_OK;
}

kiln_status kiln_scope_end(void) {
  if (scopes.depth == 0) return kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "kiln_scope_end: no scope is open on this thread");
  size_t mark = scopes.marks[--scopes.depth];
  size_t kept = mark;
  for (size_t i = mark; i < scopes.count; i++) {
    uintptr_t e = scopes.entries[i];
    if (e & 1u) {
      /* The kept reference moves to the enclosing scope's tail, which now
       * ends at `kept`; without an enclosing scope the caller owns it. */
      if (scopes.depth > 0) scopes.entries[kept++] = e & ~(uintptr_t)1u;
    } else {
      kiln_tensor_release((kiln_tensor *)e);
    }
  }
  scopes.count = kept;
  if (scopes.depth == 0) {
    kiln_free(scopes.entries);
    kiln_free(scopes.marks);
    memset(&scopes, 0, sizeof scopes);
  }
  return KILN_OK;
}

kiln_tensor *tensor_autorelease(kiln_tensor *t) {
  if (scopes.depth == 0 || t->immortal) return t;
  if (!push_entry((uintptr_t)t)) {
    /* Nothing would release a new handle: hand out the immortal one. */
    kiln_tensor_release(t);
    return tensor_out_of_memory();
  }
  return t;
}

kiln_tensor *kiln_keep(kiln_tensor *t) {
  if (!t || t->immortal || scopes.depth == 0) return t;
  kiln_tensor_retain(t);
  if (!push_entry((uintptr_t)t | 1u)) {
    /* Cannot record the hand-over: the caller keeps the extra reference,
     * which is what happens without an enclosing scope anyway. */
    return t;
  }
  return t;
}
