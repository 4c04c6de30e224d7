/*
 * Exercise 3's naive_worker.c: the lab's worker (../worker/worker.c) in its
 * naive mode. It creates naive.lock (holding its PID) without flock, answers
 * each reading on stdin with n,n*n, and has no signal handler: on 999 it
 * segfaults and naive.lock stays behind, the stale lock the exercise is about.
 */
#define WORKER_DEFAULT_ARGS "--mode", "naive", "--lock", "naive.lock", "--plain-lock"
#include "../worker/worker.c"
