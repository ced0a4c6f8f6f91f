/*
 * enrich_cmd.c: `kinfer enrich`, a thin wrapper over kf_enrich_new/run: configuration
 * (--config FILE, KINFER_* environment, --set KEY=VALUE), --dump-config, signal handling.
 */
#include "kf_enrich.h"

#include "kf_log.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int
kf_enrich_usage(FILE *fp)
{
    fprintf(fp, "Usage: kinfer enrich [options]\n\n"
                "Consumes InferenceRequests, loads their context from PostgreSQL, joins the\n"
                "latest market data and produces InferenceJobs (or failed InferenceResults),\n"
                "exactly once, until SIGINT/SIGTERM. Rendering rules: docs/enrich.md.\n\n"
                "Options:\n"
                "  --config FILE     key = value configuration file\n"
                "  --set KEY=VALUE   set one configuration key (repeatable)\n"
                "  --dump-config     print the effective configuration and exit\n"
                "Environment: KINFER_<KEY> for any key (KINFER_PG_DSN, KINFER_TOPICS_JOBS, ...);\n"
                "brokers from kafka.bootstrap.servers, else $KINFER_KAFKA_BROKERS.\n");
    return fp == stdout ? 0 : 2;
}

int
kf_cmd_enrich(int argc, char **argv)
{
    char errstr[1024];
    int rc = 2, dump = 0;
    const char *config = NULL;
    kf_enrich_t *e = NULL;
    kf_conf_t *conf = kf_conf_new();
    if (kf_enrich_conf_register(conf, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer enrich: %s\n", errstr);
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            rc = kf_enrich_usage(stdout);
            goto out;
        }
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config = argv[++i];
    }
    /* Sources in precedence order: file < environment < command line. */
    if ((config && kf_conf_load_file(conf, config, errstr, sizeof(errstr))) ||
        kf_conf_load_env(conf, NULL, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer enrich: %s\n", errstr);
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config") && i + 1 < argc) {
            i++;
        } else if (!strcmp(a, "--set") && i + 1 < argc) {
            if (kf_conf_set_assignment(conf, argv[++i], errstr, sizeof(errstr))) {
                fprintf(stderr, "kinfer enrich: %s\n", errstr);
                goto out;
            }
        } else if (!strcmp(a, "--dump-config")) {
            dump = 1;
        } else {
            fprintf(stderr, "kinfer enrich: unknown or incomplete option '%s'\n", a);
            kf_enrich_usage(stderr);
            goto out;
        }
    }
    kf_conf_apply_core(conf);
    if (dump) {
        kf_conf_dump(conf, stdout);
        rc = 0;
        goto out;
    }
    kf_kafka_install_signal_handlers();
    /* A service that is down at start (PostgreSQL restarting, broker not up yet) is waited
     * for, like an outage later on; configuration errors end the command. */
    for (unsigned delay = 1;; delay = delay < 16 ? delay * 2 : 30) {
        kf_err_t err = kf_enrich_new(conf, &e, errstr, sizeof(errstr));
        if (!err)
            break;
        if (!kf_err_is_retriable(err) || kf_kafka_stop) {
            fprintf(stderr, "kinfer enrich: %s\n", errstr);
            rc = 1;
            goto out;
        }
        kf_log(KF_LOG_WARN, "enrich", "cannot start (%s); retrying in %u s", errstr, delay);
        for (unsigned i = 0; i < delay * 10 && !kf_kafka_stop; i++)
            usleep(100000);
    }
    rc = 0;
    if (kf_enrich_run(e, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer enrich: %s\n", errstr);
        rc = 1;
    }
    kf_enrich_stats_t st;
    kf_enrich_get_stats(e, &st);
    kf_log(KF_LOG_INFO, "enrich",
           "stopped: %llu jobs, %llu failed, %llu dead-lettered, %llu retries",
           (unsigned long long)st.jobs, (unsigned long long)st.failed,
           (unsigned long long)st.dead_letter, (unsigned long long)st.retries);
out:
    kf_enrich_destroy(e);
    kf_conf_destroy(conf);
    return rc;
}
