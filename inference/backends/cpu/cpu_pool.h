/*
 * cpu_pool.h: a fixed pthreads worker pool for the CPU backend (internal).
 *
 * kf_cpu_pool_run() runs fn(arg, ith, nth) once for every ith in [0, nth) and returns when all
 * have finished; the calling thread takes ith = 0, so a pool of n threads starts n - 1 workers.
 * Work is split by the callee from (ith, nth), which keeps dispatch to one wake-up per op.
 * Workers spin briefly, then yield the CPU for a while, then sleep on a condition variable:
 * consecutive ops of a forward pass follow each other within microseconds, and a futex
 * wake-up per op would dominate the decode of small models; yielding keeps a waiting worker
 * from holding a core that a runnable thread (ours or another process's) could use.
 *
 * kf_cpu_pool_run_dyn() is the variant the kernels use: the caller does not wait for workers
 * that have not started yet. On a machine shared with other processes a worker may be
 * descheduled for milliseconds; with run() every op would wait for it, with run_dyn() the
 * caller takes the worker's share and only waits for workers already inside fn.
 *
 * Thread-safety: one caller at a time per pool; fn must not call back into the same pool.
 */
#ifndef KF_CPU_POOL_H
#define KF_CPU_POOL_H

#include "kf_err.h"

typedef struct kf_cpu_pool kf_cpu_pool_t;
typedef void (*kf_cpu_task_fn)(void *arg, int ith, int nth);

/* n_threads <= 0 means the number of online CPUs. */
kf_err_t kf_cpu_pool_new(int n_threads, kf_cpu_pool_t **out);
/* Accepts NULL. Joins the workers. */
void kf_cpu_pool_destroy(kf_cpu_pool_t *pool);
int kf_cpu_pool_size(const kf_cpu_pool_t *pool);
/* Runs fn(arg, ith, nth) for every ith in [0, nth) and returns when all have finished.
 * pool NULL runs fn(arg, 0, 1) inline. */
void kf_cpu_pool_run(kf_cpu_pool_t *pool, kf_cpu_task_fn fn, void *arg);

/* Runs fn(arg, 0, nth) on the calling thread and fn(arg, ith, nth) on each worker that picks the
 * task up before the caller's own call has returned; returns when every started call has
 * finished. Some ith may never run, so fn must take its work from a shared counter (not a
 * fixed share per ith): any subset of the calls, the caller's alone included, must complete
 * all of it. pool NULL runs fn(arg, 0, 1) inline. */
void kf_cpu_pool_run_dyn(kf_cpu_pool_t *pool, kf_cpu_task_fn fn, void *arg);

#endif /* KF_CPU_POOL_H */
