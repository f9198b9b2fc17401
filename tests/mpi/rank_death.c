/* rank_death exit|stall: rank 1 leaves the job (exits at once) or stops
 * taking part (sleeps) while rank 0 sums a gradient with it through the
 * "mpi" store. Rank 0 must not hang: the push fails within
 * KILN_KVSTORE_TIMEOUT, the failure surfaces at the wait with kiln's
 * message, and rank 0 ends the job (kiln_kvstore_abort) with code 3. With
 * "exit", Open MPI's launcher may end rank 0 first; either way the job
 * ends, which the CTest timeout checks. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kiln.h"

int main(int argc, char **argv) {
  if (argc != 2 || (strcmp(argv[1], "exit") && strcmp(argv[1], "stall"))) {
    fprintf(stderr, "usage: rank_death exit|stall\n");
    return 2;
  }
  kiln_kvstore *kv = kiln_kvstore_new("mpi");
  if (!kv) {
    fprintf(stderr, "rank_death: %s\n", kiln_last_error());
    return 2;
  }
  int64_t shape[1] = {1000};
  kiln_tensor *g = kiln_ones(KILN_F32, 1, shape);
  int key = 0;
  if (kiln_kvstore_init(kv, key, g) != KILN_OK || kiln_waitall() != KILN_OK) {
    fprintf(stderr, "rank_death: init: %s\n", kiln_last_error());
    return 2;
  }
  if (kiln_kvstore_rank(kv) == 1) {
    if (!strcmp(argv[1], "exit")) _exit(0);
    sleep(600);
    return 0;
  }
  kiln_kvstore_push(kv, 1, &key, 1, &g, 0);
  kiln_kvstore_pull(kv, 1, &key, 1, &g, 0);
  kiln_status st = kiln_wait_to_read(g);
  if (st == KILN_OK) {
    fprintf(stderr, "rank_death: the sum completed without rank 1\n");
    return 1;
  }
  fprintf(stderr, "rank 0: %s: %s\n", kiln_status_name(st), kiln_last_error());
  kiln_kvstore_abort(kv, 3);
  return 1;
}
