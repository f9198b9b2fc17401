/* The cross-process part of the key-value store: collectives of an
 * existing engine (Open MPI), not a home-made one. Called only from the
 * store's communication queue, whose single worker runs them one at a time
 * and in push order (MPI_THREAD_SERIALIZED, and collectives match by
 * order). Every call is bounded: a peer that stops answering makes it
 * fail after the timeout, naming what it was doing. */
#ifndef KILN_COMM_H
#define KILN_COMM_H

#include "base/base.h"

typedef struct comm comm;

/* Joins the job (initialising MPI unless the program did): rank and size
 * from the launcher. KILN_ERR_UNSUPPORTED when kiln was built without MPI. */
kiln_status comm_open(comm **out, int *rank, int *size);
/* Ends MPI if comm_open started it. */
void comm_close(comm *c);
void comm_abort(comm *c, int code);
/* In-place sum over all processes of count elements of dt (float32 or
 * float64). */
kiln_status comm_allreduce(comm *c, void *buf, int64_t count, kiln_dtype dt, double timeout_s, const char *what);
/* Root's bytes to every process. */
kiln_status comm_broadcast(comm *c, void *buf, size_t bytes, int root, double timeout_s, const char *what);

#endif
