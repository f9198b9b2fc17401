/* The CPython extension kiln._kiln: shared declarations of its three files
 * (module.c: errors, module functions, autograd; ndarray.c: the NDArray
 * type; nn.c: blocks, trainers, models, loaders).
 *
 * Ownership across the boundary: an NDArray owns exactly one reference to
 * its kiln_tensor. kiln hands new tensors to "the open scope"; the module
 * never opens one of its own except around a Python forward called back by
 * a block (py_forward in nn.c), and kiln's tracer opens one around forwards
 * too. So every tensor kiln returns passes through kp_own, which adds the
 * reference the module keeps when a scope will release kiln's. */
#ifndef KILNPY_H
#define KILNPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <kiln.h>

typedef struct {
  PyObject_HEAD
  kiln_tensor *t;
} kp_array;

extern PyTypeObject kp_array_type;

/* Nonzero while a Python forward runs inside kiln (a scope is then open on
 * this thread). Python code only runs on threads holding the GIL, and kiln
 * calls Python only from the thread that called kiln, so this is per
 * thread. */
extern _Thread_local int kp_callback_depth;

static inline kiln_tensor *kp_own(kiln_tensor *t) {
  return kp_callback_depth ? kiln_tensor_retain(t) : t;
}

static inline int kp_is_array(PyObject *o) { return Py_IS_TYPE(o, &kp_array_type) || PyObject_TypeCheck(o, &kp_array_type); }

/* Wraps t (the module's reference, which the array takes over). When t
 * failed at its call, raises the exception of its status with kiln's
 * message and releases t. */
PyObject *kp_wrap(kiln_tensor *t);
/* Raises the exception for status with message. Returns NULL. */
PyObject *kp_raise(kiln_status status, const char *message);
/* Raises for the last failing call on this thread (kiln_last_error). */
PyObject *kp_raise_last(kiln_status status);
/* A kiln_dtype from a name ("float32", ...); -1 with TypeError otherwise. */
int kp_dtype_from(PyObject *o, kiln_dtype *out);
/* A shape from an int or a sequence of ints. Returns ndim, -1 on error. */
int kp_shape_from(PyObject *o, int64_t *shape);
/* The tensor of an NDArray, else TypeError naming what (borrowed). */
kiln_tensor *kp_tensor_arg(PyObject *o, const char *what);
/* Axes from None (every axis: n 0), an int or a sequence. */
int kp_axes_from(PyObject *o, int *axes, int *n);

/* A Python exception raised inside a forward that kiln called: kept here
 * until the kiln call that led to it returns, then raised in its place. */
void kp_stash_exception(void);
int kp_restore_stashed(void);

/* A kiln dtype for a PEP 3118 format and item size; -1 when none fits. */
int kp_dtype_of_format(const char *fmt, Py_ssize_t itemsize, kiln_dtype *out);

/* Zero-copy exchange (exchange.c): DLPack export on arrays, imports from
 * DLPack and writable buffers, and the queue of releases that give memory
 * back to Python, run with the GIL (kp_drain_releases runs them now). */
PyObject *kp_array_dlpack(PyObject *self, PyObject *args, PyObject *kw);
PyObject *kp_array_dlpack_device(PyObject *self, PyObject *unused);
PyObject *kp_from_dlpack(PyObject *m, PyObject *obj);
PyObject *kp_share_buffer(PyObject *m, PyObject *obj);
void kp_drain_releases(void);

int kp_ndarray_init(PyObject *m);
extern PyMethodDef kp_nn_methods[];
extern PyMethodDef kp_nd_methods[];
extern PyMethodDef kp_dist_methods[]; /* dist.c: devices, the key-value store */

#define KP_FN(f) ((PyCFunction)(void (*)(void))(f))

#endif
