/*
 * The parts of the CUDA backend that need no GPU (label gpu, but runs anywhere the backend is
 * built): the cuBLAS run-time loader's error when KINFER_CUBLAS_PATH names nothing loadable,
 * kf_backend_pick()'s mapping of --device values, and a clear KF_ERR_UNSUPPORTED (never a
 * crash) from kf_backend_new("cuda") on a machine without a device.
 */
#include "cublas_dl.h"
#include "kf_backend.h"
#include "kf_cuda.h"
#include "kf_kv.h"
#include "kf_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int kf_cmd_model_gen(int argc, char **argv);

#ifndef KF_TESTDATA_TOKENIZER
#define KF_TESTDATA_TOKENIZER "/work/shared/testdata/tokenizer"
#endif

static int n_fail;

#define CHECK(cond, ...)                                         \
    do {                                                         \
        if (!(cond)) {                                           \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fprintf(stderr, "\n");                               \
            n_fail++;                                            \
        }                                                        \
    } while (0)

int
main(void)
{
    char err[512];
    const kf_cublas_api_t *api = NULL;

    /* An explicit path that does not exist fails and names the path. */
    setenv("KINFER_CUBLAS_PATH", "/nonexistent/kinfer/libcublas.so.13", 1);
    kf_err_t e = kf_cublas_load(&api, err, sizeof(err));
    CHECK(e == KF_ERR_UNSUPPORTED, "loader returned %d", (int)e);
    CHECK(api == NULL, "api set on failure");
    CHECK(strstr(err, "/nonexistent/kinfer/libcublas.so.13") != NULL, "errstr: %s", err);
    /* A folder without the library: same. */
    setenv("KINFER_CUBLAS_PATH", "/nonexistent/kinfer", 1);
    e = kf_cublas_load(&api, err, sizeof(err));
    CHECK(e == KF_ERR_UNSUPPORTED && strstr(err, "KINFER_CUBLAS_PATH=/nonexistent/kinfer"),
          "folder: %d %s", (int)e, err);
    unsetenv("KINFER_CUBLAS_PATH");

    /* --device mapping. */
    CHECK(!strcmp(kf_backend_pick("cpu"), "cpu"), "cpu");
    CHECK(!strcmp(kf_backend_pick("cuda"), "cuda"), "cuda");
    CHECK(kf_backend_pick("gpu") == NULL, "unknown value accepted");
    CHECK(kf_backend_pick(NULL) == NULL, "NULL accepted");
    const char *a = kf_backend_pick("auto");
    int n_dev = kf_cuda_device_count();
    CHECK(n_dev >= 0, "device count %d", n_dev);
    CHECK(!strcmp(a, n_dev > 0 ? "cuda" : "cpu"), "auto -> %s with %d devices", a, n_dev);
    CHECK(kf_backend_available("cuda"), "cuda backend not registered");

    if (n_dev == 0) {
        /* Backend creation on a machine without a device: KF_ERR_UNSUPPORTED saying so. */
        const char *vd = getenv("KINFER_TESTDATA_TOKENIZER");
        char vocab[512], path[] = "/tmp/kf_cuda_loader_XXXXXX";
        snprintf(vocab, sizeof(vocab), "%s/ggml-vocab-qwen2.gguf",
                 vd && *vd ? vd : KF_TESTDATA_TOKENIZER);
        int fd = mkstemp(path);
        if (fd >= 0 && access(vocab, R_OK) == 0) {
            close(fd);
            char *argv[] = {"model-gen", "--arch", "qwen2",   "--vocab", vocab,
                            "--out",     path,     "--quiet", NULL};
            CHECK(kf_cmd_model_gen(8, argv) == 0, "model-gen failed");
            kf_model_t *model = NULL;
            kf_kv_t *kv = NULL;
            kf_backend_t *be = NULL;
            kf_kv_conf_t kc = {.budget_bytes = 1 << 20};
            CHECK(kf_model_load(path, &model, err, sizeof(err)) == KF_OK, "load: %s", err);
            CHECK(model && kf_kv_new(model, &kc, &kv, err, sizeof(err)) == KF_OK, "kv: %s", err);
            if (model && kv) {
                e = kf_backend_new("cuda", model, kv, NULL, &be, err, sizeof(err));
                CHECK(e == KF_ERR_UNSUPPORTED && be == NULL && strstr(err, "no CUDA device"),
                      "no device: %d %s", (int)e, err);
            }
            kf_backend_destroy(be);
            kf_kv_destroy(kv);
            kf_model_destroy(model);
            unlink(path);
        } else {
            if (fd >= 0) {
                close(fd);
                unlink(path);
            }
            printf("note: %s missing, no-device backend check not run\n", vocab);
        }
    }
    if (n_fail) {
        fprintf(stderr, "%d failure(s)\n", n_fail);
        return 1;
    }
    printf("loader and device selection checks passed (%d devices)\n", n_dev);
    return 0;
}
