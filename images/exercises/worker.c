/*
 * Exercise 2's worker.c: the lab's worker (../worker/worker.c) with the
 * exercise's defaults. Run without arguments it takes worker.lock (which
 * holds its PID alone), reads no input and prints a "Heartbeat" line once a
 * second until SIGTERM or SIGINT. It also keeps worker.heartbeat fresh, which
 * is how the lab's monitor (monitor.py, run without arguments) tells a
 * frozen worker from a running one: a PID check alone cannot.
 */
#define WORKER_DEFAULT_ARGS "--idle", "--heartbeat-stdout", "--heartbeat-ms", "1000", \
    "--heartbeat-file", "worker.heartbeat", "--lock", "worker.lock", "--plain-lock"
#include "../worker/worker.c"
