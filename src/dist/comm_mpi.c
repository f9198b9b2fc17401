/* comm.h over MPI. Each collective is the non-blocking form polled with
 * MPI_Test until done or until the timeout passes: a blocking one would
 * hang for ever when a peer dies, which is the failure this bounds. A
 * timed-out request cannot be cancelled (collectives cannot), so the
 * store reports the failure and the program is expected to end the job
 * (kiln_kvstore_abort). */
#include <sched.h>
#include <stdio.h>
#include <time.h>

#include "dist/comm.h"

#ifdef KILN_HAVE_MPI
#include <mpi.h>

struct comm {
  bool started_mpi;
};

static double seconds_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static kiln_status mpi_failure(int rc, const char *what) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "error %d", rc);
  return kiln_errorf(KILN_ERR_IO, "mpi: %s: %s", what, msg);
}

kiln_status comm_open(comm **out, int *rank, int *size) {
  *out = NULL;
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) return kiln_errorf(KILN_ERR_UNSUPPORTED, "kvstore mpi: MPI was already finalized in this process");
  comm *c = kiln_calloc(1, sizeof *c);
  if (!c) return kiln_errorf(KILN_ERR_OUT_OF_MEMORY, "kvstore mpi: out of memory");
  if (!initialized) {
    int provided = 0;
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) {
      kiln_free(c);
      return mpi_failure(rc, "MPI_Init_thread");
    }
    c->started_mpi = true;
    if (provided < MPI_THREAD_SERIALIZED) {
      comm_close(c);
      return kiln_errorf(KILN_ERR_UNSUPPORTED, "kvstore mpi: this MPI gives thread level %d, kiln needs SERIALIZED",
                         provided);
    }
  }
  /* Errors come back as codes, so a failed collective is a status. */
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, rank);
  MPI_Comm_size(MPI_COMM_WORLD, size);
  *out = c;
  return KILN_OK;
}

void comm_close(comm *c) {
  if (!c) return;
  if (c->started_mpi) MPI_Finalize();
  kiln_free(c);
}

void comm_abort(comm *c, int code) {
  KILN_UNUSED(c);
  MPI_Abort(MPI_COMM_WORLD, code);
}

static kiln_status finish(MPI_Request *req, double timeout_s, const char *what) {
  double deadline = seconds_now() + timeout_s;
  for (long spins = 0;; spins++) {
    int done = 0;
    int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return mpi_failure(rc, what);
    if (done) return KILN_OK;
    if (seconds_now() > deadline)
      return kiln_errorf(KILN_ERR_IO,
                         "mpi: %s made no progress for %.0f s: another rank died or stopped pushing "
                         "(KILN_KVSTORE_TIMEOUT sets the bound)",
                         what, timeout_s);
    /* Yield while the peer is probably just behind (the ranks share cores
     * with their engine workers, and a spinning thread would keep the one
     * that must answer off them); nap once it is clearly late, so a slow
     * peer does not cost a core. */
    if (spins < 20000) {
      sched_yield();
    } else {
      struct timespec nap = {0, 100000};
      nanosleep(&nap, NULL);
    }
  }
}

kiln_status comm_allreduce(comm *c, void *buf, int64_t count, kiln_dtype dt, double timeout_s, const char *what) {
  KILN_UNUSED(c);
  MPI_Datatype type = dt == KILN_F64 ? MPI_DOUBLE : MPI_FLOAT;
  int64_t done = 0;
  /* MPI counts are int: large buckets go in pieces. */
  while (done < count) {
    int64_t n = count - done < (1 << 30) ? count - done : (1 << 30);
    MPI_Request req;
    char *at = (char *)buf + done * (int64_t)kiln_dtype_size(dt);
    int rc = MPI_Iallreduce(MPI_IN_PLACE, at, (int)n, type, MPI_SUM, MPI_COMM_WORLD, &req);
    if (rc != MPI_SUCCESS) return mpi_failure(rc, what);
    kiln_status st = finish(&req, timeout_s, what);
    if (st != KILN_OK) return st;
    done += n;
  }
  return KILN_OK;
}

kiln_status comm_broadcast(comm *c, void *buf, size_t bytes, int root, double timeout_s, const char *what) {
  KILN_UNUSED(c);
  size_t done = 0;
  while (done < bytes) {
    size_t n = bytes - done < ((size_t)1 << 30) ? bytes - done : ((size_t)1 << 30);
    MPI_Request req;
    int rc = MPI_Ibcast((char *)buf + done, (int)n, MPI_BYTE, root, MPI_COMM_WORLD, &req);
    if (rc != MPI_SUCCESS) return mpi_failure(rc, what);
    kiln_status st = finish(&req, timeout_s, what);
    if (st != KILN_OK) return st;
    done += n;
  }
  return KILN_OK;
}

#else

kiln_status comm_open(comm **out, int *rank, int *size) {
  *out = NULL;
  *rank = 0, *size = 1;
  return kiln_errorf(KILN_ERR_UNSUPPORTED, "kvstore mpi: this kiln was built without MPI (install libopenmpi-dev and rebuild)");
}
void comm_close(comm *c) { KILN_UNUSED(c); }
void comm_abort(comm *c, int code) {
  KILN_UNUSED(c);
  KILN_UNUSED(code);
}
kiln_status comm_allreduce(comm *c, void *buf, int64_t count, kiln_dtype dt, double timeout_s, const char *what) {
  KILN_UNUSED(c), KILN_UNUSED(buf), KILN_UNUSED(count), KILN_UNUSED(dt), KILN_UNUSED(timeout_s);
  return kiln_errorf(KILN_ERR_UNSUPPORTED, "%s: built without MPI", what);
}
kiln_status comm_broadcast(comm *c, void *buf, size_t bytes, int root, double timeout_s, const char *what) {
  KILN_UNUSED(c), KILN_UNUSED(buf), KILN_UNUSED(bytes), KILN_UNUSED(root), KILN_UNUSED(timeout_s);
  return kiln_errorf(KILN_ERR_UNSUPPORTED, "%s: built without MPI", what);
}

#endif
