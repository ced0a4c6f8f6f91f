/*
 * cublas_dl.h: cuBLAS loaded at run time with dlopen (internal to inference/backends/cuda).
 *
 * The build machines have the CUDA compiler and runtime but no cuBLAS headers or libraries, so
 * the few entry points the backend needs are declared here (prototypes and enum values from the
 * cuBLAS documentation) and resolved from libcublas at backend init. Search order:
 *   1. $KINFER_CUBLAS_PATH: a library file, or a folder holding libcublas.so.13 / .so.12 / .so;
 *   2. libcublas.so.13, libcublas.so.12, libcublas.so through the dynamic loader
 *      (LD_LIBRARY_PATH, ldconfig cache);
 *   3. /usr/local/cuda{,-13,-12}/lib64 and targets/x86_64-linux/lib;
 *   4. Python wheels: site-packages / dist-packages nvidia/cublas/lib and nvidia/cu13/lib under
 *      /usr/lib, /usr/local/lib and /opt/(star)/.venv/lib.
 * Failure is KF_ERR_UNSUPPORTED with an errstr listing what was tried.
 *
 * Thread-safety: kf_cublas_load() may be called from several threads; the library stays loaded
 * for the life of the process (dlclose would race with other backends).
 */
#ifndef KF_CUBLAS_DL_H
#define KF_CUBLAS_DL_H

#include "kf_err.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Our own spellings of the cuBLAS types: no cuBLAS header exists here to clash with, and the
 * kf_ prefix keeps them apart from one if it ever does. Values are cuBLAS's. */
typedef struct kf_cublas_context *kf_cublas_handle_t;
typedef int kf_cublas_status_t; /* CUBLAS_STATUS_SUCCESS = 0 */
enum {
    KF_CUBLAS_OP_N = 0, /* CUBLAS_OP_N */
    KF_CUBLAS_OP_T = 1, /* CUBLAS_OP_T */
};
enum {
    KF_CUDA_R_32F = 0,   /* cudaDataType_t CUDA_R_32F */
    KF_CUDA_R_16F = 2,   /* CUDA_R_16F */
    KF_CUDA_R_16BF = 14, /* CUDA_R_16BF */
};
enum {
    KF_CUBLAS_COMPUTE_32F = 68,  /* cublasComputeType_t CUBLAS_COMPUTE_32F */
    KF_CUBLAS_GEMM_DEFAULT = -1, /* cublasGemmAlgo_t CUBLAS_GEMM_DEFAULT */
    KF_CUBLAS_DEFAULT_MATH = 0,  /* cublasMath_t CUBLAS_DEFAULT_MATH */
};

typedef struct kf_cublas_api {
    kf_cublas_status_t (*create)(kf_cublas_handle_t *handle);
    kf_cublas_status_t (*destroy)(kf_cublas_handle_t handle);
    kf_cublas_status_t (*set_stream)(kf_cublas_handle_t handle, void *stream);
    kf_cublas_status_t (*set_math_mode)(kf_cublas_handle_t handle, int mode);
    /* Optional (NULL when absent): cublasSetWorkspace_v2, cublasGetStatusString. */
    kf_cublas_status_t (*set_workspace)(kf_cublas_handle_t handle, void *ws, size_t bytes);
    const char *(*status_string)(kf_cublas_status_t status);
    kf_cublas_status_t (*gemm_ex)(kf_cublas_handle_t handle,
                                  int transa,
                                  int transb,
                                  int m,
                                  int n,
                                  int k,
                                  const void *alpha,
                                  const void *A,
                                  int Atype,
                                  int lda,
                                  const void *B,
                                  int Btype,
                                  int ldb,
                                  const void *beta,
                                  void *C,
                                  int Ctype,
                                  int ldc,
                                  int compute_type,
                                  int algo);
    char path[512]; /* the library that was loaded */
} kf_cublas_api_t;

/* Loads cuBLAS once per process and returns its table (borrowed, valid for the process).
 * KF_ERR_UNSUPPORTED naming every path tried when no library (or a required symbol) is found. */
kf_err_t kf_cublas_load(const kf_cublas_api_t **out, char *errstr, size_t errstr_size);

/* Text for a cuBLAS status (the library's own when it has cublasGetStatusString). */
const char *kf_cublas_status_str(const kf_cublas_api_t *api, kf_cublas_status_t st);

#ifdef __cplusplus
}
#endif

#endif /* KF_CUBLAS_DL_H */
