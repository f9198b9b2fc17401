/* The device table: the CPU backend, queues started at first use, and the
 * per-device storage accounting. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "device/device.h"
#include "engine/engine.h"

static void *cpu_alloc(size_t n, size_t *actual) { return kiln_alloc_block(n, actual); }
static void cpu_free(void *p, size_t actual) { kiln_free_block(p, actual); }
static void cpu_copy(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }

static const device_backend cpu_backend = {cpu_alloc, cpu_free, cpu_copy};

typedef struct {
  atomic_int queue_plus1; /* 0 until started */
  atomic_llong in_use, peak;
} device_state;

static device_state devices[KILN_MAX_DEVICES];
static atomic_int copy_queue_plus1;
static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local int current;

kiln_device kiln_cpu(int id) { return (kiln_device){KILN_DEVICE_CPU, id}; }

bool kiln_device_equal(kiln_device a, kiln_device b) { return a.type == b.type && a.id == b.id; }

const char *kiln_device_name(kiln_device d, char *buf, size_t cap) {
  if (buf && cap) snprintf(buf, cap, "%s(%d)", d.type == KILN_DEVICE_CPU ? "cpu" : "device", d.id);
  return buf;
}

int device_index(kiln_device d) {
  if (d.type != KILN_DEVICE_CPU || d.id < 0 || d.id >= KILN_MAX_DEVICES) {
    char name[32];
    kiln_errorf(KILN_ERR_INVALID_ARGUMENT, "device %s: kiln has cpu(0) to cpu(%d)", kiln_device_name(d, name, sizeof name),
                KILN_MAX_DEVICES - 1);
    return -1;
  }
  return d.id;
}

kiln_device device_of_index(int index) { return kiln_cpu(index); }

int device_current(void) { return current; }

int device_swap(int index) {
  int was = current;
  current = index;
  return was;
}

kiln_status kiln_set_device(kiln_device d) {
  int index = device_index(d);
  if (index < 0) return KILN_ERR_INVALID_ARGUMENT;
  current = index;
  return KILN_OK;
}

kiln_device kiln_current_device(void) { return device_of_index(current); }

const device_backend *device_backend_of(int index) {
  KILN_UNUSED(index);
  return &cpu_backend;
}

/* cpu(0) is the default engine's first queue, with the workers the thread
 * budget gives it; every other device gets one worker of its own, so k
 * devices run k ops at once whatever the budget (d2l 13.3's two devices). */
kiln_status device_start(int index, kiln_engine **engine, int *queue) {
  kiln_engine *e = kiln_default_engine();
  if (!e) return kiln_errorf(KILN_ERR_INTERNAL, "the default engine could not start: %s", kiln_last_error());
  *engine = e;
  device_state *d = &devices[index];
  int q = atomic_load_explicit(&d->queue_plus1, memory_order_acquire) - 1;
  if (q < 0) {
    pthread_mutex_lock(&start_lock);
    q = atomic_load_explicit(&d->queue_plus1, memory_order_relaxed) - 1;
    if (q < 0) {
      q = index == 0 ? 0 : engine_add_queue(e, 1);
      if (q >= 0) atomic_store_explicit(&d->queue_plus1, q + 1, memory_order_release);
    }
    pthread_mutex_unlock(&start_lock);
    if (q < 0) return kiln_errorf(KILN_ERR_INTERNAL, "cpu(%d) cannot start: %s", index, kiln_last_error());
  }
  *queue = q;
  return KILN_OK;
}

/* Copies get a queue (and a worker) of their own, as in MXNet: a transfer
 * then overlaps the computation on both of its devices (d2l 13.3). */
int device_copy_queue(kiln_engine *engine) {
  int q = atomic_load_explicit(&copy_queue_plus1, memory_order_acquire) - 1;
  if (q >= 0) return q;
  pthread_mutex_lock(&start_lock);
  q = atomic_load_explicit(&copy_queue_plus1, memory_order_relaxed) - 1;
  if (q < 0) {
    q = engine_add_queue(engine, 1);
    if (q >= 0) atomic_store_explicit(&copy_queue_plus1, q + 1, memory_order_release);
  }
  pthread_mutex_unlock(&start_lock);
  return q;
}

void device_account(int index, int64_t bytes) {
  device_state *d = &devices[index];
  long long now = atomic_fetch_add_explicit(&d->in_use, bytes, memory_order_relaxed) + bytes;
  long long peak = atomic_load_explicit(&d->peak, memory_order_relaxed);
  while (now > peak && !atomic_compare_exchange_weak_explicit(&d->peak, &peak, now, memory_order_relaxed,
                                                              memory_order_relaxed)) {
  }
}

kiln_status kiln_device_memory(kiln_device dev, int64_t *in_use, int64_t *peak) {
  int index = device_index(dev);
  if (index < 0) return KILN_ERR_INVALID_ARGUMENT;
  if (in_use) *in_use = atomic_load(&devices[index].in_use);
  if (peak) *peak = atomic_load(&devices[index].peak);
  return KILN_OK;
}

kiln_status kiln_device_reset_peak(kiln_device dev) {
  int index = device_index(dev);
  if (index < 0) return KILN_ERR_INVALID_ARGUMENT;
  atomic_store(&devices[index].peak, atomic_load(&devices[index].in_use));
  return KILN_OK;
}
