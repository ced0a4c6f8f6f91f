/*
 * api_cmd.c: `kinfer api`, a thin wrapper that loads the configuration (defaults < --config
 * file < KINFER_* environment < --set), then runs kf_api until SIGTERM/SIGINT and stops it
 * gracefully (stop accepting, finish requests in flight, flush the producer).
 */
#include "kf_api.h"

#include "kf_kafka.h"
#include "kf_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
kf_api_usage(FILE *fp)
{
    fprintf(fp, "Usage: kinfer api [--config FILE] [--set KEY=VALUE]... [--dump-config]\n\n"
                "Serves the HTTP API (POST /v1/requests, /v1/batches, ...; docs/api.md) until\n"
                "SIGTERM or SIGINT, then drains requests in flight and flushes Kafka.\n\n"
                "Options:\n"
                "  --config FILE      `key = value` configuration file\n"
                "  --set KEY=VALUE    set one key (repeatable; wins over file and environment)\n"
                "  --dump-config      print the effective configuration and exit\n"
                "  -h, --help         this help\n\n"
                "Keys: api.*, topics.*, pg.*, kafka.* (docs/configuration.md). PostgreSQL from\n"
                "pg.dsn or $KINFER_PG_DSN; Kafka from kafka.bootstrap.servers or\n"
                "$KINFER_KAFKA_BROKERS.\n");
    return fp == stdout ? 0 : 2;
}

int
kf_cmd_api(int argc, char **argv)
{
    char errstr[512];
    const char *config = NULL;
    int dump = 0;
    kf_conf_t *conf = kf_conf_new();
    int rc = 2;
    if (kf_api_conf_register(conf, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer api: %s\n", errstr);
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            rc = kf_api_usage(stdout);
            goto out;
        }
        if (!strcmp(argv[i], "--dump-config")) {
            dump = 1;
        } else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            config = argv[++i];
        } else if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            i++; /* applied after file and environment, below */
        } else {
            fprintf(stderr, "kinfer api: unknown or incomplete option '%s'\n", argv[i]);
            kf_api_usage(stderr);
            goto out;
        }
    }
    if (config && kf_conf_load_file(conf, config, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer api: %s\n", errstr);
        goto out;
    }
    if (kf_conf_load_env(conf, NULL, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer api: %s\n", errstr);
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--set") || i + 1 >= argc)
            continue;
        if (kf_conf_set_assignment(conf, argv[++i], errstr, sizeof(errstr))) {
            fprintf(stderr, "kinfer api: %s\n", errstr);
            goto out;
        }
    }
    /* pg.dsn falls back to the stack's KINFER_PG_DSN (already its env name). */
    kf_conf_apply_core(conf);
    if (dump) {
        kf_conf_dump(conf, stdout);
        rc = 0;
        goto out;
    }
    if (kf_kafka_install_signal_handlers()) {
        fprintf(stderr, "kinfer api: cannot install signal handlers\n");
        rc = 1;
        goto out;
    }
    if (kf_api_run(conf, &kf_kafka_stop, errstr, sizeof(errstr))) {
        fprintf(stderr, "kinfer api: %s\n", errstr);
        rc = 1;
        goto out;
    }
    rc = 0;
out:
    kf_conf_destroy(conf);
    return rc;
}
