/* Devices: where storage lives and which engine queue runs the work on it.
 *
 * A device is a backend (the operations below) plus a ready queue of the
 * default engine with workers of its own. The engine tracks dependencies
 * across all devices, so a transfer is an ordinary engine op that reads a
 * variable of one device and writes one of another; what a device adds is
 * where its work runs and how its memory is allocated and copied. Only the
 * CPU backend exists; docs/devices.md says how an accelerator's would fill
 * the same table (its queue's workers would enqueue kernels on a stream and
 * complete the op on an event). */
#ifndef KILN_DEVICE_H
#define KILN_DEVICE_H

#include "base/base.h"

typedef struct {
  /* Storage for n bytes; *actual is what free_block takes back. */
  void *(*alloc)(size_t n, size_t *actual);
  void (*free)(void *p, size_t actual);
  /* Copies between this device's memory and the host's, and within the
   * device; run on an engine worker, after the engine granted both sides. */
  void (*copy)(void *dst, const void *src, size_t n);
} device_backend;

/* Index of d in the device table, or -1 (with kiln_last_error naming it)
 * when kiln has no such device. */
int device_index(kiln_device d);
kiln_device device_of_index(int index);
/* The thread's current device (index), and a switch of it that returns
 * the one before (for buffers made on another tensor's device). */
int device_current(void);
int device_swap(int index);
/* Starts device index at first use (its queue and workers): its engine and
 * queue, or KILN_ERR_INTERNAL when the engine cannot start. */
kiln_status device_start(int index, kiln_engine **engine, int *queue);
/* The queue cross-device copies run on (started at first use), or -1. */
int device_copy_queue(kiln_engine *engine);
const device_backend *device_backend_of(int index);
/* Storage accounting: bytes handed out and given back on device index. */
void device_account(int index, int64_t bytes);

#endif
