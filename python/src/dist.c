/* Devices and the key-value store from Python (kiln.cpu, NDArray.context,
 * kiln.kvstore, gluon.utils.split_and_load): thin wrappers over the C API.
 * A device crosses as its id (CPU devices are all kiln has); a store as a
 * capsule that frees it. Calls that may wait (a store's free, its
 * collectives) drop the GIL: no engine worker takes the GIL, so nothing
 * kiln waits for needs it. */
#include "kilnpy.h"

static int device_arg(PyObject *o, kiln_device *out) {
  long id = PyLong_AsLong(o);
  if (id == -1 && PyErr_Occurred()) return -1;
  if (id < 0 || id >= KILN_MAX_DEVICES) {
    char msg[96];
    snprintf(msg, sizeof msg, "device cpu(%ld): kiln has cpu(0) to cpu(%d)", id, KILN_MAX_DEVICES - 1);
    kp_raise(KILN_ERR_INVALID_ARGUMENT, msg);
    return -1;
  }
  *out = kiln_cpu((int)id);
  return 0;
}

static PyObject *f_set_device(PyObject *m, PyObject *id) {
  kiln_device d;
  if (device_arg(id, &d) < 0) return NULL;
  kiln_status st = kiln_set_device(d);
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}

static PyObject *f_current_device(PyObject *m, PyObject *unused) { return PyLong_FromLong(kiln_current_device().id); }

static PyObject *f_device_of(PyObject *m, PyObject *x) {
  kiln_tensor *t = kp_tensor_arg(x, "x");
  return t ? PyLong_FromLong(kiln_tensor_device(t).id) : NULL;
}

static PyObject *f_to_device(PyObject *m, PyObject *args) {
  PyObject *x, *id;
  kiln_device d;
  if (!PyArg_ParseTuple(args, "OO", &x, &id) || device_arg(id, &d) < 0) return NULL;
  kiln_tensor *t = kp_tensor_arg(x, "x");
  return t ? kp_wrap(kp_own(kiln_to_device(t, d))) : NULL;
}

static PyObject *f_device_memory(PyObject *m, PyObject *id) {
  kiln_device d;
  int64_t in_use, peak;
  if (device_arg(id, &d) < 0) return NULL;
  kiln_status st = kiln_device_memory(d, &in_use, &peak);
  if (st != KILN_OK) return kp_raise_last(st);
  return Py_BuildValue("LL", (long long)in_use, (long long)peak);
}

static PyObject *f_split_and_load(PyObject *m, PyObject *args) {
  PyObject *x, *ids;
  if (!PyArg_ParseTuple(args, "OO", &x, &ids)) return NULL;
  kiln_tensor *t = kp_tensor_arg(x, "data");
  PyObject *seq = t ? PySequence_Fast(ids, "devices must be a sequence") : NULL;
  if (!seq) return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  kiln_device devs[KILN_MAX_DEVICES];
  if (n < 1 || n > KILN_MAX_DEVICES) {
    Py_DECREF(seq);
    return PyErr_Format(PyExc_ValueError, "split_and_load: %zd devices (1 to %d)", n, KILN_MAX_DEVICES);
  }
  for (Py_ssize_t i = 0; i < n; i++)
    if (device_arg(PySequence_Fast_GET_ITEM(seq, i), &devs[i]) < 0) {
      Py_DECREF(seq);
      return NULL;
    }
  Py_DECREF(seq);
  kiln_tensor *parts[KILN_MAX_DEVICES];
  kiln_status st = kiln_split_and_load(t, (int)n, devs, parts);
  if (st != KILN_OK) return kp_raise_last(st);
  PyObject *out = PyList_New(n);
  for (Py_ssize_t i = 0; out && i < n; i++) {
    PyObject *a = kp_wrap(kp_own(parts[i]));
    if (!a) {
      for (Py_ssize_t k = i + 1; k < n; k++) kiln_tensor_release(kp_own(parts[k]));
      Py_CLEAR(out);
      break;
    }
    PyList_SET_ITEM(out, i, a);
  }
  return out;
}

/* ------------------------------------------------------------ the store */

static const char KV_CAPSULE[] = "kiln.kvstore";

static void kv_free(PyObject *cap) {
  kiln_kvstore *kv = PyCapsule_GetPointer(cap, KV_CAPSULE);
  Py_BEGIN_ALLOW_THREADS kiln_kvstore_free(kv);
  Py_END_ALLOW_THREADS
}

static kiln_kvstore *kv_arg(PyObject *o) { return PyCapsule_GetPointer(o, KV_CAPSULE); }

static PyObject *f_kvstore_new(PyObject *m, PyObject *kind) {
  const char *k = PyUnicode_AsUTF8(kind);
  if (!k) return NULL;
  kiln_kvstore *kv;
  Py_BEGIN_ALLOW_THREADS kv = kiln_kvstore_new(k);
  Py_END_ALLOW_THREADS
  if (!kv) return kp_raise_last(kiln_last_status());
  PyObject *cap = PyCapsule_New(kv, KV_CAPSULE, kv_free);
  if (!cap) kiln_kvstore_free(kv);
  return cap;
}

static PyObject *f_kvstore_rank(PyObject *m, PyObject *cap) {
  kiln_kvstore *kv = kv_arg(cap);
  return kv ? Py_BuildValue("ii", kiln_kvstore_rank(kv), kiln_kvstore_size(kv)) : NULL;
}

static PyObject *f_kvstore_init(PyObject *m, PyObject *args) {
  PyObject *cap, *x;
  int key;
  if (!PyArg_ParseTuple(args, "OiO", &cap, &key, &x)) return NULL;
  kiln_kvstore *kv = kv_arg(cap);
  kiln_tensor *t = kv ? kp_tensor_arg(x, "value") : NULL;
  if (!t) return NULL;
  kiln_status st = kiln_kvstore_init(kv, key, t);
  if (st != KILN_OK) return kp_raise_last(st);
  Py_RETURN_NONE;
}

/* push/pull(kv, keys [k], arrays [k][n], priority): the keys' arrays, n
 * per key (one per device). */
static PyObject *push_or_pull(PyObject *args, bool push) {
  PyObject *cap, *keys_o, *vals_o;
  int priority;
  if (!PyArg_ParseTuple(args, "OOOi", &cap, &keys_o, &vals_o, &priority)) return NULL;
  kiln_kvstore *kv = kv_arg(cap);
  PyObject *keys = kv ? PySequence_Fast(keys_o, "keys must be a sequence") : NULL;
  PyObject *vals = keys ? PySequence_Fast(vals_o, "values must be a sequence") : NULL;
  int *k = NULL;
  kiln_tensor **v = NULL;
  PyObject *result = NULL;
  if (!vals) goto done;
  Py_ssize_t nk = PySequence_Fast_GET_SIZE(keys), nv = 0;
  if (PySequence_Fast_GET_SIZE(vals) != nk) {
    PyErr_Format(PyExc_ValueError, "%zd keys but %zd value lists", nk, PySequence_Fast_GET_SIZE(vals));
    goto done;
  }
  for (Py_ssize_t i = 0; i < nk; i++) {
    Py_ssize_t len = PySequence_Length(PySequence_Fast_GET_ITEM(vals, i));
    if (len < 0) goto done;
    if (i == 0) nv = len;
    if (len != nv || len == 0) {
      PyErr_Format(PyExc_ValueError, "every key needs the same number (> 0) of arrays: key %zd has %zd, key 0 %zd", i,
                   len, nv);
      goto done;
    }
  }
  k = PyMem_Malloc(sizeof(int) * (size_t)(nk + 1));
  v = PyMem_Malloc(sizeof(kiln_tensor *) * (size_t)(nk * nv + 1));
  if (!k || !v) {
    PyErr_NoMemory();
    goto done;
  }
  for (Py_ssize_t i = 0; i < nk; i++) {
    long key = PyLong_AsLong(PySequence_Fast_GET_ITEM(keys, i));
    if (key == -1 && PyErr_Occurred()) goto done;
    k[i] = key < INT32_MIN ? INT32_MIN : key > INT32_MAX ? INT32_MAX : (int)key; /* the store refuses it by name */
    for (Py_ssize_t d = 0; d < nv; d++) {
      PyObject *a = PySequence_GetItem(PySequence_Fast_GET_ITEM(vals, i), d);
      kiln_tensor *t = a ? kp_tensor_arg(a, push ? "value" : "out") : NULL;
      Py_XDECREF(a); /* the list keeps it alive */
      if (!t) goto done;
      v[i * nv + d] = t;
    }
  }
  kiln_status st = push ? kiln_kvstore_push(kv, (int)nk, k, (int)nv, v, priority)
                        : kiln_kvstore_pull(kv, (int)nk, k, (int)nv, v, priority);
  if (st != KILN_OK) {
    kp_raise_last(st);
    goto done;
  }
  result = Py_NewRef(Py_None);
done:
  PyMem_Free(k);
  PyMem_Free(v);
  Py_XDECREF(keys);
  Py_XDECREF(vals);
  return result;
}

static PyObject *f_kvstore_push(PyObject *m, PyObject *args) { return push_or_pull(args, true); }
static PyObject *f_kvstore_pull(PyObject *m, PyObject *args) { return push_or_pull(args, false); }

PyMethodDef kp_dist_methods[] = {
    {"set_device", f_set_device, METH_O, NULL},
    {"current_device", f_current_device, METH_NOARGS, NULL},
    {"device_of", f_device_of, METH_O, NULL},
    {"to_device", f_to_device, METH_VARARGS, NULL},
    {"device_memory", f_device_memory, METH_O, NULL},
    {"split_and_load", f_split_and_load, METH_VARARGS, NULL},
    {"kvstore_new", f_kvstore_new, METH_O, NULL},
    {"kvstore_rank", f_kvstore_rank, METH_O, NULL},
    {"kvstore_init", f_kvstore_init, METH_VARARGS, NULL},
    {"kvstore_push", f_kvstore_push, METH_VARARGS, NULL},
    {"kvstore_pull", f_kvstore_pull, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};
