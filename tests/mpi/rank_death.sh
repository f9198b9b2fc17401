#!/bin/sh
# A rank that stops (stall) or dies (exit) must end the job with an error
# within a bound, never hang. usage: rank_death.sh RANK_DEATH stall|exit
set -u
prog=$1
mode=$2
out=$(KILN_KVSTORE_TIMEOUT=3 timeout 60 mpirun -np 2 "$prog" "$mode" 2>&1)
rc=$?
printf '%s\n' "$out"
if [ "$rc" -eq 124 ]; then
  echo "the job hung" >&2
  exit 1
fi
if [ "$rc" -eq 0 ]; then
  echo "the job succeeded without one of its ranks" >&2
  exit 1
fi
if [ "$mode" = stall ]; then
  # kiln's own message, from rank 0, naming what timed out.
  printf '%s\n' "$out" | grep -q "rank 0: KILN_ERR_IO: .*allreduce of keys 0..0 (1000 values) made no progress" || {
    echo "rank 0 did not report the stalled allreduce" >&2
    exit 1
  }
fi
echo "job ended with status $rc"
