/*
 * cpu_pool.c: the CPU backend's worker pool (see cpu_pool.h).
 *
 * A generation counter publishes each task: the caller stores fn/arg, opens the task
 * (`open_gen` = its generation), bumps `gen` and wakes sleepers if there are any. A worker that
 * sees a new generation registers in `active`, and runs fn only if that generation is still
 * open; the caller closes the task once its own share is done (run_dyn) or once every worker
 * has reported through `pending` (run), then waits for `active` to drain. Registering before
 * checking, and closing before reading `active`, with sequentially consistent atomics, means
 * either the worker sees the task closed or the caller sees the worker and waits for it: a
 * late worker never touches a task (or the caller's stack) that has already returned.
 * Waits spin, then yield, then (idle workers and run()'s caller) sleep on a condition variable.
 */
#include "cpu_pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KF_CPU_RELAX() _mm_pause()
#else
#define KF_CPU_RELAX() ((void)0)
#endif

/* Roughly 0.1-0.5 ms of spinning: longer than the gap between two ops of one forward pass. */
#define KF_POOL_SPIN 8000
/* Then this many sched_yield() rounds before sleeping: on a busy 2-core machine a spinning
 * waiter would take the core from the very thread it waits for; yielding hands it over but
 * still picks the next op up within microseconds when nothing else wants to run. */
#define KF_POOL_YIELD 200

typedef struct kf_cpu_worker {
    struct kf_cpu_pool *pool;
    int ith;
} kf_cpu_worker_t;

struct kf_cpu_pool {
    int n;
    int n_started;
    pthread_t *th;
    kf_cpu_worker_t *wk;
    pthread_mutex_t mu;
    pthread_cond_t cv_work;
    pthread_cond_t cv_done;
    atomic_uint gen;      /* last published generation (never 0 once published) */
    atomic_uint open_gen; /* generation workers may still join, 0 when none */
    atomic_int active;    /* workers between registering and leaving a task */
    atomic_int pending;   /* run(): workers that have not finished this task */
    atomic_int sleepers;  /* workers blocked (or about to block) on cv_work */
    atomic_int stop;
    kf_cpu_task_fn fn;
    void *arg;
};

/* Spin-then-yield step of a wait loop; returns 1 once both phases are used up. */
static inline int
kf_pool_backoff(int *spins)
{
    if (*spins < KF_POOL_SPIN) {
        (*spins)++;
        KF_CPU_RELAX();
        return 0;
    }
    if (*spins < KF_POOL_SPIN + KF_POOL_YIELD) {
        (*spins)++;
        sched_yield();
        return 0;
    }
    return 1;
}

static void *
kf_cpu_pool_main(void *p)
{
    kf_cpu_worker_t *wk = p;
    kf_cpu_pool_t *pool = wk->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load(&pool->gen)) == seen && !atomic_load(&pool->stop)) {
            if (!kf_pool_backoff(&spins))
                continue;
            pthread_mutex_lock(&pool->mu);
            atomic_fetch_add(&pool->sleepers, 1);
            while (atomic_load(&pool->gen) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->cv_work, &pool->mu);
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->mu);
            spins = 0;
        }
        if (atomic_load(&pool->stop))
            return NULL;
        seen = g;
        atomic_fetch_add(&pool->active, 1);
        if (atomic_load(&pool->open_gen) == g) {
            /* Still open: fn and arg are this task's and stay valid until we leave. */
            pool->fn(pool->arg, wk->ith, pool->n);
            if (atomic_fetch_sub(&pool->pending, 1) == 1) {
                /* Last one out wakes a sleeping run() caller; the lock closes the lost-wakeup
                 * window between its check of `pending` and its wait. */
                pthread_mutex_lock(&pool->mu);
                pthread_cond_signal(&pool->cv_done);
                pthread_mutex_unlock(&pool->mu);
            }
        }
        atomic_fetch_sub(&pool->active, 1);
    }
}

kf_err_t
kf_cpu_pool_new(int n_threads, kf_cpu_pool_t **out)
{
    KF_ASSERT(out);
    *out = NULL;
    if (n_threads <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = nc > 0 ? (int)nc : 1;
    }
    if (n_threads > 256)
        return KF_ERR_INVALID_ARG;
    kf_cpu_pool_t *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return KF_ERR_NOMEM;
    pool->n = n_threads;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv_work, NULL);
    pthread_cond_init(&pool->cv_done, NULL);
    atomic_init(&pool->gen, 0);
    atomic_init(&pool->open_gen, 0);
    atomic_init(&pool->active, 0);
    atomic_init(&pool->pending, 0);
    atomic_init(&pool->sleepers, 0);
    atomic_init(&pool->stop, 0);
    pool->th = calloc((size_t)n_threads, sizeof(pthread_t));
    pool->wk = calloc((size_t)n_threads, sizeof(kf_cpu_worker_t));
    if (!pool->th || !pool->wk) {
        kf_cpu_pool_destroy(pool);
        return KF_ERR_NOMEM;
    }
    for (int i = 1; i < n_threads; i++) {
        pool->wk[i].pool = pool;
        pool->wk[i].ith = i;
        if (pthread_create(&pool->th[i], NULL, kf_cpu_pool_main, &pool->wk[i])) {
            kf_cpu_pool_destroy(pool);
            return KF_ERR_NOMEM;
        }
        pool->n_started = i;
    }
    *out = pool;
    return KF_OK;
}

void
kf_cpu_pool_destroy(kf_cpu_pool_t *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->mu);
    atomic_store(&pool->stop, 1);
    pthread_cond_broadcast(&pool->cv_work);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 1; i <= pool->n_started; i++)
        pthread_join(pool->th[i], NULL);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv_work);
    pthread_cond_destroy(&pool->cv_done);
    free(pool->th);
    free(pool->wk);
    free(pool);
}

int
kf_cpu_pool_size(const kf_cpu_pool_t *pool)
{
    return pool ? pool->n : 1;
}

/* Publishes fn/arg as a new generation and wakes sleeping workers. */
static void
kf_pool_publish(kf_cpu_pool_t *pool, kf_cpu_task_fn fn, void *arg)
{
    pool->fn = fn;
    pool->arg = arg;
    atomic_store(&pool->pending, pool->n - 1);
    unsigned g = atomic_load(&pool->gen) + 1;
    if (g == 0) /* 0 means "closed" in open_gen */
        g = 1;
    atomic_store(&pool->open_gen, g);
    atomic_store(&pool->gen, g);
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mu);
        pthread_cond_broadcast(&pool->cv_work);
        pthread_mutex_unlock(&pool->mu);
    }
}

/* Closes the task to late workers and waits for those inside it; they are running, so this
 * only spins and yields. */
static void
kf_pool_close(kf_cpu_pool_t *pool)
{
    atomic_store(&pool->open_gen, 0);
    int spins = 0;
    while (atomic_load(&pool->active) != 0)
        if (kf_pool_backoff(&spins))
            sched_yield();
}

void
kf_cpu_pool_run(kf_cpu_pool_t *pool, kf_cpu_task_fn fn, void *arg)
{
    if (!pool || pool->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    kf_pool_publish(pool, fn, arg);
    fn(arg, 0, pool->n);
    int spins = 0;
    while (atomic_load(&pool->pending) != 0) {
        if (!kf_pool_backoff(&spins))
            continue;
        pthread_mutex_lock(&pool->mu);
        while (atomic_load(&pool->pending) != 0)
            pthread_cond_wait(&pool->cv_done, &pool->mu);
        pthread_mutex_unlock(&pool->mu);
    }
    kf_pool_close(pool);
}

void
kf_cpu_pool_run_dyn(kf_cpu_pool_t *pool, kf_cpu_task_fn fn, void *arg)
{
    if (!pool || pool->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    kf_pool_publish(pool, fn, arg);
    fn(arg, 0, pool->n);
    kf_pool_close(pool);
}
