/*
 * cpu_pool.h: a fixed pthreads worker pool for the CPU backend (internal).
 *
 * kf_cpu_pool_run() runs fn(arg, ith, nth) once for every ith in [0, nth) and returns when all
 * have finished; the calling thread takes ith = 0, so a pool of n threads starts n - 1 workers.
 * Work is split by the callee from (ith, nth), which keeps dispatch to one wake-up per op.
 * Workers spin briefly before sleeping on a condition variable: consecutive ops of a forward
 * pass follow each other within microseconds, and a futex wake-up per op would dominate the
 * decode of small models.
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
/* pool NULL runs fn(arg, 0, 1) inline. */
void kf_cpu_pool_run(kf_cpu_pool_t *pool, kf_cpu_task_fn fn, void *arg);

#endif /* KF_CPU_POOL_H */
