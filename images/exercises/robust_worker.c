/*
 * Exercise 3's robust_worker.c: the lab's worker (../worker/worker.c) with
 * robust.lock (holding its PID) as its lock. On 999 it segfaults; its
 * SIGSEGV handler (async-signal-safe calls only) sends the answers it still
 * owes, removes robust.lock, writes an error to stderr and dies by SIGSEGV.
 */
#define WORKER_DEFAULT_ARGS "--lock", "robust.lock", "--plain-lock"
#include "../worker/worker.c"
