/*
 * cpu_pool.c: the CPU backend's worker pool (see cpu_pool.h).
 *
 * A generation counter publishes each task: the caller stores fn/arg, bumps `gen` with release
 * order and wakes sleepers; workers acquire `gen`, run their share and count `pending` down.
 * Both waits spin first and fall back to a condition variable so an idle engine sleeps.
 */
#include "cpu_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KF_CPU_RELAX() _mm_pause()
#else
#define KF_CPU_RELAX() ((void)0)
#endif

/* Roughly 0.1-0.5 ms of spinning before sleeping: longer than the gap between two ops of one
 * forward pass, short enough not to burn a core between requests. */
#define KF_POOL_SPIN 8000

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
    atomic_uint gen;
    atomic_int pending;
    atomic_int stop;
    kf_cpu_task_fn fn;
    void *arg;
};

static void *
kf_cpu_pool_main(void *p)
{
    kf_cpu_worker_t *wk = p;
    kf_cpu_pool_t *pool = wk->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&pool->gen, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&pool->stop, memory_order_acquire)) {
            if (++spins < KF_POOL_SPIN) {
                KF_CPU_RELAX();
                continue;
            }
            pthread_mutex_lock(&pool->mu);
            while (atomic_load(&pool->gen) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->cv_work, &pool->mu);
            pthread_mutex_unlock(&pool->mu);
        }
        if (atomic_load_explicit(&pool->stop, memory_order_acquire))
            return NULL;
        seen = g;
        pool->fn(pool->arg, wk->ith, pool->n);
        if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
            /* Last one out wakes the caller; taking the lock closes the lost-wakeup window. */
            pthread_mutex_lock(&pool->mu);
            pthread_cond_signal(&pool->cv_done);
            pthread_mutex_unlock(&pool->mu);
        }
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
    atomic_init(&pool->pending, 0);
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

void
kf_cpu_pool_run(kf_cpu_pool_t *pool, kf_cpu_task_fn fn, void *arg)
{
    if (!pool || pool->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    atomic_store_explicit(&pool->pending, pool->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&pool->mu);
    atomic_fetch_add_explicit(&pool->gen, 1, memory_order_release);
    pthread_cond_broadcast(&pool->cv_work);
    pthread_mutex_unlock(&pool->mu);

    fn(arg, 0, pool->n);

    int spins = 0;
    while (atomic_load_explicit(&pool->pending, memory_order_acquire) != 0) {
        if (++spins < KF_POOL_SPIN) {
            KF_CPU_RELAX();
            continue;
        }
        pthread_mutex_lock(&pool->mu);
        while (atomic_load(&pool->pending) != 0)
            pthread_cond_wait(&pool->cv_done, &pool->mu);
        pthread_mutex_unlock(&pool->mu);
    }
}
