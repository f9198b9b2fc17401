/* The single allocation hook. Every allocation of kiln goes through
 * kiln_alloc, so tests can make the Nth allocation fail and prove that
 * nothing leaks or crashes. Alignment is KILN_ALIGN, which suits AVX-512 and
 * cache lines. */
#include <pthread.h>
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

static void block_cache_flush(void);

void kiln_set_allocator(kiln_alloc_fn alloc, kiln_free_fn free_fn, void *user) {
  block_cache_flush(); /* cached blocks belong to the old hook */
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

/* glibc serves alignments up to 16 from its per-thread cache, but a 64-byte
 * posix_memalign takes the slow path that splits a larger chunk: for the
 * tensor header of a small eager op that was a quarter of the call. */
void *kiln_alloc_small(size_t size) {
  void *p = alloc_hook(size, 16, hook_user);
  if (p) memset(p, 0, size);
  return p;
}

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

/* A cache of freed tensor storage blocks, reused by the next tensor of the
 * same size. Two costs it removes:
 * - glibc serves blocks above its mmap threshold (at most 32 MiB) with a
 *   fresh mmap each time, so an eager loop over big tensors would
 *   page-fault and zero every output on every call;
 * - the engine frees storage on a worker while the caller allocates it:
 *   glibc's cross-thread frees took a third of a small eager op.
 * It is small and bounded: a few dozen blocks and a byte cap. Sizes are
 * rounded (64 bytes below CACHE_BIG_BYTES, 64 KiB above) so that near-equal
 * requests share blocks. */
enum { CACHE_SLOTS = 64 };
#define CACHE_BIG_BYTES KILN_BLOCK_CACHE_MIN
#define CACHE_MAX_TOTAL ((size_t)512 << 20)

static struct {
  pthread_mutex_t lock;
  void *ptr[CACHE_SLOTS];
  size_t size[CACHE_SLOTS];
  uint64_t stamp[CACHE_SLOTS]; /* when it came in: the oldest goes first */
  uint64_t clock;
  size_t total;
} block_cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Small blocks (the storage of a small eager op, header and data in one)
 * have free lists of their own, one per 64-byte size class, linked through
 * the blocks: an eager loop keeps up to the engine's back-pressure limit
 * (256 ops) of them in flight, more than the slots hold, and a full slot
 * cache searched for its oldest block on every free and sent the block to
 * a 64-byte-aligned malloc on every miss, half the engine worker's time of
 * `y = x + 1`. Bounded in count per class and in bytes overall. */
enum { SMALL_CLASSES = 64, SMALL_PER_CLASS = 512 };
#define SMALL_MAX_BYTES ((size_t)SMALL_CLASSES * 64)
#define SMALL_MAX_TOTAL ((size_t)8 << 20)

static struct {
  void *head[SMALL_CLASSES]; /* each block's first word links the next */
  int count[SMALL_CLASSES];
  size_t total;
} small_blocks; /* under block_cache.lock */

static size_t cache_round(size_t size) {
  size_t unit = size < CACHE_BIG_BYTES ? 64 : (size_t)64 << 10;
  return (size + unit - 1) & ~(unit - 1);
}

void *kiln_alloc_block(size_t size, size_t *actual) {
  size_t want = cache_round(size);
  *actual = want;
  pthread_mutex_lock(&block_cache.lock);
  if (want && want <= SMALL_MAX_BYTES) {
    int c = (int)(want / 64) - 1;
    void *p = small_blocks.head[c];
    if (p) {
      memcpy(&small_blocks.head[c], p, sizeof(void *));
      small_blocks.count[c]--;
      small_blocks.total -= want;
    }
    pthread_mutex_unlock(&block_cache.lock);
    return p ? p : kiln_alloc(want);
  }
  for (int i = 0; i < CACHE_SLOTS; i++) {
    if (block_cache.ptr[i] && block_cache.size[i] == want) {
      void *p = block_cache.ptr[i];
      block_cache.ptr[i] = NULL;
      block_cache.total -= want;
      pthread_mutex_unlock(&block_cache.lock);
      return p;
    }
  }
  pthread_mutex_unlock(&block_cache.lock);
  return kiln_alloc(want);
}

/* A freed block goes into the cache, making room by freeing the blocks
 * that came in first: a cache full of sizes no longer asked for (the last
 * batch of an epoch, an evaluation's) would otherwise send every later
 * block back to mmap, a page fault per page on each use. */
void kiln_free_block(void *ptr, size_t size) {
  if (!ptr) return;
  if (size != cache_round(size) || size > CACHE_MAX_TOTAL) {
    kiln_free(ptr);
    return;
  }
  void *evicted[CACHE_SLOTS];
  int n_evicted = 0, slot = -1;
  pthread_mutex_lock(&block_cache.lock);
  if (size && size <= SMALL_MAX_BYTES) {
    int c = (int)(size / 64) - 1;
    bool keep = small_blocks.count[c] < SMALL_PER_CLASS && small_blocks.total + size <= SMALL_MAX_TOTAL;
    if (keep) {
      memcpy(ptr, &small_blocks.head[c], sizeof(void *));
      small_blocks.head[c] = ptr;
      small_blocks.count[c]++;
      small_blocks.total += size;
    }
    pthread_mutex_unlock(&block_cache.lock);
    if (!keep) kiln_free(ptr);
    return;
  }
  /* The common case, a free slot and room, needs no search for the oldest
   * block. */
  if (block_cache.total + size <= CACHE_MAX_TOTAL)
    for (int i = 0; i < CACHE_SLOTS && slot < 0; i++)
      if (!block_cache.ptr[i]) slot = i;
  while (slot < 0) {
    int oldest = -1;
    for (int i = 0; i < CACHE_SLOTS; i++) {
      if (!block_cache.ptr[i]) {
        if (slot < 0) slot = i;
      } else if (oldest < 0 || block_cache.stamp[i] < block_cache.stamp[oldest]) {
        oldest = i;
      }
    }
    if (slot >= 0 && block_cache.total + size <= CACHE_MAX_TOTAL) break;
    slot = -1;
    evicted[n_evicted++] = block_cache.ptr[oldest];
    block_cache.total -= block_cache.size[oldest];
    block_cache.ptr[oldest] = NULL;
  }
  block_cache.ptr[slot] = ptr;
  block_cache.size[slot] = size;
  block_cache.stamp[slot] = ++block_cache.clock;
  block_cache.total += size;
  pthread_mutex_unlock(&block_cache.lock);
  for (int i = 0; i < n_evicted; i++) kiln_free(evicted[i]);
}

static void block_cache_flush(void) {
  pthread_mutex_lock(&block_cache.lock);
  for (int i = 0; i < CACHE_SLOTS; i++) {
    if (block_cache.ptr[i]) free_hook(block_cache.ptr[i], hook_user);
    block_cache.ptr[i] = NULL;
  }
  block_cache.total = 0;
  for (int c = 0; c < SMALL_CLASSES; c++) {
    while (small_blocks.head[c]) {
      void *p = small_blocks.head[c];
      memcpy(&small_blocks.head[c], p, sizeof(void *));
      free_hook(p, hook_user);
    }
    small_blocks.count[c] = 0;
  }
  small_blocks.total = 0;
  pthread_mutex_unlock(&block_cache.lock);
}

void kiln_release_cached_memory(void) { block_cache_flush(); }
