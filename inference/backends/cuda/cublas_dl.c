/*
 * cublas_dl.c: finds libcublas at run time and resolves the entry points of kf_cublas_api_t
 * (see cublas_dl.h for the search order and why the library is not linked at build time).
 */
#include "cublas_dl.h"
#include "kf_log.h"

#include <dlfcn.h>
#include <glob.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t kf_cublas_mu = PTHREAD_MUTEX_INITIALIZER;
static kf_cublas_api_t kf_cublas;
static int kf_cublas_loaded;

/* The sonames, newest first: a CUDA 13 driver runs cuBLAS 12 too. */
static const char *const kf_cublas_names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};

/* Folders holding the library in the usual installs: the toolkit, then pip wheels (the
 * nvidia-cublas wheels put it in nvidia/cublas/lib, the CUDA 13 ones in nvidia/cu13/lib). */
static const char *const kf_cublas_dirs[] = {
    "/usr/local/cuda/lib64",     "/usr/local/cuda/targets/x86_64-linux/lib",
    "/usr/local/cuda-13/lib64",  "/usr/local/cuda-12/lib64",
    "/usr/lib/x86_64-linux-gnu",
};
static const char *const kf_cublas_globs[] = {
    "/usr/local/lib/python3*/dist-packages/nvidia/cu13/lib",
    "/usr/local/lib/python3*/dist-packages/nvidia/cublas/lib",
    "/usr/local/lib/python3*/site-packages/nvidia/cu13/lib",
    "/usr/local/lib/python3*/site-packages/nvidia/cublas/lib",
    "/usr/lib/python3*/dist-packages/nvidia/cu13/lib",
    "/usr/lib/python3*/dist-packages/nvidia/cublas/lib",
    "/opt/*/.venv/lib/python3*/site-packages/nvidia/cu13/lib",
    "/opt/*/.venv/lib/python3*/site-packages/nvidia/cublas/lib",
    "/opt/*/lib/python3*/site-packages/nvidia/cu13/lib",
    "/opt/*/lib/python3*/site-packages/nvidia/cublas/lib",
};

static const char *
dlerror_or(const char *fallback)
{
    const char *e = dlerror();
    return e ? e : fallback;
}

typedef struct kf_tried {
    char *buf;
    size_t size, len;
} kf_tried_t;

static void
kf_tried_add(kf_tried_t *t, const char *what)
{
    if (t->len + 3 >= t->size)
        return;
    int n = snprintf(t->buf + t->len, t->size - t->len, "%s%s", t->len ? ", " : "", what);
    if (n > 0)
        t->len += (size_t)n < t->size - t->len ? (size_t)n : t->size - t->len - 1;
}

/* Tries one file name or path; on success copies it into kf_cublas.path. */
static void *
kf_cublas_try(const char *name, kf_tried_t *t)
{
    void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (h)
        snprintf(kf_cublas.path, sizeof(kf_cublas.path), "%s", name);
    else
        kf_tried_add(t, name);
    return h;
}

static void *
kf_cublas_try_dir(const char *dir, kf_tried_t *t)
{
    char p[600];
    for (size_t i = 0; i < sizeof(kf_cublas_names) / sizeof(kf_cublas_names[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, kf_cublas_names[i]);
        void *h = dlopen(p, RTLD_NOW | RTLD_LOCAL);
        if (h) {
            snprintf(kf_cublas.path, sizeof(kf_cublas.path), "%.511s", p);
            return h;
        }
    }
    char d[600];
    snprintf(d, sizeof(d), "%s/libcublas.so*", dir);
    kf_tried_add(t, d);
    return NULL;
}

static void *
kf_cublas_open(kf_tried_t *t)
{
    void *h = NULL;
    const char *env = getenv("KINFER_CUBLAS_PATH");
    if (env && *env) {
        /* A file is taken as is; anything else is treated as a folder. */
        /* An explicit choice that fails is an error, not a cue to load another cuBLAS. */
        return strstr(env, ".so") ? kf_cublas_try(env, t) : kf_cublas_try_dir(env, t);
    }
    for (size_t i = 0; !h && i < sizeof(kf_cublas_names) / sizeof(kf_cublas_names[0]); i++)
        h = kf_cublas_try(kf_cublas_names[i], t);
    for (size_t i = 0; !h && i < sizeof(kf_cublas_dirs) / sizeof(kf_cublas_dirs[0]); i++)
        h = kf_cublas_try_dir(kf_cublas_dirs[i], t);
    for (size_t i = 0; !h && i < sizeof(kf_cublas_globs) / sizeof(kf_cublas_globs[0]); i++) {
        glob_t g;
        if (glob(kf_cublas_globs[i], GLOB_ONLYDIR, NULL, &g) == 0) {
            for (size_t j = 0; !h && j < g.gl_pathc; j++)
                h = kf_cublas_try_dir(g.gl_pathv[j], t);
            globfree(&g);
        }
        if (!h)
            kf_tried_add(t, kf_cublas_globs[i]);
    }
    return h;
}

kf_err_t
kf_cublas_load(const kf_cublas_api_t **out, char *errstr, size_t errstr_size)
{
    *out = NULL;
    pthread_mutex_lock(&kf_cublas_mu);
    if (kf_cublas_loaded) {
        *out = &kf_cublas;
        pthread_mutex_unlock(&kf_cublas_mu);
        return KF_OK;
    }
    const char *env_tried = getenv("KINFER_CUBLAS_PATH");
    if (env_tried && !*env_tried)
        env_tried = NULL;
    char tried[1536];
    kf_tried_t t = {.buf = tried, .size = sizeof(tried)};
    tried[0] = '\0';
    void *h = kf_cublas_open(&t);
    if (!h) {
        pthread_mutex_unlock(&kf_cublas_mu);
        /* The full list is long: the log gets it, the error a summary that fits. */
        kf_log(KF_LOG_WARN, "cuda", "cuBLAS not found; tried: %s", tried);
        if (env_tried)
            return kf_err_set(errstr, errstr_size, KF_ERR_UNSUPPORTED,
                              "cuBLAS not found at KINFER_CUBLAS_PATH=%s (%s)", env_tried,
                              dlerror_or("no such library"));
        return kf_err_set(errstr, errstr_size, KF_ERR_UNSUPPORTED,
                          "cuBLAS not found: tried libcublas.so.13/.so.12/.so through the "
                          "loader, /usr/local/cuda*/lib64 and pip's nvidia/{cublas,cu13}/lib "
                          "(set KINFER_CUBLAS_PATH to the library or its folder)");
    }
    /* Each slot is written through a void ** view of the function pointer: POSIX (dlsym)
     * guarantees that function and object pointers share one representation. */
    struct {
        const char *name;
        void **slot;
        int required;
    } syms[] = {
        {"cublasCreate_v2", (void **)&kf_cublas.create, 1},
        {"cublasDestroy_v2", (void **)&kf_cublas.destroy, 1},
        {"cublasSetStream_v2", (void **)&kf_cublas.set_stream, 1},
        {"cublasSetMathMode", (void **)&kf_cublas.set_math_mode, 1},
        {"cublasGemmEx", (void **)&kf_cublas.gemm_ex, 1},
        {"cublasSetWorkspace_v2", (void **)&kf_cublas.set_workspace, 0},
        {"cublasGetStatusString", (void **)&kf_cublas.status_string, 0},
    };
    for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
        *syms[i].slot = dlsym(h, syms[i].name);
        if (!*syms[i].slot && syms[i].required) {
            char path[sizeof(kf_cublas.path)];
            snprintf(path, sizeof(path), "%s", kf_cublas.path);
            memset(&kf_cublas, 0, sizeof(kf_cublas));
            dlclose(h);
            pthread_mutex_unlock(&kf_cublas_mu);
            return kf_err_set(errstr, errstr_size, KF_ERR_UNSUPPORTED,
                              "%s lacks the symbol %s (need cuBLAS 12 or newer)", path,
                              syms[i].name);
        }
    }
    kf_cublas_loaded = 1;
    *out = &kf_cublas;
    pthread_mutex_unlock(&kf_cublas_mu);
    return KF_OK;
}

const char *
kf_cublas_status_str(const kf_cublas_api_t *api, kf_cublas_status_t st)
{
    if (api && api->status_string)
        return api->status_string(st);
    switch (st) {
    case 0:
        return "CUBLAS_STATUS_SUCCESS";
    case 1:
        return "CUBLAS_STATUS_NOT_INITIALIZED";
    case 3:
        return "CUBLAS_STATUS_ALLOC_FAILED";
    case 7:
        return "CUBLAS_STATUS_INVALID_VALUE";
    case 8:
        return "CUBLAS_STATUS_ARCH_MISMATCH";
    case 13:
        return "CUBLAS_STATUS_EXECUTION_FAILED";
    case 14:
        return "CUBLAS_STATUS_INTERNAL_ERROR";
    case 15:
        return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
        return "cuBLAS error";
    }
}
