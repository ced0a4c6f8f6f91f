/*
 * run.c: `kinfer run`, every pipeline stage in one process on one machine: the HTTP API,
 * the enricher, one inference worker, the dispatcher and the audit indexer, each in its own
 * thread through its library entry point, all reading one kf_conf_t (one config file). They
 * meet only through Kafka topics, exactly as when they run as separate processes.
 *
 * Stop: SIGTERM/SIGINT set kf_kafka_stop, which every stage watches; each one stops in its own
 * way (the API finishes requests in flight, the worker commits finished results, ...) and
 * flushes. When one stage fails, the others are stopped too and the exit status is 1.
 */
#include "kf_api.h"
#include "kf_auditor.h"
#include "kf_dispatch.h"
#include "kf_enrich.h"
#include "kf_kafka.h"
#include "kf_log.h"
#include "kf_worker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kf_cmd_run(int argc, char **argv);

typedef kf_err_t (*kf_run_fn)(const kf_conf_t *conf,
                              volatile sig_atomic_t *stop,
                              char *errstr,
                              size_t errstr_size);

/* The enricher has new/run/destroy but no conf-level run function. */
static kf_err_t
kf_run_enrich(const kf_conf_t *conf, volatile sig_atomic_t *stop, char *errstr, size_t errstr_size)
{
    (void)stop; /* kf_enrich_run watches kf_kafka_stop, which is what `stop` points to */
    kf_enrich_t *e = NULL;
    kf_err_t err = kf_enrich_new(conf, &e, errstr, errstr_size);
    if (!err)
        err = kf_enrich_run(e, errstr, errstr_size);
    kf_enrich_destroy(e);
    return err;
}

typedef struct kf_run_stage {
    const char *name;
    const char *flag; /* --no-<name> */
    kf_err_t (*reg)(kf_conf_t *conf, char *errstr, size_t errstr_size);
    kf_run_fn run;
    int enabled;
    pthread_t thread;
    int started;
    const kf_conf_t *conf;
    kf_err_t err;
    char errstr[1024];
} kf_run_stage_t;

/* Registration order matters where stages share keys: the enricher's table holds most
 * topics.* keys, the API skips its shared table when topics.requests exists, and the worker
 * adds topics.control. Every table is registered even for disabled stages, so one config file
 * serves any combination. */
static kf_run_stage_t kf_run_stages[] = {
    {.name = "enrich", .flag = "--no-enrich", .reg = kf_enrich_conf_register, .run = kf_run_enrich},
    {.name = "api", .flag = "--no-api", .reg = kf_api_conf_register, .run = kf_api_run},
    {.name = "infer",
     .flag = "--no-infer",
     .reg = kf_worker_conf_register,
     .run = kf_worker_run_conf},
    {.name = "dispatch",
     .flag = "--no-dispatch",
     .reg = kf_dispatch_conf_register,
     .run = kf_dispatch_run},
    {.name = "audit", .flag = "--no-audit", .reg = kf_auditor_conf_register, .run = kf_auditor_run},
};
#define KF_RUN_NSTAGES (sizeof(kf_run_stages) / sizeof(kf_run_stages[0]))

static void *
kf_run_thread(void *arg)
{
    kf_run_stage_t *st = arg;
    kf_log(KF_LOG_INFO, "run", "stage %s starting", st->name);
    st->err = st->run(st->conf, &kf_kafka_stop, st->errstr, sizeof(st->errstr));
    if (st->err) {
        kf_log(KF_LOG_ERROR, "run", "stage %s failed (%s): %s; stopping the others", st->name,
               kf_err_str(st->err), st->errstr);
        kf_kafka_request_stop();
    } else {
        kf_log(KF_LOG_INFO, "run", "stage %s stopped", st->name);
    }
    return NULL;
}

static int
kf_run_usage(FILE *fp)
{
    fprintf(fp,
            "Usage: kinfer run [options]\n\n"
            "Runs the whole pipeline in one process: api, enrich, infer, dispatch and the\n"
            "audit indexer, each in its own thread, sharing one configuration. Stops all\n"
            "stages cleanly on SIGTERM/SIGINT (each one finishes or hands back its work and\n"
            "flushes); when one stage fails the others are stopped and the exit status is 1.\n\n"
            "Options:\n"
            "  --config FILE      key = value configuration file for every stage\n"
            "  --set KEY=VALUE    set one configuration key (repeatable)\n"
            "  -m, --model PATH   the worker's GGUF model (worker.model)\n"
            "  --no-api, --no-enrich, --no-infer, --no-dispatch, --no-audit\n"
            "                     leave a stage out (run it elsewhere)\n"
            "  --dump-config      print the effective configuration and exit\n"
            "  -h, --help         this text\n");
    return fp == stdout ? 0 : 2;
}

int
kf_cmd_run(int argc, char **argv)
{
    char errstr[1024];
    int rc = 2, dump = 0;
    const char *config = NULL;
    kf_conf_t *conf = kf_conf_new();
    for (size_t s = 0; s < KF_RUN_NSTAGES; s++) {
        kf_run_stages[s].enabled = 1;
        if (kf_run_stages[s].reg(conf, errstr, sizeof(errstr))) {
            fprintf(stderr, "kinfer run: configuration of stage %s: %s\n", kf_run_stages[s].name,
                    errstr);
            goto out;
        }
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            rc = kf_run_usage(stdout);
            goto out;
        }
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config = argv[++i];
    }
    if (config && kf_conf_load_file(conf, config, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer run: %s\n", errstr);
        goto out;
    }
    if (kf_conf_load_env(conf, NULL, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer run: %s\n", errstr);
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        int matched = 0;
        for (size_t s = 0; s < KF_RUN_NSTAGES; s++)
            if (!strcmp(a, kf_run_stages[s].flag)) {
                kf_run_stages[s].enabled = 0;
                matched = 1;
            }
        if (matched)
            continue;
        if (!strcmp(a, "--config") && next) {
            i++;
        } else if ((!strcmp(a, "--model") || !strcmp(a, "-m")) && next) {
            if (kf_conf_set(conf, "worker.model", argv[++i], errstr, sizeof(errstr))) {
                fprintf(stderr, "kinfer run: %s\n", errstr);
                goto out;
            }
        } else if (!strcmp(a, "--set") && next) {
            if (kf_conf_set_assignment(conf, argv[++i], errstr, sizeof(errstr))) {
                fprintf(stderr, "kinfer run: %s\n", errstr);
                goto out;
            }
        } else if (!strcmp(a, "--dump-config")) {
            dump = 1;
        } else {
            fprintf(stderr, "kinfer run: unknown option or missing value: '%s' (see --help)\n", a);
            goto out;
        }
    }
    kf_conf_apply_core(conf);
    if (dump) {
        kf_conf_dump(conf, stdout);
        rc = 0;
        goto out;
    }
    size_t enabled = 0;
    for (size_t s = 0; s < KF_RUN_NSTAGES; s++)
        enabled += kf_run_stages[s].enabled != 0;
    if (!enabled) {
        fprintf(stderr, "kinfer run: every stage is disabled; nothing to run\n");
        goto out;
    }
    if (kf_kafka_install_signal_handlers()) {
        fprintf(stderr, "kinfer run: cannot install signal handlers\n");
        rc = 1;
        goto out;
    }
    rc = 0;
    for (size_t s = 0; s < KF_RUN_NSTAGES; s++) {
        kf_run_stage_t *st = &kf_run_stages[s];
        if (!st->enabled)
            continue;
        st->conf = conf;
        if (pthread_create(&st->thread, NULL, kf_run_thread, st)) {
            fprintf(stderr, "kinfer run: cannot start a thread for stage %s\n", st->name);
            kf_kafka_request_stop();
            rc = 1;
            break;
        }
        st->started = 1;
    }
    /* Every stage returns once kf_kafka_stop is set (by a signal or a failing stage). */
    for (size_t s = 0; s < KF_RUN_NSTAGES; s++) {
        kf_run_stage_t *st = &kf_run_stages[s];
        if (!st->started)
            continue;
        pthread_join(st->thread, NULL);
        if (st->err) {
            fprintf(stderr, "kinfer run: stage %s: %s\n", st->name, st->errstr);
            rc = 1;
        }
    }
out:
    kf_conf_destroy(conf);
    return rc;
}
