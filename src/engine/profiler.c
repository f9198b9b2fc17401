/* Chrome trace-event JSON: each op is a complete event ("ph": "X") on the
 * thread of the worker that ran it (tid 0 is a thread running work inline:
 * naive mode), with the time it waited since its push in the args. */
#include "engine/profiler.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  const char *name;
  int worker;
  int64_t push_ns, start_ns, end_ns;
} event;

struct kiln_profiler {
  pthread_mutex_t lock;
  char *path;
  event *events;
  size_t count, cap;
  int64_t origin_ns; /* the earliest push, so times start near 0 */
  kiln_profiler *next;
};

kiln_profiler *engine_profiler_new(const char *path) {
  if (!path || !*path) return NULL;
  kiln_profiler *p = kiln_calloc(1, sizeof *p);
  if (!p) return NULL;
  p->path = kiln_strdup(path);
  if (!p->path) {
    kiln_free(p);
    return NULL;
  }
  pthread_mutex_init(&p->lock, NULL);
  p->origin_ns = -1;
  return p;
}


void engine_profile_record(kiln_profiler *p, const char *name, int worker, int64_t push_ns, int64_t start_ns,
                           int64_t end_ns) {
  pthread_mutex_lock(&p->lock);
  if (p->count == p->cap) {
    size_t cap = p->cap ? 2 * p->cap : 4096;
    event *grown = kiln_alloc(cap * sizeof *grown);
    if (!grown) {
      pthread_mutex_unlock(&p->lock);
      return;
    }
    if (p->events) memcpy(grown, p->events, p->count * sizeof *grown);
    kiln_free(p->events);
    p->events = grown;
    p->cap = cap;
  }
  p->events[p->count++] = (event){name, worker, push_ns, start_ns, end_ns};
  if (p->origin_ns < 0 || push_ns < p->origin_ns) p->origin_ns = push_ns;
  pthread_mutex_unlock(&p->lock);
}

/* Op names are identifiers from the registry, but quote defensively. */
static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c < 0x20) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

kiln_status engine_profiler_write(kiln_profiler *p) {
  if (!p) return KILN_OK;
  pthread_mutex_lock(&p->lock);
  size_t n = strlen(p->path) + 32;
  char *tmp = kiln_alloc(n);
  if (!tmp) {
    pthread_mutex_unlock(&p->lock);
    return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "profiler: out of memory");
  }
  snprintf(tmp, n, "%s.tmp.%ld", p->path, (long)getpid());
  FILE *f = fopen(tmp, "w");
  kiln_status st = KILN_OK;
  if (!f) {
    st = kiln_errorf(KILN_ERR_IO, "profiler: cannot write %s", tmp);
  } else {
    fprintf(f, "{\"displayTimeUnit\": \"ns\", \"traceEvents\": [\n");
    fprintf(f, "{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": 1, \"args\": {\"name\": \"kiln engine\"}}");
    for (size_t i = 0; i < p->count; i++) {
      const event *e = &p->events[i];
      fprintf(f, ",\n{\"name\": ");
      json_string(f, e->name);
      /* Chrome traces count microseconds; keep the nanoseconds as fractions. */
      fprintf(f, ", \"ph\": \"X\", \"pid\": 1, \"tid\": %d, \"ts\": %.3f, \"dur\": %.3f, \"args\": {\"queued_us\": %.3f}}",
              e->worker, (double)(e->start_ns - p->origin_ns) / 1000.0, (double)(e->end_ns - e->start_ns) / 1000.0,
              (double)(e->start_ns - e->push_ns) / 1000.0);
    }
    fprintf(f, "\n]}\n");
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, p->path) != 0) {
      remove(tmp);
      st = kiln_errorf(KILN_ERR_IO, "profiler: cannot write %s", p->path);
    }
  }
  kiln_free(tmp);
  pthread_mutex_unlock(&p->lock);
  return st;
}

kiln_profiler *engine_profiler_next(const kiln_profiler *p) { return p->next; }
void engine_profiler_set_next(kiln_profiler *p, kiln_profiler *next) { p->next = next; }

void engine_profiler_free(kiln_profiler *p) {
  if (!p) return;
  engine_profiler_write(p);
  engine_profiler_free_quietly(p);
}

void engine_profiler_free_quietly(kiln_profiler *p) {
  if (!p) return;
  kiln_free(p->events);
  kiln_free(p->path);
  pthread_mutex_destroy(&p->lock);
  kiln_free(p);
}
